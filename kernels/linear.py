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
gives dq', dk', dv. Causal: the sequence is cut into chunks of `chunk` tokens and one
kernel per (batch, head) walks them in order carrying (S, Z), with the masked quadratic
form inside a chunk. Its backward follows §3.3.1 (gradients as cumulative sums, with
chunks): one kernel walks forward carrying (S, Z) for dq', one walks backward carrying
sum_{i>=j} q'_i dN_i^T and sum_{i>=j} q'_i dD_i for dk' and dv. Here N and D are the
numerator and denominator of out = N / D; dN = dout / D and dD = -(dout . out) / D.
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
    part = lambda *shape: pl.BlockSpec((None, None, None, *shape),
                                       lambda b, h, s: (b, h, s) + (0,) * len(shape))
    xy, xw = C.pallas_call(
        _reduce_kernel, cfg, (b, h, p),
        [_whole(length, f), _whole(length, d),
         pl.BlockSpec((None, None, length), lambda b, h, s: (b, h, 0))],
        [part(f, d), part(f)],
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


def _prefix_walk(k_ref, v_ref, c: int, chunk) -> None:
    """Walk the chunks first to last, calling chunk(rows, k', v, S, z) with the chunk's k', v
    (float32) and the sums over the earlier chunks S = sum k'_j v_j^T and z = sum k'_j."""

    def body(i, carry):
        s, z = carry
        rows = pl.ds(i * c, c)
        k = k_ref[rows, :].astype(jnp.float32)
        v = v_ref[rows, :].astype(jnp.float32)
        chunk(rows, k, v, s, z)
        return s + C.t_mm(k, v), z + jnp.sum(k, axis=0)

    f = k_ref.shape[1]
    init = (jnp.zeros((f, v_ref.shape[1]), jnp.float32), jnp.zeros((f,), jnp.float32))
    lax.fori_loop(0, k_ref.shape[0] // c, body, init)


def _causal_fwd_kernel(q_ref, k_ref, v_ref, o_ref, den_ref, *, cfg: _Config):
    tri = _tril(cfg.chunk)

    def chunk(rows, k, v, s, z):
        q = q_ref[rows, :].astype(jnp.float32)
        a = jnp.where(tri, C.mm_t(q, k), 0.0)
        den = jnp.sum(q * z[None, :], axis=1) + jnp.sum(a, axis=1) + cfg.eps
        num = C.mm(q, s) + C.mm(a, v)
        o_ref[rows, :] = (num / den[:, None]).astype(o_ref.dtype)
        den_ref[rows] = den

    _prefix_walk(k_ref, v_ref, cfg.chunk, chunk)


def _causal_dq_kernel(k_ref, v_ref, dn_ref, dd_ref, dq_ref, *, cfg: _Config):
    """dq'_i = S_{<chunk} dN_i + z_{<chunk} dD_i + sum_{j<=i in chunk} (dN_i.v_j + dD_i) k'_j."""
    tri = _tril(cfg.chunk)

    def chunk(rows, k, v, s, z):
        dn, dd = dn_ref[rows, :], dd_ref[rows]
        da = jnp.where(tri, C.mm_t(dn, v) + dd[:, None], 0.0)
        dq = C.mm_t(dn, s) + dd[:, None] * z[None, :] + C.mm(da, k)
        dq_ref[rows, :] = dq.astype(dq_ref.dtype)

    _prefix_walk(k_ref, v_ref, cfg.chunk, chunk)


def _causal_dkv_kernel(q_ref, k_ref, v_ref, dn_ref, dd_ref, dk_ref, dv_ref, *, cfg: _Config):
    """Walks chunks last to first carrying R = sum_{later i} q'_i dN_i^T and r = sum q'_i dD_i:
    dk'_j = R v_j + r + in-chunk terms, dv_j = R^T k'_j + in-chunk terms."""
    c = cfg.chunk
    n = q_ref.shape[0] // c
    tri = _tril(c)

    def body(step, carry):
        r_mat, r_vec = carry
        rows = pl.ds((n - 1 - step) * c, c)
        q = q_ref[rows, :].astype(jnp.float32)
        k = k_ref[rows, :].astype(jnp.float32)
        v = v_ref[rows, :].astype(jnp.float32)
        dn, dd = dn_ref[rows, :], dd_ref[rows]
        a = jnp.where(tri, C.mm_t(q, k), 0.0)
        da = jnp.where(tri, C.mm_t(dn, v) + dd[:, None], 0.0)
        dk = C.t_mm(da, q) + C.mm_t(v, r_mat) + r_vec[None, :]
        dv = C.t_mm(a, dn) + C.mm(k, r_mat)
        dk_ref[rows, :] = dk.astype(dk_ref.dtype)
        dv_ref[rows, :] = dv.astype(dv_ref.dtype)
        return r_mat + C.t_mm(q, dn), r_vec + jnp.sum(q * dd[:, None], axis=0)

    init = (jnp.zeros((q_ref.shape[1], v_ref.shape[1]), jnp.float32),
            jnp.zeros((q_ref.shape[1],), jnp.float32))
    lax.fori_loop(0, n, body, init)


def _causal_forward(q, k, v, cfg: _Config):
    b, length, h, f = q.shape
    d = v.shape[-1]
    o, den = C.pallas_call(
        _causal_fwd_kernel, cfg, (b, h),
        [_whole(length, f), _whole(length, f), _whole(length, d)],
        [_whole(length, d), _head(length)],
        [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((b, h, length), jnp.float32)],
        "linear_causal_fwd",
    )(q, k, v)
    return o, den, ()


def _causal_backward(q, k, v, dn, dd, state, cfg: _Config):
    del state
    b, length, h, f = q.shape
    d = v.shape[-1]
    whole_f, whole_d = _whole(length, f), _whole(length, d)
    dq = C.pallas_call(
        _causal_dq_kernel, cfg, (b, h),
        [whole_f, whole_d, whole_d, _head(length)], whole_f,
        jax.ShapeDtypeStruct(q.shape, q.dtype), "linear_causal_bwd_dq",
    )(k, v, dn, dd)
    dk, dv = C.pallas_call(
        _causal_dkv_kernel, cfg, (b, h),
        [whole_f, whole_f, whole_d, whole_d, _head(length)], [whole_f, whole_d],
        [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        "linear_causal_bwd_dkv",
    )(q, k, v, dn, dd)
    return dq, dk, dv


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
