"""Block-sparse softmax attention over a per-query-block list of key blocks.

The sequence is cut into blocks of `block_size` tokens. Query block i attends to the
key blocks block_idx[..., i, :block_count[..., i]] and nothing else; inside those blocks
the padding mask and, optionally, causal and window masks apply. This is the layout
format of `lra.attention.blocksparse` (its XLA path):

- int32[nq, max_kb] with counts [nq]: one static layout for every example and head,
  e.g. Sparse Transformer's strided and fixed patterns (Child et al. 2019, §4.2) and
  local attention;
- int32[H, nq, max_kb] with counts [H, nq]: one layout per head (BigBird's random
  blocks, Zaheer et al. 2020, §2);
- int32[B, H, nq, max_kb] with counts [B, H, nq]: content-dependent lists, e.g. Routing
  Transformer clusters (Roy et al. 2020, §4) or Reformer/Scatterbrain LSH buckets
  (Kitaev et al. 2020, §2) after the caller has sorted q, k, v per head so that a
  cluster or bucket fills whole blocks.

Valid entries come first in a row and a row never repeats a block (the softmax would
count it twice). A layout may have more rows than the input needs (they are ignored) and
entries naming blocks past the input's last block are skipped, so a layout built for
max_len serves any shorter input.

Masks use `positions` (int32[B, H, L], default the token index): key j is visible to
query i iff positions[j] < lengths[b] (a real token), and positions[j] <= positions[i]
when causal, and |positions[i] - positions[j]| < window when a window is given. After a
sort, passing the permutation as `positions` keeps every mask that of the original
order. A query with no visible key outputs zeros.

Kernels: the per-block softmax is the FlashAttention-2 online softmax (Dao 2023,
Algorithm 1) over the listed blocks only; the backward pass is its Algorithm 2, one
kernel for dQ walking the same lists and one for dK, dV walking the transposed lists
(for each key block, the query blocks that list it, built with XLA). The Triton grid has
no scalar prefetch, so the lists are ordinary inputs read one scalar at a time. Triton
tiles are powers of two >= 16: a block of another size is stored in a tile of the next
such size, its extra slots being masked fake tokens (e.g. block 50 -> tile 64).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from lra.kernels import _common as C

# Position of a fake token filling a tile: past any length, so it is never a visible key.
_FAKE = 2**30


def block_sparse_attention(q, k, v, block_idx, block_count, lengths=None, *, block_size: int,
                           causal: bool = False, window: int | None = None, positions=None,
                           scale: float | None = None, impl: str = "auto",
                           interpret: bool = False):
    """Attention of each query block over its listed key blocks.

    q, k, v: [B, L, H, Dh]; block_idx / block_count: a layout as described in the module
    docstring, with at least ceil(L / block_size) rows; lengths: int32[B] (None: all
    tokens real); positions: int32[B, H, L] or None. Returns [B, L, H, Dh] in q's dtype.
    """
    b, length, h, d = q.shape
    nq = -(-length // block_size)
    block_idx, block_count = layout_rows(block_idx, block_count, b, h, nq)
    scale = C.default_scale(d, scale)
    lengths = C.full_lengths(lengths, b, length)
    positions = _positions(positions, b, h, length)
    interpret = C.interpret_mode(interpret)
    if not C.use_kernel(impl, interpret):
        return block_sparse_reference(q, k, v, block_idx, block_count, lengths,
                                      block_size=block_size, causal=causal, window=window,
                                      positions=positions, scale=scale)
    tile = C.feature_size(block_size)
    dp = C.feature_size(d)
    q, k, v = (_to_tiles(C.pad_axis(x, 3, dp), 1, block_size, tile) for x in (q, k, v))
    positions = _to_tiles(positions, 2, block_size, tile, fill=_FAKE)
    cfg = _Config(causal, window, scale, tile, interpret, num_warps=4 if dp <= 64 else 8)
    out = _block_sparse(cfg, q, k, v, block_idx, block_count, lengths, positions)
    return _from_tiles(out, 1, block_size, tile)[:, :length, :, :d]


def block_sparse_reference(q, k, v, block_idx, block_count, lengths, *, block_size: int,
                           causal: bool = False, window: int | None = None, positions=None,
                           scale: float | None = None):
    """Pure-jnp reference: gather each query block's listed key blocks, masked softmax."""
    b, length, h, d = q.shape
    bs = block_size
    nq = -(-length // bs)
    idx, count = layout_rows(block_idx, block_count, b, h, nq)
    idx = jnp.broadcast_to(idx, (b, h) + idx.shape[-2:])
    scale = C.default_scale(d, scale)
    lengths = C.full_lengths(lengths, b, length)
    positions = C.pad_axis(_positions(positions, b, h, length), 2, nq * bs, value=_FAKE)

    def blocks(x):  # [B, L, H, D] -> [B, H, nq, bs, D]
        x = C.pad_axis(x, 1, nq * bs)
        return x.reshape(b, nq, bs, h, -1).transpose(0, 3, 1, 2, 4)

    take = jax.vmap(jax.vmap(lambda x, i: x[i]))                            # per (b, h)
    safe = jnp.maximum(idx, 0)
    kg, vg = take(blocks(k), safe), take(blocks(v), safe)                   # [B, H, nq, m, bs, D]
    q_pos = positions.reshape(b, h, nq, bs)
    k_pos = take(q_pos, safe)                                               # [B, H, nq, m, bs]
    s = jnp.einsum("bhnqd,bhnmkd->bhnqmk", blocks(q), kg, preferred_element_type=jnp.float32)
    allowed = (idx >= 0)[..., None] & (k_pos < lengths[:, None, None, None, None])
    allowed = allowed[:, :, :, None]                                        # [B, H, nq, 1, m, bs]
    q_pos = q_pos[..., None, None]
    if causal:
        allowed = allowed & (k_pos[:, :, :, None] <= q_pos)
    if window is not None:
        allowed = allowed & (jnp.abs(k_pos[:, :, :, None] - q_pos) < window)
    allowed = jnp.broadcast_to(allowed, s.shape)
    p, _ = C.softmax_rows((s * scale).reshape(*s.shape[:4], -1),
                          allowed.reshape(*s.shape[:4], -1))
    out = jnp.einsum("bhnqj,bhnjd->bhnqd", p, vg.reshape(b, h, nq, -1, d).astype(jnp.float32))
    out = out.transpose(0, 2, 3, 1, 4).reshape(b, nq * bs, h, d)
    return out[:, :length].astype(q.dtype)


def layout_rows(block_idx, block_count, b: int, h: int, nq: int):
    """The first nq rows of a layout, with every skipped slot (past the count or naming a
    block past the input) set to -1; counts clipped to the row width."""
    block_idx = jnp.asarray(block_idx, jnp.int32)
    block_count = jnp.asarray(block_count, jnp.int32)
    lead = {2: (), 3: (h,), 4: (b, h)}.get(block_idx.ndim)
    if (lead is None or block_idx.shape[:-2] != lead or block_count.shape[:-1] != lead
            or block_count.shape[-1] != block_idx.shape[-2] or block_idx.shape[-2] < nq):
        raise ValueError(
            f"layout block_idx {block_idx.shape} / block_count {block_count.shape} does not fit "
            f"B={b}, H={h} and {nq} query blocks: expected [(B, H | H,) n >= {nq}, max_kb] / "
            "[(B, H | H,) n]"
        )
    idx, count = block_idx[..., :nq, :], block_count[..., :nq]
    slot = jnp.arange(idx.shape[-1])
    keep = (slot < count[..., None]) & (idx >= 0) & (idx < nq)
    return jnp.where(keep, idx, -1), jnp.minimum(count, idx.shape[-1])


def transpose_lists(block_idx, block_count, num_key_blocks: int):
    """For each key block, the query blocks that list it: (idx [..., nk, nq], count [..., nk]).

    Rows are sorted by query block; entries past the count are filler. Skipped slots (-1)
    list nothing.
    """
    m = block_idx.shape[-1]
    listed = jnp.arange(m) < block_count[..., None]
    hits = (block_idx[..., None] == jnp.arange(num_key_blocks)) & listed[..., None]
    incidence = jnp.swapaxes(jnp.any(hits, axis=-2), -1, -2)                # [..., nk, nq]
    order = jnp.argsort(~incidence, axis=-1, stable=True).astype(jnp.int32)
    return order, jnp.sum(incidence, axis=-1, dtype=jnp.int32)


def _positions(positions, b, h, length):
    if positions is None:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, h, length))
    if positions.shape != (b, h, length):
        raise ValueError(f"positions must have shape {(b, h, length)}, got {positions.shape}")
    return positions.astype(jnp.int32)


def _to_tiles(x, axis: int, block: int, tile: int, fill=0):
    """Blocks of `block` along `axis` (padded to whole blocks) stored in tiles of `tile`."""
    n = -(-x.shape[axis] // block)
    x = C.pad_axis(x, axis, n * block, value=fill)
    x = x.reshape(*x.shape[:axis], n, block, *x.shape[axis + 1:])
    x = C.pad_axis(x, axis + 1, tile, value=fill)
    return x.reshape(*x.shape[:axis], n * tile, *x.shape[axis + 2:])


def _from_tiles(x, axis: int, block: int, tile: int):
    """Inverse of `_to_tiles` (drops the fake tokens; the length is still padded)."""
    n = x.shape[axis] // tile
    x = x.reshape(*x.shape[:axis], n, tile, *x.shape[axis + 1:])
    x = lax.slice_in_dim(x, 0, block, axis=axis + 1)
    return x.reshape(*x.shape[:axis], n * block, *x.shape[axis + 2:])


@dataclasses.dataclass(frozen=True)
class _Config:
    causal: bool
    window: int | None
    scale: float
    block: int
    interpret: bool
    num_warps: int = 4
    num_stages: int = 2


def _key_block(idx_ref, pos_ref, k_ref, v_ref, q_pos, length, cfg: _Config, j):
    """The j-th listed key block: (k, v, which keys each query sees)."""
    kb = idx_ref[j]                        # -1: a skipped slot
    rows = pl.ds(jnp.maximum(kb, 0) * cfg.block, cfg.block)
    allowed = C.visible(q_pos, pos_ref[rows], length, cfg.causal, cfg.window) & (kb >= 0)
    return k_ref[rows, :], v_ref[rows, :], allowed


def _fwd_kernel(len_ref, idx_ref, cnt_ref, qpos_ref, pos_ref, q_ref, k_ref, v_ref, o_ref, lse_ref,
                *, cfg: _Config):
    key_block = functools.partial(_key_block, idx_ref, pos_ref, k_ref, v_ref, qpos_ref[...],
                                  len_ref[()], cfg)
    o, lse = C.online_softmax(q_ref[...], cnt_ref[()], key_block, cfg.scale)
    o_ref[...] = o.astype(o_ref.dtype)
    lse_ref[...] = lse


def _dq_kernel(len_ref, idx_ref, cnt_ref, qpos_ref, pos_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
               delta_ref, dq_ref, *, cfg: _Config):
    key_block = functools.partial(_key_block, idx_ref, pos_ref, k_ref, v_ref, qpos_ref[...],
                                  len_ref[()], cfg)
    dq = C.online_softmax_dq(q_ref[...], do_ref[...], lse_ref[...], delta_ref[...], cnt_ref[()],
                             key_block, cfg.scale)
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(len_ref, idx_ref, cnt_ref, kpos_ref, pos_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
                delta_ref, dk_ref, dv_ref, *, cfg: _Config):
    bs = cfg.block
    length = len_ref[()]
    k_pos = kpos_ref[...]

    def query_block(j):
        rows = pl.ds(idx_ref[j] * bs, bs)
        allowed = C.visible(pos_ref[rows], k_pos, length, cfg.causal, cfg.window)
        return q_ref[rows, :], do_ref[rows, :], lse_ref[rows], delta_ref[rows], allowed

    dk, dv = C.online_softmax_dkv(k_ref[...], v_ref[...], 0, cnt_ref[()], query_block, cfg.scale)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _list_specs(block_idx):
    """Specs of (block_idx, block_count): row i of a [n, m], [H, n, m] or [B, H, n, m] list."""
    m = block_idx.shape[-1]
    if block_idx.ndim == 2:
        return (pl.BlockSpec((None, m), lambda b, h, i: (i, 0)),
                pl.BlockSpec((None,), lambda b, h, i: (i,)))
    if block_idx.ndim == 3:
        return (pl.BlockSpec((None, None, m), lambda b, h, i: (h, i, 0)),
                pl.BlockSpec((None, None), lambda b, h, i: (h, i)))
    return (pl.BlockSpec((None, None, None, m), lambda b, h, i: (b, h, i, 0)),
            pl.BlockSpec((None, None, None), lambda b, h, i: (b, h, i)))


def _specs(length: int, d: int, bs: int):
    return dict(
        lengths=pl.BlockSpec((None,), lambda b, h, i: (b,)),
        pos_block=pl.BlockSpec((None, None, bs), lambda b, h, i: (b, h, i)),
        pos_all=pl.BlockSpec((None, None, length), lambda b, h, i: (b, h, 0)),
        rows=pl.BlockSpec((None, bs, None, d), lambda b, h, i: (b, i, h, 0)),
        whole=pl.BlockSpec((None, length, None, d), lambda b, h, i: (b, 0, h, 0)),
        stats_block=pl.BlockSpec((None, None, bs), lambda b, h, i: (b, h, i)),
        stats_all=pl.BlockSpec((None, None, length), lambda b, h, i: (b, h, 0)),
    )


def _forward(q, k, v, block_idx, block_count, lengths, positions, cfg: _Config):
    b, length, h, d = q.shape
    s = _specs(length, d, cfg.block)
    idx_spec, cnt_spec = _list_specs(block_idx)
    return C.pallas_call(
        _fwd_kernel, cfg, (b, h, length // cfg.block),
        [s["lengths"], idx_spec, cnt_spec, s["pos_block"], s["pos_all"], s["rows"], s["whole"],
         s["whole"]],
        [s["rows"], s["stats_block"]],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, length), jnp.float32)],
        "block_sparse_fwd",
    )(lengths, block_idx, block_count, positions, positions, q, k, v)


def _backward(q, k, v, block_idx, block_count, lengths, positions, o, lse, do, cfg: _Config):
    b, length, h, d = q.shape
    n = length // cfg.block
    s = _specs(length, d, cfg.block)
    delta = jnp.einsum("blhd,blhd->bhl", o.astype(jnp.float32), do.astype(jnp.float32))
    idx_spec, cnt_spec = _list_specs(block_idx)
    dq = C.pallas_call(
        _dq_kernel, cfg, (b, h, n),
        [s["lengths"], idx_spec, cnt_spec, s["pos_block"], s["pos_all"], s["rows"], s["whole"],
         s["whole"], s["rows"], s["stats_block"], s["stats_block"]],
        s["rows"], jax.ShapeDtypeStruct(q.shape, q.dtype), "block_sparse_bwd_dq",
    )(lengths, block_idx, block_count, positions, positions, q, k, v, do, lse, delta)
    t_idx, t_count = transpose_lists(block_idx, block_count, n)
    t_idx_spec, t_cnt_spec = _list_specs(t_idx)
    dk, dv = C.pallas_call(
        _dkv_kernel, cfg, (b, h, n),
        [s["lengths"], t_idx_spec, t_cnt_spec, s["pos_block"], s["pos_all"], s["whole"], s["rows"],
         s["rows"], s["whole"], s["stats_all"], s["stats_all"]],
        [s["rows"], s["rows"]],
        [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        "block_sparse_bwd_dkv",
    )(lengths, t_idx, t_count, positions, positions, q, k, v, do, lse, delta)
    return dq, dk, dv


_block_sparse = C.custom_vjp(_forward, _backward)
