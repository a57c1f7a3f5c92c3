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
    return _flash(cfg, qp, kp, vp, lengths)[:, :lq, :, :d]


def flash_reference(q, k, v, lengths, *, causal: bool = False, scale: float | None = None):
    """Pure-jnp reference with the kernel's semantics (empty rows give zeros)."""
    scale = C.default_scale(q.shape[-1], scale)
    lengths = C.full_lengths(lengths, k.shape[0], k.shape[1])
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    allowed = C.visible(jnp.arange(q.shape[1]), jnp.arange(k.shape[1]),
                        lengths[:, None, None, None], causal)
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


def _key_blocks(qi, length, cfg: _Config):
    """Number of key blocks query block `qi` has to visit."""
    n = C.cdiv(length, cfg.block_k)
    if cfg.causal:
        n = jnp.minimum(n, C.cdiv((qi + 1) * cfg.block_q, cfg.block_k))
    return n


def _key_block(k_ref, v_ref, q_pos, length, cfg: _Config, j):
    """Key block j: (k, v, which keys each query sees)."""
    bk = cfg.block_k
    rows = pl.ds(j * bk, bk)
    return k_ref[rows, :], v_ref[rows, :], C.visible(q_pos, j * bk + jnp.arange(bk), length,
                                                     cfg.causal)


def _fwd_kernel(len_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, cfg: _Config):
    bq = cfg.block_q
    qi = pl.program_id(2)
    length = len_ref[()]
    q_pos = qi * bq + jnp.arange(bq)
    o, lse = C.online_softmax(q_ref[...], _key_blocks(qi, length, cfg),
                              functools.partial(_key_block, k_ref, v_ref, q_pos, length, cfg),
                              cfg.scale)
    o_ref[...] = o.astype(o_ref.dtype)
    lse_ref[...] = lse


def _dq_kernel(len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, cfg: _Config):
    bq = cfg.block_q
    qi = pl.program_id(2)
    length = len_ref[()]
    q_pos = qi * bq + jnp.arange(bq)
    dq = C.online_softmax_dq(q_ref[...], do_ref[...], lse_ref[...], delta_ref[...],
                             _key_blocks(qi, length, cfg),
                             functools.partial(_key_block, k_ref, v_ref, q_pos, length, cfg),
                             cfg.scale)
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                cfg: _Config):
    bq, bk = cfg.block_q, cfg.block_k
    kj = pl.program_id(2)
    length = len_ref[()]
    k_pos = kj * bk + jnp.arange(bk)
    n_q = q_ref.shape[0] // bq
    first = lax.div(kj * bk, bq) if cfg.causal else 0
    # A key block wholly past the length gets no gradient: skip every query block. n_q is
    # made int32: a where of two Python ints is weakly typed, and Triton then gave the loop
    # bounds two integer types, which its scf.for rejects.
    last = jnp.where(kj * bk < length, jnp.int32(n_q), first)

    def query_block(i):
        rows = pl.ds(i * bq, bq)
        allowed = C.visible(i * bq + jnp.arange(bq), k_pos, length, cfg.causal)
        return q_ref[rows, :], do_ref[rows, :], lse_ref[rows], delta_ref[rows], allowed

    dk, dv = C.online_softmax_dkv(k_ref[...], v_ref[...], first, last, query_block, cfg.scale)
    dk_ref[...] = dk.astype(dk_ref.dtype)
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
    return C.pallas_call(
        _fwd_kernel, cfg, (b, h, lq // bq),
        [_LEN_SPEC, _row_spec(bq, d), _whole_spec(lk, d), _whole_spec(lk, d)],
        [_row_spec(bq, d), stats],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, lq), jnp.float32)],
        "flash_fwd",
    )(lengths, q, k, v)


def _backward(q, k, v, lengths, o, lse, do, cfg: _Config):
    b, lq, h, d = q.shape
    lk = k.shape[1]
    bq, bk = cfg.block_q, cfg.block_k
    delta = jnp.einsum("blhd,blhd->bhl", o.astype(jnp.float32), do.astype(jnp.float32))
    stats_rows = pl.BlockSpec((None, None, bq), lambda b, h, i: (b, h, i))
    dq = C.pallas_call(
        _dq_kernel, cfg, (b, h, lq // bq),
        [_LEN_SPEC, _row_spec(bq, d), _whole_spec(lk, d), _whole_spec(lk, d), _row_spec(bq, d),
         stats_rows, stats_rows],
        _row_spec(bq, d), jax.ShapeDtypeStruct(q.shape, q.dtype), "flash_bwd_dq",
    )(lengths, q, k, v, do, lse, delta)
    stats_all = pl.BlockSpec((None, None, lq), lambda b, h, i: (b, h, 0))
    dk, dv = C.pallas_call(
        _dkv_kernel, cfg, (b, h, lk // bk),
        [_LEN_SPEC, _whole_spec(lq, d), _row_spec(bk, d), _row_spec(bk, d), _whole_spec(lq, d),
         stats_all, stats_all],
        [_row_spec(bk, d), _row_spec(bk, d)],
        [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        "flash_bwd_dkv",
    )(lengths, q, k, v, do, lse, delta)
    return dq, dk, dv


_flash = C.custom_vjp(_forward, _backward)
