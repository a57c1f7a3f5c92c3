"""Dense softmax attention with online-softmax tiling: the softmax baseline's GPU path.

FlashAttention-2 (Dao 2023, arXiv:2307.08691). Forward: §3.1.1, Algorithm 1 (a query
block stays on chip while key/value blocks stream through; the running max m, running
sum l and unnormalised output are rescaled by exp(m_old - m_new); the logsumexp
L = m + log l is saved). Backward: §3.1.2, Algorithm 2 (probabilities recomputed from
L, D = rowsum(dO * O)). Algorithm 2 accumulates dQ with atomic adds; here one kernel
computes dQ (grid over query blocks) and another dK, dV (grid over key blocks), so that
no atomics are needed.

Masking: key j is visible to query i iff j < lengths[b] (and j <= i when causal).
Key blocks past the length, and past the diagonal when causal, are skipped. A query
with no visible key (an all-padding example) outputs zeros rather than NaN; the paper
does not treat this case. At every query with a visible key the result equals
`lra.attention.base.dense_attention`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from lra.kernels import _common as C
from lra.kernels._compat import compiler_params


def flash_attention(q, k, v, lengths=None, *, causal: bool = False, scale: float | None = None,
                    block_q: int = 64, block_k: int = 64, impl: str = "auto",
                    interpret: bool = False):
    """softmax(q k^T * scale + mask) v.

    q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; lengths: int32[B] valid keys per example
    (None: all). causal needs Lq == Lk. scale defaults to 1/sqrt(Dh). Returns [B, Lq, H, Dh]
    in q's dtype; the softmax is computed in float32.
    """
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal attention needs Lq == Lk, got {q.shape[1]} and {k.shape[1]}")
    scale = C.default_scale(q.shape[-1], scale)
    lengths = C.full_lengths(lengths, k.shape[0], k.shape[1])
    interpret = C.interpret_mode(interpret)
    if not C.use_kernel(impl, interpret):
        return flash_reference(q, k, v, lengths, causal=causal, scale=scale)
    b, lq, h, d = q.shape
    lk = k.shape[1]
    bq = C.tile(block_q, lq, "block_q")
    bk = C.tile(block_k, lk, "block_k")
    dp = C.feature_size(d)
    qp = C.pad_axis(C.pad_axis(q, 3, dp), 1, C.round_up(lq, bq))
    kp = C.pad_axis(C.pad_axis(k, 3, dp), 1, C.round_up(lk, bk))
    vp = C.pad_axis(C.pad_axis(v, 3, dp), 1, C.round_up(lk, bk))
    cfg = _Config(causal, scale, bq, bk, interpret, num_warps=4 if dp <= 64 else 8)
    return _flash(qp, kp, vp, lengths, cfg)[:, :lq, :, :d]


def flash_reference(q, k, v, lengths, *, causal: bool = False, scale: float | None = None):
    """Pure-jnp reference with the kernel's semantics (empty rows give zeros)."""
    scale = C.default_scale(q.shape[-1], scale)
    lengths = C.full_lengths(lengths, k.shape[0], k.shape[1])
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    allowed = _visible(jnp.arange(q.shape[1]), jnp.arange(k.shape[1]), lengths[:, None, None, None],
                       causal)
    p, _ = C.softmax_rows(s, allowed)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32)).astype(q.dtype)


@dataclasses.dataclass(frozen=True)
class _Config:
    causal: bool
    scale: float
    block_q: int
    block_k: int
    interpret: bool
    num_warps: int = 4
    num_stages: int = 2


def _visible(q_pos, k_pos, length, causal: bool):
    """bool[..., Lq, Lk]: key j is visible to query i."""
    allowed = k_pos[None, :] < length
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])
    return allowed


def _key_blocks(qi, length, cfg: _Config):
    """Number of key blocks query block `qi` has to visit."""
    n = C.cdiv(length, cfg.block_k)
    if cfg.causal:
        n = jnp.minimum(n, C.cdiv((qi + 1) * cfg.block_q, cfg.block_k))
    return n


def _fwd_kernel(len_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, cfg: _Config):
    bq, bk = cfg.block_q, cfg.block_k
    qi = pl.program_id(2)
    length = len_ref[()]
    q = q_ref[...]
    q_pos = qi * bq + jnp.arange(bq)

    def body(j, carry):
        acc, m, l = carry
        k = k_ref[pl.ds(j * bk, bk), :]
        v = v_ref[pl.ds(j * bk, bk), :]
        allowed = _visible(q_pos, j * bk + jnp.arange(bk), length, cfg.causal)
        s = jnp.where(allowed, C.mm_t(q, k) * cfg.scale, C.NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.where(allowed, jnp.exp(s - m_new[:, None]), 0.0)
        rescale = jnp.exp(m - m_new)
        l = rescale * l + jnp.sum(p, axis=1)
        acc = rescale[:, None] * acc + C.mm(p.astype(v.dtype), v)
        return acc, m_new, l

    init = (jnp.zeros(q.shape, jnp.float32), jnp.full((bq,), C.NEG, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    acc, m, l = lax.fori_loop(0, _key_blocks(qi, length, cfg), body, init)
    safe = jnp.where(l > 0, l, 1.0)
    o_ref[...] = (acc / safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(l > 0, m + jnp.log(safe), 0.0)


def _dq_kernel(len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, cfg: _Config):
    bq, bk = cfg.block_q, cfg.block_k
    qi = pl.program_id(2)
    length = len_ref[()]
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    q_pos = qi * bq + jnp.arange(bq)

    def body(j, dq):
        k = k_ref[pl.ds(j * bk, bk), :]
        v = v_ref[pl.ds(j * bk, bk), :]
        allowed = _visible(q_pos, j * bk + jnp.arange(bk), length, cfg.causal)
        p = jnp.where(allowed, jnp.exp(C.mm_t(q, k) * cfg.scale - lse[:, None]), 0.0)
        ds = p * (C.mm_t(do, v) - delta[:, None])
        return dq + C.mm(ds.astype(k.dtype), k)

    dq = lax.fori_loop(0, _key_blocks(qi, length, cfg), body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                cfg: _Config):
    bq, bk = cfg.block_q, cfg.block_k
    kj = pl.program_id(2)
    length = len_ref[()]
    k, v = k_ref[...], v_ref[...]
    k_pos = kj * bk + jnp.arange(bk)
    n_q = q_ref.shape[0] // bq
    first = lax.div(kj * bk, bq) if cfg.causal else 0
    # A key block wholly past the length gets no gradient: skip every query block. n_q is
    # made int32: a where of two Python ints is weakly typed, and Triton then gave the loop
    # bounds two integer types, which its scf.for rejects.
    last = jnp.where(kj * bk < length, jnp.int32(n_q), first)

    def body(i, carry):
        dk, dv = carry
        rows = pl.ds(i * bq, bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        lse, delta = lse_ref[rows], delta_ref[rows]
        allowed = _visible(i * bq + jnp.arange(bq), k_pos, length, cfg.causal)
        p = jnp.where(allowed, jnp.exp(C.mm_t(q, k) * cfg.scale - lse[:, None]), 0.0)
        dv = dv + C.t_mm(p.astype(do.dtype), do)
        ds = p * (C.mm_t(do, v) - delta[:, None])
        dk = dk + C.t_mm(ds.astype(q.dtype), q)
        return dk, dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(first, last, body, (zeros, zeros))
    dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _row_spec(block: int, d: int):
    """Block i (grid axis 2) of `block` rows of one (batch, head) of a [B, L, H, d] array."""
    return pl.BlockSpec((None, block, None, d), lambda b, h, i: (b, i, h, 0))


def _whole_spec(length: int, d: int):
    return pl.BlockSpec((None, length, None, d), lambda b, h, i: (b, 0, h, 0))


_LEN_SPEC = pl.BlockSpec((None,), lambda b, h, i: (b,))


def _forward(q, k, v, lengths, cfg: _Config):
    b, lq, h, d = q.shape
    lk = k.shape[1]
    bq = cfg.block_q
    stats = pl.BlockSpec((None, None, bq), lambda b, h, i: (b, h, i))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, cfg=cfg),
        grid=(b, h, lq // bq),
        in_specs=[_LEN_SPEC, _row_spec(bq, d), _whole_spec(lk, d), _whole_spec(lk, d)],
        out_specs=[_row_spec(bq, d), stats],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                   jax.ShapeDtypeStruct((b, h, lq), jnp.float32)],
        compiler_params=compiler_params(num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                                        interpret=cfg.interpret),
        interpret=cfg.interpret,
        name="flash_fwd",
    )(lengths, q, k, v)


def _backward(q, k, v, lengths, o, lse, do, cfg: _Config):
    b, lq, h, d = q.shape
    lk = k.shape[1]
    bq, bk = cfg.block_q, cfg.block_k
    delta = jnp.einsum("blhd,blhd->bhl", o.astype(jnp.float32), do.astype(jnp.float32))
    params = compiler_params(num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                             interpret=cfg.interpret)
    stats_rows = pl.BlockSpec((None, None, bq), lambda b, h, i: (b, h, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg),
        grid=(b, h, lq // bq),
        in_specs=[_LEN_SPEC, _row_spec(bq, d), _whole_spec(lk, d), _whole_spec(lk, d),
                  _row_spec(bq, d), stats_rows, stats_rows],
        out_specs=_row_spec(bq, d),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=cfg.interpret,
        name="flash_bwd_dq",
    )(lengths, q, k, v, do, lse, delta)
    stats_all = pl.BlockSpec((None, None, lq), lambda b, h, i: (b, h, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg),
        grid=(b, h, lk // bk),
        in_specs=[_LEN_SPEC, _whole_spec(lq, d), _row_spec(bk, d), _row_spec(bk, d),
                  _whole_spec(lq, d), stats_all, stats_all],
        out_specs=[_row_spec(bk, d), _row_spec(bk, d)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        interpret=cfg.interpret,
        name="flash_bwd_dkv",
    )(lengths, q, k, v, do, lse, delta)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, lengths, cfg: _Config):
    return _forward(q, k, v, lengths, cfg)[0]


def _flash_fwd(q, k, v, lengths, cfg: _Config):
    o, lse = _forward(q, k, v, lengths, cfg)
    return o, (q, k, v, lengths, o, lse)


def _flash_bwd(cfg: _Config, residuals, do):
    q, k, v, lengths, o, lse = residuals
    dq, dk, dv = _backward(q, k, v, lengths, o, lse, do, cfg)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)
