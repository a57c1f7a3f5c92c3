"""Block-sparse attention machinery shared by the sparse family (sparse, bigbird, local).

A layout says, for each query block of `block_size` positions, which key blocks it
reads. It is the format of the `block_sparse` Pallas kernel:

    block_idx:   int32[nq, max_kb]   key-block indices of query block i, valid ones first
    block_count: int32[nq]           how many leading entries of row i are valid

Rows may also carry leading head or batch-and-head axes, `[H, nq, max_kb]` with
`[H, nq]` counts or `[B, H, nq, max_kb]` with `[B, H, nq]` counts, for layouts drawn
per head (BigBird's random blocks) or chosen from content. A row never repeats a
block (the softmax would count it twice). Indices past the sequence's last block
are treated as padding, so a layout built for `max_len` serves any shorter input.

Inside the listed blocks two per-position patterns are available, both given in
absolute positions: `causal` (key j <= query i) and `window` (|i - j| < window).

Cost: each query block reads `max_kb` key blocks, so time and memory grow as
n * max_kb * block_size, never n^2. Logits and normalisers are float32.

A query with no allowed key gets output 0 (a weighted sum over an empty set), so
its output never depends on padded positions.

XLA path (CPU): work is laid out head-major, [B * H * blocks, rows, Dh], so every
product is a plain batched matmul and every softmax runs over the last, contiguous
axis (the [B, L, H, Dh] order costs transposes of the logits). A static layout that
is a band (blocks i - before .. i + after) reads its keys from shifted slices; other
layouts gather their blocks (a scatter-add in the backward pass).

`block_sparse_attention(..., pallas=True)` runs the same layout through the
`kernels.block_sparse` Pallas kernel (FlashAttention-2 over the listed blocks, no
gathered copies), reading the padding mask as lengths (masks are prefixes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lra.attention.base import mask_value, pad_to_multiple
from lra.kernels import _common
from lra.kernels.block_sparse import block_sparse_attention as block_sparse_kernel


def _matmul_batch(a, x):
    """Query-side a [B, H, nb, bs, n] and key-side x, [B, H, nb, S, m] (one set per query
    block) or [B, H, S, m] (one set for all), as 3-d matmul operands [N, rows, features]."""
    b, h, nb, bs = a.shape[:4]
    if x.ndim == 4:
        return a.reshape(b * h, nb * bs, -1), x.reshape(b * h, -1, x.shape[-1])
    return a.reshape(b * h * nb, bs, -1), x.reshape(b * h * nb, -1, x.shape[-1])


def union_attention(q, key_sets, scale: float) -> jax.Array:
    """One softmax of query blocks q [B, H, nb, bs, Dh] over the union of disjoint key sets.

    key_sets: (k, v, allowed) triples; k, v are [B, H, nb, S, Dh] (a set per query block)
    or [B, H, S, Dh] (one set for every query); allowed (bool) broadcasts to
    [B, H, nb, bs, S]. Every product is a batched 3-d matmul and every reduction runs over
    the last axis. The weights exp(s - m), m the row maximum over all sets, stay
    unnormalised: each set's exp(s - m) v is summed and the sum divided once by the summed
    normalisers (the deferred rescaling of FlashAttention-2, Dao 2023, §3.1.1), which is
    softmax(s) v exactly with a pass fewer over the weights in each direction.
    Returns float32 [B, H, nb, bs, Dh]; rows with no allowed key are 0.
    """
    shape = q.shape[:-1]
    logits = []
    for k, _, allowed in key_sets:
        a, b = _matmul_batch(q, k)
        s = jnp.einsum("nqd,nkd->nqk", a, b, preferred_element_type=jnp.float32)
        logits.append(jnp.where(allowed, s.reshape(*shape, -1) * scale, mask_value(jnp.float32)))
    top = jnp.max(jnp.stack([jnp.max(s, axis=-1) for s in logits]), axis=0)[..., None]
    top = jax.lax.stop_gradient(top)
    out = total = 0.0
    nonempty = False
    for s, (_, v, allowed) in zip(logits, key_sets, strict=True):
        weights = jnp.exp(s - top)
        a, b = _matmul_batch(weights, v.astype(jnp.float32))
        out = out + jnp.einsum("nqk,nkd->nqd", a, b).reshape(*shape, v.shape[-1])
        total = total + jnp.sum(weights, axis=-1, keepdims=True)
        nonempty = nonempty | jnp.any(allowed, axis=-1, keepdims=True)
    return out * (nonempty / total)


def head_blocks(x, block_size: int) -> jax.Array:
    """[B, L, H, Dh] -> [B, H, nb, bs, Dh], L padded to a multiple of `block_size`."""
    b, _, h, d = x.shape
    return pad_to_multiple(x, block_size).reshape(b, -1, block_size, h, d).transpose(0, 3, 1, 2, 4)


def from_head_blocks(x, length: int) -> jax.Array:
    """[B, H, nb, bs, Dh] -> [B, length, H, Dh] (the inverse of `head_blocks`)."""
    b, h, nb, bs, d = x.shape
    return x.transpose(0, 2, 3, 1, 4).reshape(b, nb * bs, h, d)[:, :length]


def attend(q, k, v, allowed, *, scale: float | None = None) -> jax.Array:
    """Softmax attention of q [B, Lq, H, Dh] over k, v [B, S, H, Dh] where `allowed`.

    `allowed` is bool, broadcastable to [B, H, Lq, S]. Returns [B, Lq, H, Dh] in q.dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    heads = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [B, L, H, Dh] <-> [B, H, L, Dh]
    allowed = jnp.asarray(allowed)
    allowed = allowed.reshape((1,) * (4 - allowed.ndim) + allowed.shape)[:, :, None]
    out = union_attention(heads(q)[:, :, None], [(heads(k), heads(v), allowed)], scale)
    return heads(out[:, :, 0]).astype(q.dtype)


def compact_layout(member, max_kb: int):
    """Turn a membership matrix bool[..., nq, nb] into (block_idx, block_count).

    Valid blocks come first, in increasing order; unused slots hold index 0.
    Works on numpy (static layouts) and jax arrays (layouts drawn at init).
    """
    xp = np if isinstance(member, np.ndarray) else jnp
    order = xp.argsort(~member, axis=-1, stable=True)[..., :max_kb]
    count = member.sum(axis=-1)
    slots = xp.arange(max_kb)
    idx = xp.where(slots < count[..., None], order, 0)
    return idx.astype(xp.int32), count.astype(xp.int32)


def _band_member(num_blocks: int, before: int, after: int) -> np.ndarray:
    offset = np.arange(num_blocks)[None, :] - np.arange(num_blocks)[:, None]
    return (offset >= -before) & (offset <= after)


def band_layout(num_blocks: int, before: int, after: int):
    """Static layout where query block i reads key blocks i - before .. i + after."""
    member = _band_member(num_blocks, before, after)
    return compact_layout(member, min(num_blocks, before + after + 1))


def _as_band(block_idx, block_count, nb: int) -> tuple[int, int] | None:
    """(before, after) if a static layout's first nb rows are a band over nb blocks no
    wider than its rows (else reading slices would cost more than the gather)."""
    if not isinstance(block_idx, np.ndarray) or block_idx.ndim != 2:
        return None
    slots = np.arange(block_idx.shape[-1]) < np.asarray(block_count)[:nb, None]
    rows, idx = np.nonzero(slots & (block_idx[:nb] < nb))
    if not len(rows):
        return None
    cols = block_idx[:nb][rows, idx]
    before, after = int(np.max(rows - cols)), int(np.max(cols - rows))
    member = np.zeros((nb, nb), bool)
    member[rows, cols] = True
    ok = (0 <= before and 0 <= after and before + after < block_idx.shape[-1]
          and np.array_equal(member, _band_member(nb, before, after)))
    return (before, after) if ok else None


def band_blocks(x, before: int, after: int, axis: int = 2) -> jax.Array:
    """Blocks i - before .. i + after of each block i along `axis`, concatenated on the
    next axis (blocks past either end are zeros / False). x: [..., nb, bs, ...]."""
    nb = x.shape[axis]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    padded = jnp.pad(x, widths)
    parts = [jax.lax.slice_in_dim(padded, s, s + nb, axis=axis) for s in range(before + after + 1)]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis + 1)


def gather_blocks(x, idx) -> jax.Array:
    """Blocks `idx` int[(B | 1), (H | 1), nq, m] of x [B, (H | 1), nb, bs, ...], concatenated:
    [B, H, nq, m * bs, ...]. Indices must be valid blocks."""
    bi = jnp.arange(x.shape[0])[:, None, None, None]
    hi = jnp.arange(x.shape[1])[None, :, None, None] if x.shape[1] > 1 else 0
    out = x[bi, hi, idx]
    return out.reshape(*out.shape[:3], -1, *x.shape[4:])


def block_sparse_attention(
    q, k, v, mask, block_idx, block_count, *, block_size: int,
    causal: bool = False, window: int | None = None, scale: float | None = None,
    pallas: bool = False,
) -> jax.Array:
    """Each query block attends to the key blocks its layout row lists.

    q, k, v: [B, L, H, Dh]; mask: bool[B, L] (True = real key). L is padded to a
    multiple of `block_size`; the layout must have at least ceil(L / block_size)
    rows (extra rows are ignored). Returns [B, L, H, Dh] in q.dtype. `pallas`: compute
    with the Pallas kernel (same result; `mask` must be a prefix padding mask).
    """
    if pallas:
        return block_sparse_kernel(
            q, k, v, block_idx, block_count, _common.lengths_from_mask(mask),
            block_size=block_size, causal=causal, window=window, scale=scale, impl="pallas",
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    b, length = q.shape[:2]
    bs, nb = block_size, -(-length // block_size)
    if block_idx.shape[-2] < nb:
        raise ValueError(f"layout has {block_idx.shape[-2]} query blocks, input needs {nb}")

    qb, kb, vb = (head_blocks(x, bs) for x in (q, k, v))
    mb = pad_to_multiple(mask, bs, value=False).reshape(b, 1, nb, bs)
    band = _as_band(block_idx, block_count, nb)
    if band is not None:  # slot s of row i is block i - before + s, absent past either end
        before, after = band
        kg, vg, key_real = (band_blocks(x, before, after) for x in (kb, vb, mb))
        first = np.arange(nb)[:, None] - before + np.arange(before + after + 1)
        key_pos = first[..., None] * bs + np.arange(bs)  # [nb, kb, bs]
    else:
        idx = jnp.asarray(block_idx)[..., :nb, :]
        idx = idx.reshape((1,) * (4 - idx.ndim) + idx.shape)  # [B | 1, H | 1, nb, kb]
        count = jnp.asarray(block_count)[..., :nb].reshape(idx.shape[:-1])
        slot_ok = (jnp.arange(idx.shape[-1]) < count[..., None]) & (idx < nb)
        safe = jnp.minimum(idx, nb - 1)
        kg, vg, key_real = (gather_blocks(x, safe) for x in (kb, vb, mb))
        key_real = key_real & jnp.repeat(slot_ok, bs, axis=-1)
        key_pos = safe[..., None] * bs + jnp.arange(bs)
    allowed = key_real[..., None, :]  # [B, H', nb, 1, kb * bs]
    if causal or window is not None:
        key_pos = key_pos.reshape(*key_pos.shape[:-2], 1, -1)
        q_pos = (np.arange(nb)[:, None] * bs + np.arange(bs))[..., None]  # [nb, bs, 1]
        if causal:
            allowed = allowed & (key_pos <= q_pos)
        if window is not None:
            allowed = allowed & (abs(q_pos - key_pos) < window)
    out = union_attention(qb, [(kg, vg, allowed)], scale)
    return from_head_blocks(out, length).astype(q.dtype)
