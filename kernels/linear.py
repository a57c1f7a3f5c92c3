"""Kernelised (linear) attention phi(Q) (phi(K)^T V) with its normaliser.

Katharopoulos et al. 2020, "Transformers are RNNs": §3.2, Eq. 4-6 (non-causal) and
§3.3, Eq. 8-10 (causal, with the prefix state S_i = sum_{j<=i} phi(k_j) v_j^T and the
normaliser Z_i = sum_{j<=i} phi(k_j)):

    out_i = phi(q_i)^T S_i / (phi(q_i)^T Z_i + eps)

The op takes the already-featurised q' = phi(q), k' = phi(k) >= 0 (each method owns its
feature map: Performer's FAVOR+, elu+1, AdaMRA's, Scatterbrain's low-rank part) and v.
`eps` (default 1e-6, the value of the authors' fast-transformers code; the paper's
equations have none) keeps an all-padding row finite: it outputs zeros.

Padding: keys past lengths[b] are zeroed in k' before the kernels, so they add nothing
to S or Z and receive no gradient.

Kernels, non-causal: one kernel reduces S = k'^T v and Z over the sequence (in `splits`
partitions, summed afterwards) and one reads out each chunk in parallel; the backward
reuses the reduction for dS = q'^T dN and dZ = q'^T dD, and one chunk-parallel kernel
gives dq', dk', dv. Here N and D are the numerator and denominator of out = N / D;
dN = dout / D and dD = -(dout . out) / D.

Causal, in the chunkwise parallel form (§3.3 of Katharopoulos with chunks; Yang et al.
2023, GLA, §3: FlashLinearAttention with the chunk states materialised): the sequence is
cut into chunks of `chunk` tokens and every step is parallel over (batch, head, chunk).
(a) One kernel gives each chunk's local sums k'_c^T v_c and sum k'_c; (b) an exclusive
cumulative sum over chunks (XLA, O(L/chunk * F * Dv)) turns them into the states S, Z of
the earlier chunks; (c) one kernel reads each chunk out,
out_c = (q'_c S + tril(q'_c k'_c^T) v_c) / (q'_c Z + rowsum tril(q'_c k'_c^T) + eps).
The backward (§3.3.1, gradients as cumulative sums) does the same: the chunk-sums kernel
on (q', dN, dD) and a reverse exclusive cumulative sum give R = sum q'_i dN_i^T and
r = sum q'_i dD_i over the later chunks, and one kernel per chunk combines the forward's
prefix states (for dq'), R and r (for dk', dv) and the intra-chunk quadratic terms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from lra.kernels import _common as C


def linear_attention(qf, kf, v, lengths=None, *, causal: bool = False, eps: float = 1e-6,
                     chunk: int = 64, impl: str = "auto", interpret: bool = False):
    """phi(Q)(phi(K)^T V) / (phi(Q) phi(K)^T 1 + eps), over real keys only.

    qf, kf: [B, L, H, F] (featurised, >= 0); v: [B, L, H, Dv]; lengths: int32[B] (None: all
    real). `chunk` is the kernel's tile along the sequence (a power of two >= 16); it does
    not change the result. Returns [B, L, H, Dv] in v's dtype.
    """
    b, length, h, f = qf.shape
    lengths = C.full_lengths(lengths, b, length)
    real = jnp.arange(length)[None, :] < lengths[:, None]
    kf = jnp.where(real[:, :, None, None], kf, jnp.zeros((), kf.dtype))
    interpret = C.interpret_mode(interpret)
    if not C.use_kernel(impl, interpret):
        return linear_reference(qf, kf, v, causal=causal, eps=eps)
    dv = v.shape[-1]
    c = C.tile(chunk, length, "chunk")
    lp = C.round_up(length, c)
    fp, dvp = C.feature_size(f), C.feature_size(dv)
    qf, kf = (C.pad_axis(C.pad_axis(x, 3, fp), 1, lp) for x in (qf, kf))
    v = C.pad_axis(C.pad_axis(v, 3, dvp), 1, lp)
    splits = max(1, min(lp // c, 256 // max(1, b * h)))
    cfg = _Config(causal, float(eps), c, interpret, splits,
                  num_warps=4 if fp * dvp <= 4096 else 8)
    return _linear(cfg, qf, kf, v)[:, :length, :, :dv]


def linear_reference(qf, kf, v, lengths=None, *, causal: bool = False, eps: float = 1e-6,
                     chunk: int = 64):
    """Pure-jnp reference (the XLA path): einsums; causal by chunks and a cumulative sum
    of chunk states (memory O(L/chunk * F * Dv) per head)."""
    b, length, h, f = qf.shape
    lengths = C.full_lengths(lengths, b, length)
    real = jnp.arange(length)[None, :] < lengths[:, None]
    kf = jnp.where(real[:, :, None, None], kf, jnp.zeros((), kf.dtype))
    qf, kf, vf = (x.astype(jnp.float32) for x in (qf, kf, v))
    if not causal:
        state = jnp.einsum("blhf,blhd->bhfd", kf, vf)
        num = jnp.einsum("blhf,bhfd->blhd", qf, state)
        den = jnp.einsum("blhf,blhf->blh", qf, jnp.sum(kf, axis=1, keepdims=True))
        return (num / (den + eps)[..., None]).astype(v.dtype)
    c = min(chunk, length)
    lp = C.round_up(length, c)
    n = lp // c
    qc, kc, vc = (C.pad_axis(x, 1, lp).reshape(b, n, c, h, -1) for x in (qf, kf, vf))
    local = jnp.einsum("bnchf,bnchd->bnhfd", kc, vc)
    prefix = jnp.cumsum(local, axis=1) - local                       # states of earlier chunks
    z_local = jnp.sum(kc, axis=2)                                    # [b, n, h, f]
    z_prefix = jnp.cumsum(z_local, axis=1) - z_local
    tri = jnp.tril(jnp.ones((c, c), bool))
    a = jnp.where(tri, jnp.einsum("bnqhf,bnkhf->bnhqk", qc, kc), 0.0)
    num = jnp.einsum("bnqhf,bnhfd->bnqhd", qc, prefix) + jnp.einsum("bnhqk,bnkhd->bnqhd", a, vc)
    den = jnp.einsum("bnqhf,bnhf->bnqh", qc, z_prefix) + jnp.sum(a, axis=-1).transpose(0, 1, 3, 2)
    out = num / (den + eps)[..., None]
    return out.reshape(b, lp, h, -1)[:, :length].astype(v.dtype)


@dataclasses.dataclass(frozen=True)
class _Config:
    causal: bool
    eps: float
    chunk: int
    interpret: bool
    splits: int = 1
    num_warps: int = 4
    num_stages: int = 2


def _chunks(d: int, c: int):
    """Chunk i (grid axis 2) of one (batch, head) of a [B, L, H, d] array."""
    return pl.BlockSpec((None, c, None, d), lambda b, h, i: (b, i, h, 0))


def _whole(length: int, d: int):
    return pl.BlockSpec((None, length, None, d), lambda b, h, *_: (b, 0, h, 0))


def _head(*shape):
    """One (batch, head) slice of a [B, H, *shape] array."""
    return pl.BlockSpec((None, None, *shape), lambda b, h, *_: (b, h) + (0,) * len(shape))


def _rows(c: int):
    """Chunk i of one (batch, head) of a [B, H, L] array."""
    return pl.BlockSpec((None, None, c), lambda b, h, i: (b, h, i))


def _slot(*shape):
    """Slot i (grid axis 2) of a [B, H, N, *shape] array of partial sums (one per chunk or
    partition)."""
    return pl.BlockSpec((None, None, None, *shape), lambda b, h, i: (b, h, i) + (0,) * len(shape))


# ---- non-causal -------------------------------------------------------------------------


def _reduce_kernel(x_ref, y_ref, w_ref, xy_ref, xw_ref, *, cfg: _Config):
    """Partition p of the sequence: x^T y and x^T w (w = 1 for the normaliser)."""
    c = cfg.chunk
    n = x_ref.shape[0] // c
    per = -(-n // cfg.splits)
    start = pl.program_id(2) * per

    def body(i, carry):
        xy, xw = carry
        rows = pl.ds(i * c, c)
        x = x_ref[rows, :].astype(jnp.float32)
        y = y_ref[rows, :].astype(jnp.float32)
        return xy + C.t_mm(x, y), xw + jnp.sum(x * w_ref[rows][:, None], axis=0)

    init = (jnp.zeros(xy_ref.shape, jnp.float32), jnp.zeros(xw_ref.shape, jnp.float32))
    xy, xw = lax.fori_loop(start, jnp.minimum(start + per, n), body, init)
    xy_ref[...] = xy
    xw_ref[...] = xw


def _reduce(x, y, w, cfg: _Config):
    """(sum_l x_l y_l^T [B, H, F, D], sum_l x_l w_l [B, H, F]) over the sequence."""
    b, length, h, f = x.shape
    d = y.shape[-1]
    p = cfg.splits
    xy, xw = C.pallas_call(
        _reduce_kernel, cfg, (b, h, p),
        [_whole(length, f), _whole(length, d),
         pl.BlockSpec((None, None, length), lambda b, h, s: (b, h, 0))],
        [_slot(f, d), _slot(f)],
        [jax.ShapeDtypeStruct((b, h, p, f, d), jnp.float32),
         jax.ShapeDtypeStruct((b, h, p, f), jnp.float32)],
        "linear_reduce",
    )(x, y, w)
    return jnp.sum(xy, axis=2), jnp.sum(xw, axis=2)


def _readout_kernel(q_ref, s_ref, z_ref, o_ref, den_ref, *, cfg: _Config):
    q = q_ref[...].astype(jnp.float32)
    den = jnp.sum(q * z_ref[...][None, :], axis=1) + cfg.eps
    o_ref[...] = (C.mm(q, s_ref[...]) / den[:, None]).astype(o_ref.dtype)
    den_ref[...] = den


def _grads_kernel(k_ref, v_ref, dn_ref, dd_ref, s_ref, z_ref, ds_ref, dz_ref,
                  dq_ref, dk_ref, dv_ref, *, cfg: _Config):
    """dq' = dN S^T + dD z^T; dk' = v dS^T + dz; dv = k' dS (one chunk)."""
    k, v = k_ref[...].astype(jnp.float32), v_ref[...].astype(jnp.float32)
    dn, dd = dn_ref[...], dd_ref[...]
    dq = C.mm_t(dn, s_ref[...]) + dd[:, None] * z_ref[...][None, :]
    dk = C.mm_t(v, ds_ref[...]) + dz_ref[...][None, :]
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = C.mm(k, ds_ref[...]).astype(dv_ref.dtype)


def _noncausal_forward(q, k, v, cfg: _Config):
    b, length, h, f = q.shape
    d = v.shape[-1]
    c = cfg.chunk
    ones = jnp.ones((b, h, length), jnp.float32)
    s, z = _reduce(k, v, ones, cfg)
    o, den = C.pallas_call(
        _readout_kernel, cfg, (b, h, length // c),
        [_chunks(f, c), _head(f, d), _head(f)],
        [_chunks(d, c), _rows(c)],
        [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((b, h, length), jnp.float32)],
        "linear_readout",
    )(q, s, z)
    return o, den, (s, z)


def _noncausal_backward(q, k, v, dn, dd, state, cfg: _Config):
    b, length, h, f = q.shape
    d = v.shape[-1]
    c = cfg.chunk
    s, z = state
    ds, dz = _reduce(q, dn, dd, cfg)
    rows = _chunks(f, c)
    vrows = _chunks(d, c)
    return C.pallas_call(
        _grads_kernel, cfg, (b, h, length // c),
        [rows, vrows, vrows, _rows(c), _head(f, d), _head(f), _head(f, d), _head(f)],
        [rows, rows, vrows],
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v)],
        "linear_grads",
    )(k, v, dn, dd, s, z, ds, dz)


# ---- causal -----------------------------------------------------------------------------


def _tril(c: int):
    r = jnp.arange(c)
    return r[None, :] <= r[:, None]


def _chunk_sums_kernel(x_ref, y_ref, w_ref, xy_ref, xw_ref, *, cfg: _Config):
    x = x_ref[...].astype(jnp.float32)
    xy_ref[...] = C.t_mm(x, y_ref[...].astype(jnp.float32))
    xw_ref[...] = jnp.sum(x * w_ref[...][:, None], axis=0)


def _chunk_sums(x, y, w, cfg: _Config):
    """Per chunk, in parallel: (x_c^T y_c [B, H, N, F, D], x_c^T w_c [B, H, N, F])."""
    b, length, h, f = x.shape
    d = y.shape[-1]
    c = cfg.chunk
    n = length // c
    return C.pallas_call(
        _chunk_sums_kernel, cfg, (b, h, n),
        [_chunks(f, c), _chunks(d, c), _rows(c)],
        [_slot(f, d), _slot(f)],
        [jax.ShapeDtypeStruct((b, h, n, f, d), jnp.float32),
         jax.ShapeDtypeStruct((b, h, n, f), jnp.float32)],
        "linear_chunk_sums",
    )(x, y, w)


def _exclusive_cumsum(x, *, reverse: bool = False):
    """Sums over the earlier chunks (reverse: the later ones), axis 2 of [B, H, N, ...]."""
    inclusive = lax.cumsum(x, axis=2, reverse=reverse)
    zero = jnp.zeros_like(x[:, :, :1])
    if reverse:
        return jnp.concatenate([inclusive[:, :, 1:], zero], axis=2)
    return jnp.concatenate([zero, inclusive[:, :, :-1]], axis=2)


def _causal_fwd_kernel(q_ref, k_ref, v_ref, s_ref, z_ref, o_ref, den_ref, *, cfg: _Config):
    """Chunk c with S, z the sums over the earlier chunks and a = tril(q' k'^T):
    out = (q' S + a v) / (q' z + rowsum(a) + eps)."""
    q, k, v = (r[...].astype(jnp.float32) for r in (q_ref, k_ref, v_ref))
    a = jnp.where(_tril(cfg.chunk), C.mm_t(q, k), 0.0)
    den = jnp.sum(q * z_ref[...][None, :], axis=1) + jnp.sum(a, axis=1) + cfg.eps
    o_ref[...] = ((C.mm(q, s_ref[...]) + C.mm(a, v)) / den[:, None]).astype(o_ref.dtype)
    den_ref[...] = den


def _causal_grads_kernel(q_ref, k_ref, v_ref, dn_ref, dd_ref, s_ref, z_ref, r_ref, rz_ref,
                         dq_ref, dk_ref, dv_ref, *, cfg: _Config):
    """Chunk c with S, z the sums over the earlier chunks, R = sum q'_i dN_i^T and
    r = sum q'_i dD_i over the later ones, a = tril(q' k'^T), da = tril(dN v^T + dD):
    dq' = dN S^T + dD z^T + da k'; dk' = da^T q' + v R^T + r; dv = a^T dN + k' R."""
    q, k, v = (x[...].astype(jnp.float32) for x in (q_ref, k_ref, v_ref))
    dn, dd = dn_ref[...], dd_ref[...]
    tri = _tril(cfg.chunk)
    a = jnp.where(tri, C.mm_t(q, k), 0.0)
    da = jnp.where(tri, C.mm_t(dn, v) + dd[:, None], 0.0)
    dq = C.mm_t(dn, s_ref[...]) + dd[:, None] * z_ref[...][None, :] + C.mm(da, k)
    dk = C.t_mm(da, q) + C.mm_t(v, r_ref[...]) + rz_ref[...][None, :]
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = (C.t_mm(a, dn) + C.mm(k, r_ref[...])).astype(dv_ref.dtype)


def _causal_forward(q, k, v, cfg: _Config):
    b, length, h, f = q.shape
    d = v.shape[-1]
    c = cfg.chunk
    ones = jnp.ones((b, h, length), jnp.float32)
    s, z = (_exclusive_cumsum(x) for x in _chunk_sums(k, v, ones, cfg))
    o, den = C.pallas_call(
        _causal_fwd_kernel, cfg, (b, h, length // c),
        [_chunks(f, c), _chunks(f, c), _chunks(d, c), _slot(f, d), _slot(f)],
        [_chunks(d, c), _rows(c)],
        [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((b, h, length), jnp.float32)],
        "linear_causal_fwd",
    )(q, k, v, s, z)
    return o, den, (s, z)


def _causal_backward(q, k, v, dn, dd, state, cfg: _Config):
    b, length, h, f = q.shape
    d = v.shape[-1]
    c = cfg.chunk
    s, z = state
    r, rz = (_exclusive_cumsum(x, reverse=True) for x in _chunk_sums(q, dn, dd, cfg))
    rows, vrows = _chunks(f, c), _chunks(d, c)
    return C.pallas_call(
        _causal_grads_kernel, cfg, (b, h, length // c),
        [rows, rows, vrows, vrows, _rows(c), _slot(f, d), _slot(f), _slot(f, d),
         _slot(f)],
        [rows, rows, vrows],
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v)],
        "linear_causal_grads",
    )(q, k, v, dn, dd, s, z, r, rz)


# ---- custom_vjp -------------------------------------------------------------------------


def _forward(q, k, v, cfg: _Config):
    return (_causal_forward if cfg.causal else _noncausal_forward)(q, k, v, cfg)


def _backward(q, k, v, o, den, state, do, cfg: _Config):
    """out = N / D with D = q'.z + eps: dN = dO / D and dD = -(dO . out) / D per row."""
    den = jnp.swapaxes(den, 1, 2)[..., None]                          # [B, L, H, 1]
    do = do.astype(jnp.float32)
    dn = do / den
    dd = -jnp.sum(do * o.astype(jnp.float32), axis=-1, keepdims=True) / den
    dd = jnp.swapaxes(dd[..., 0], 1, 2)                               # [B, H, L]
    backward = _causal_backward if cfg.causal else _noncausal_backward
    return backward(q, k, v, dn, dd, state, cfg)


_linear = C.custom_vjp(_forward, _backward)
