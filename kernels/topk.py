"""Query-chunked top-k attention.

Gupta et al. 2021, "Memory-efficient Transformers via Top-k Attention", §3: each query
keeps only its k largest scores q.k_j / sqrt(d), takes the softmax over those k and
returns the weighted sum of their values; queries are processed in chunks so that only
a [chunk, L] block of scores exists at a time (memory O(chunk * L + L * k)).

Selection is done with XLA, outside the kernels: Triton cannot lower `lax.top_k` (nor
sort or gather on values), so for each query chunk the scores are an XLA matmul and
`lax.top_k` picks the indices int32[B, H, L, k]. The Pallas kernel then gathers the k
key and value rows of each query straight from memory (an indexed load), recomputes the
k scores, and does the softmax-weighted sum (saving the logsumexp). Its backward kernel
gives dq and the per-pick score and probability gradients; dk and dv, which are
scatter-adds over the picks (Triton has no scatter without atomics), are accumulated with
XLA chunk by chunk as dense [chunk, L] matmuls. The selection is piecewise constant, so
no gradient flows through it, as in the paper.

Masks: a key is eligible iff j < lengths[b] (and j <= i when causal). A query with fewer
than k eligible keys uses them all; one with none outputs zeros. Ties are broken toward
the lower index (lax.top_k), identically in the reference.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from lra.kernels import _common as C
from lra.kernels.errors import KernelError


def topk_attention(q, k, v, lengths=None, *, top_k: int, chunk: int = 1024,
                   causal: bool = False, scale: float | None = None, block_q: int | None = None,
                   impl: str = "auto", interpret: bool = False):
    """Softmax attention of each query over its `top_k` highest-scoring eligible keys.

    q, k, v: [B, L, H, Dh]; lengths: int32[B] (None: all real). `chunk` is the number of
    queries whose [chunk, L] scores exist at once (memory only; the result does not depend
    on it). `block_q` is the kernel's query tile (None: picked from top_k and Dh).
    Returns [B, L, H, Dh] in q's dtype.
    """
    if top_k < 1 or chunk < 1:
        raise KernelError(f"top-k attention needs top_k >= 1 and chunk >= 1, got {top_k}, {chunk}")
    b, length, h, d = q.shape
    scale = C.default_scale(d, scale)
    lengths = C.full_lengths(lengths, b, length)
    interpret = C.interpret_mode(interpret)
    if not C.use_kernel(impl, interpret):
        return topk_reference(q, k, v, lengths, top_k=top_k, chunk=chunk, causal=causal,
                              scale=scale)
    picks = lax.stop_gradient(select(q, k, lengths, top_k=top_k, chunk=chunk, causal=causal,
                                     scale=scale))
    kp = C.next_pow2(picks.shape[-1])
    dp = C.feature_size(d)
    bq = block_q or max(1, min(64, 8192 // (kp * dp)))
    if bq & (bq - 1):
        raise KernelError(f"block_q={bq} must be a power of two")
    lp = C.round_up(length, bq)
    picks = C.pad_axis(C.pad_axis(picks, 3, kp, value=-1), 2, lp, value=-1)
    qp, kpd, vp = (C.pad_axis(C.pad_axis(x, 3, dp), 1, lp) for x in (q, k, v))
    cfg = _Config(scale, bq, min(chunk, lp), interpret)
    return _topk(cfg, qp, kpd, vp, picks)[:, :length, :, :d]


def select(q, k, lengths, *, top_k: int, chunk: int, causal: bool, scale: float):
    """int32[B, H, L, min(top_k, L)]: the picked key indices per query, -1 where a pick is
    not an eligible key (fewer eligible keys than picks)."""
    def pick(q_chunk, start):
        s, ok = _scores(q_chunk, start, k, lengths, causal, scale)
        _, idx = lax.top_k(s, min(top_k, k.shape[1]))
        return jnp.where(jnp.take_along_axis(ok, idx, axis=-1), idx, -1)

    return _by_chunks(pick, q, chunk, out_axis=2)


def topk_reference(q, k, v, lengths, *, top_k: int, chunk: int = 1024, causal: bool = False,
                   scale: float | None = None):
    """Pure-jnp reference (the XLA path): per query chunk, scores, lax.top_k, softmax over
    the picked scores, weighted sum of the gathered values (rematerialised in backward)."""
    b, length, h, d = q.shape
    scale = C.default_scale(d, scale)
    lengths = C.full_lengths(lengths, b, length)
    vt = jnp.swapaxes(v, 1, 2)                                       # [B, H, L, D]

    @jax.checkpoint
    def attend(q_chunk, start):
        s, ok = _scores(q_chunk, start, k, lengths, causal, scale)
        vals, idx = lax.top_k(s, min(top_k, k.shape[1]))
        p, _ = C.softmax_rows(vals, jnp.take_along_axis(ok, idx, axis=-1))
        gathered = jax.vmap(jax.vmap(lambda x, i: x[i]))(vt, idx)   # [B, H, c, k, D]
        out = jnp.einsum("bhck,bhckd->bchd", p, gathered.astype(jnp.float32))
        return out.astype(q.dtype)

    return _by_chunks(attend, q, chunk, out_axis=1)


def _scores(q_chunk, start, k, lengths, causal: bool, scale: float):
    """Scores float32[B, H, c, Lk] of a query chunk starting at `start`, and eligibility."""
    s = jnp.einsum("bchd,bkhd->bhck", q_chunk, k, preferred_element_type=jnp.float32) * scale
    k_pos = jnp.arange(k.shape[1])
    ok = k_pos[None, None, None, :] < lengths[:, None, None, None]
    if causal:
        q_pos = start + jnp.arange(q_chunk.shape[1])
        ok = ok & (k_pos[None, :] <= q_pos[:, None])
    ok = jnp.broadcast_to(ok, s.shape)
    return jnp.where(ok, s, C.NEG), ok


def _by_chunks(fn, q, chunk: int, out_axis: int):
    """Apply fn(q_chunk [B, c, H, D], start) to consecutive query chunks (lax.map) and join
    the results along `out_axis`, the axis of the c queries in fn's output."""
    b, length, h, d = q.shape
    c = min(chunk, length)
    n = -(-length // c)
    chunks = jnp.moveaxis(C.pad_axis(q, 1, n * c).reshape(b, n, c, h, d), 1, 0)
    out = lax.map(lambda a: fn(a[0], a[1]), (chunks, jnp.arange(n) * c))
    out = jnp.moveaxis(out, 0, out_axis)
    out = out.reshape(*out.shape[:out_axis], n * c, *out.shape[out_axis + 2:])
    return lax.slice_in_dim(out, 0, length, axis=out_axis)


@dataclasses.dataclass(frozen=True)
class _Config:
    scale: float
    block_q: int
    chunk: int
    interpret: bool
    num_warps: int = 4
    num_stages: int = 2


def _gather(idx_ref, k_ref, v_ref):
    """The picked key and value rows float32[bq, kp, D] and the pick mask bool[bq, kp]."""
    idx = idx_ref[...]
    ok = idx >= 0
    rows = jnp.where(ok, idx, 0)
    return k_ref[rows, :].astype(jnp.float32), v_ref[rows, :].astype(jnp.float32), ok


def _fwd_kernel(idx_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, cfg: _Config):
    kg, vg, ok = _gather(idx_ref, k_ref, v_ref)
    q = q_ref[...].astype(jnp.float32)
    s = jnp.sum(q[:, None, :] * kg, axis=2) * cfg.scale
    p, lse = C.softmax_rows(s, ok)
    o_ref[...] = jnp.sum(p[:, :, None] * vg, axis=1).astype(o_ref.dtype)
    lse_ref[...] = lse


def _bwd_kernel(idx_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, ds_ref, p_ref,
                *, cfg: _Config):
    """dq and, per pick, p and dS = p (dO.v - delta) for the XLA scatter of dk, dv."""
    kg, vg, ok = _gather(idx_ref, k_ref, v_ref)
    q = q_ref[...].astype(jnp.float32)
    do = do_ref[...].astype(jnp.float32)
    s = jnp.sum(q[:, None, :] * kg, axis=2) * cfg.scale
    p = jnp.where(ok, jnp.exp(s - lse_ref[...][:, None]), 0.0)
    ds = p * (jnp.sum(do[:, None, :] * vg, axis=2) - delta_ref[...][:, None])
    dq_ref[...] = (jnp.sum(ds[:, :, None] * kg, axis=1) * cfg.scale).astype(dq_ref.dtype)
    ds_ref[...] = ds
    p_ref[...] = p


def _specs(length: int, d: int, kp: int, bq: int):
    return dict(
        picks=pl.BlockSpec((None, None, bq, kp), lambda b, h, i: (b, h, i, 0)),
        rows=pl.BlockSpec((None, bq, None, d), lambda b, h, i: (b, i, h, 0)),
        whole=pl.BlockSpec((None, length, None, d), lambda b, h, i: (b, 0, h, 0)),
        stats=pl.BlockSpec((None, None, bq), lambda b, h, i: (b, h, i)),
    )


def _forward(q, k, v, picks, cfg: _Config):
    b, length, h, d = q.shape
    s = _specs(length, d, picks.shape[-1], cfg.block_q)
    return C.pallas_call(
        _fwd_kernel, cfg, (b, h, length // cfg.block_q),
        [s["picks"], s["rows"], s["whole"], s["whole"]],
        [s["rows"], s["stats"]],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, length), jnp.float32)],
        "topk_fwd",
    )(picks, q, k, v)


def _scatter_to_keys(picks, ds, p, q, do, cfg: _Config):
    """dk_j = scale sum_{picks (i, t) of j} dS_it q_i and dv_j = sum p_it dO_i, one query chunk
    at a time as dense [chunk, L] matrices times the chunk's q and dO."""
    b, length, h, d = q.shape
    c = cfg.chunk
    n = -(-length // c)

    def split(x, axis, fill=0):  # chunks of the query axis, leading
        x = C.pad_axis(x, axis, n * c, value=fill)
        x = x.reshape(*x.shape[:axis], n, c, *x.shape[axis + 1:])
        return jnp.moveaxis(x, axis, 0)

    def dense(idx, vals):  # [B, H, c, kp] -> [B, H, c, L]; a -1 pick is dropped
        idx = jnp.where(idx >= 0, idx, length)
        row = lambda i, x: jnp.zeros((length,), jnp.float32).at[i].add(x, mode="drop")
        return jax.vmap(jax.vmap(jax.vmap(row)))(idx, vals)

    def step(carry, xs):
        dk, dv = carry
        idx, ds_c, p_c, q_c, do_c = xs
        dk = dk + jnp.einsum("bhcl,bchd->blhd", dense(idx, ds_c), q_c.astype(jnp.float32))
        dv = dv + jnp.einsum("bhcl,bchd->blhd", dense(idx, p_c), do_c.astype(jnp.float32))
        return (dk, dv), None

    zeros = jnp.zeros(q.shape, jnp.float32)
    xs = (split(picks, 2, fill=-1), split(ds, 2), split(p, 2), split(q, 1), split(do, 1))
    (dk, dv), _ = lax.scan(step, (zeros, zeros), xs)
    return dk * cfg.scale, dv


def _backward(q, k, v, picks, o, lse, do, cfg: _Config):
    b, length, h, d = q.shape
    kp = picks.shape[-1]
    s = _specs(length, d, kp, cfg.block_q)
    delta = jnp.einsum("blhd,blhd->bhl", o.astype(jnp.float32), do.astype(jnp.float32))
    pick_f32 = jax.ShapeDtypeStruct(picks.shape, jnp.float32)
    dq, ds, p = C.pallas_call(
        _bwd_kernel, cfg, (b, h, length // cfg.block_q),
        [s["picks"], s["rows"], s["whole"], s["whole"], s["rows"], s["stats"], s["stats"]],
        [s["rows"], s["picks"], s["picks"]],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), pick_f32, pick_f32],
        "topk_bwd",
    )(picks, q, k, v, do, lse, delta)
    dk, dv = _scatter_to_keys(picks, ds, p, q, do, cfg)
    return dq, dk.astype(k.dtype), dv.astype(v.dtype)


_topk = C.custom_vjp(_forward, _backward)
