"""Top-k attention (Gupta et al. 2021, "Memory-efficient Transformers via Top-k Attention", §3).

Queries are processed in chunks Q_c of `chunk` rows. For each chunk the scores
S = Q_c K^T / sqrt(d) are formed, only the k largest entries of each row are kept, and
the softmax runs over those k scores alone (§3, top-k attention):

    out_i = sum_{j in T_i} softmax_{T_i}(S_i)_j v_j,    T_i = the k largest entries of S_i

Memory (§3, query chunking and its backward pass): a `jax.custom_vjp` keeps for the
backward only q, k, v, the top-k indices and the top-k probabilities, O(n·k) per head,
and never an n x n matrix; the backward gathers the k selected keys and values again,
chunk by chunk. The forward holds one [chunk, n] score block at a time (lax.scan).
The backward needs no scores: with P the kept probabilities and dP_ij = dout_i · v_j,
dS = P ∘ (dP − rowsum(P ∘ dP)); dq, dk, dv follow by gathering and scatter-adding.

Defaults are the paper's LRA setting: k = 64, chunk = 1024. With k >= n this is exactly
softmax attention. Choices the paper leaves open:
- padded keys (and, when causal, later keys) are removed before the selection; a query
  with fewer than k allowed keys attends to those only (the extra picks get weight 0);
- the gradient treats the selected index set as fixed, as top-k is almost everywhere;
- on GPU/TPU (cfg.impl "auto" or "pallas") the core is the `kernels.topk` Pallas kernel,
  the same selection and result; it reads the padding mask as lengths (masks are prefixes).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from lra.attention import register
from lra.attention.base import (
    MultiHeadAttention,
    check_option,
    mask_value,
    pad_to_multiple,
    use_pallas,
)
from lra.kernels import _common
from lra.kernels import topk as topk_kernel

_gather = jax.vmap(jax.vmap(lambda x, idx: x[idx]))  # [B, H, L, D], [B, H, ...] -> [B, H, ..., D]


def _scatter_add(acc, idx, upd):
    """acc[b, h, idx[b, h, ...]] += upd[b, h, ...] for acc [B, H, L, D]."""
    d = acc.shape[-1]
    add = lambda a, i, u: a.at[i.reshape(-1)].add(u.reshape(-1, d))
    return jax.vmap(jax.vmap(add))(acc, idx, upd)


def _chunks(x, chunk):
    """[B, H, L, ...] with L a multiple of chunk -> [L / chunk, B, H, chunk, ...]."""
    b, h, l = x.shape[:3]
    x = x.reshape(b, h, l // chunk, chunk, *x.shape[3:])
    return jnp.moveaxis(x, 2, 0)


def _unchunk(x):
    """Inverse of `_chunks`."""
    x = jnp.moveaxis(x, 0, 2)
    return x.reshape(x.shape[0], x.shape[1], -1, *x.shape[4:])


def _select(q, k, mask, top_k, chunk, causal, scale):
    """Top-k key indices and their softmax weights for every query, one chunk at a time.

    q: f32[B, H, Lq, D] with Lq a multiple of chunk; k: f32[B, H, Lk, D]; mask: bool[B, Lk].
    Returns idx int32[B, H, Lq, top_k] and probs f32[B, H, Lq, top_k].
    """
    neg = mask_value(jnp.float32)
    key_pos = jnp.arange(k.shape[2])

    def one(args):
        qc, start = args
        s = jnp.einsum("bhcd,bhkd->bhck", qc, k) * scale
        allowed = mask[:, None, None, :]
        if causal:
            query_pos = start + jnp.arange(chunk)
            allowed = allowed & (key_pos[None, :] <= query_pos[:, None])
        s = jnp.where(allowed, s, neg)
        vals, idx = jax.lax.top_k(s, top_k)
        return idx.astype(jnp.int32), jax.nn.softmax(vals, axis=-1)

    starts = jnp.arange(q.shape[2] // chunk) * chunk
    idx, probs = jax.lax.map(one, (_chunks(q, chunk), starts))
    return _unchunk(idx), _unchunk(probs)


def _combine(probs, idx, v):
    """sum_j probs_ij v[idx_ij]: [B, H, Lq, k] x [B, H, Lk, D] -> f32[B, H, Lq, D], by chunk."""
    return jnp.einsum("bhqk,bhqkd->bhqd", probs, _gather(v, idx))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _topk_core(q, k, v, mask, top_k, chunk, causal, scale):
    out, _ = _topk_fwd(q, k, v, mask, top_k, chunk, causal, scale)
    return out


def _topk_fwd(q, k, v, mask, top_k, chunk, causal, scale):
    idx, probs = _select(q, k, mask, top_k, chunk, causal, scale)
    out = jax.lax.map(
        lambda a: _combine(a[0], a[1], v), (_chunks(probs, chunk), _chunks(idx, chunk))
    )
    return _unchunk(out), (q, k, v, idx, probs)


def _topk_bwd(top_k, chunk, causal, scale, res, dout):
    q, k, v, idx, probs = res

    def one(carry, args):
        dk, dv = carry
        qc, doc, ic, pc = args
        kg, vg = _gather(k, ic), _gather(v, ic)
        dp = jnp.einsum("bhcd,bhckd->bhck", doc, vg)
        ds = pc * (dp - jnp.sum(pc * dp, axis=-1, keepdims=True)) * scale
        dq = jnp.einsum("bhck,bhckd->bhcd", ds, kg)
        dk = _scatter_add(dk, ic, ds[..., None] * qc[:, :, :, None, :])
        dv = _scatter_add(dv, ic, pc[..., None] * doc[:, :, :, None, :])
        return (dk, dv), dq

    xs = tuple(_chunks(x, chunk) for x in (q, dout, idx, probs))
    (dk, dv), dq = jax.lax.scan(one, (jnp.zeros_like(k), jnp.zeros_like(v)), xs)
    return _unchunk(dq), dk, dv, None


_topk_core.defvjp(_topk_fwd, _topk_bwd)


def topk_attention(q, k, v, mask, *, top_k: int, chunk: int, causal: bool = False, scale=None):
    """Top-k attention on q, k, v: [B, L, H, Dh] with key mask bool[B, L]; returns q.dtype.

    Computed in float32; O(chunk·L) working memory and O(L·top_k) saved for the backward.
    """
    lq, lk = q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    chunk = min(chunk, lq)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2).astype(jnp.float32)
    qh = pad_to_multiple(heads_first(q), chunk, axis=2)
    out = _topk_core(qh, heads_first(k), heads_first(v), mask, min(top_k, lk), chunk, causal, scale)
    return jnp.swapaxes(out[:, :, :lq], 1, 2).astype(q.dtype)


@register("topk", paper="Gupta et al. 2021",
          complexity="O(n^2 d) time in query chunks; O(n k) memory saved for the backward",
          budget=lambda b, n: {"k": b})
class TopKAttention(MultiHeadAttention):
    """Softmax over the k largest scores of each query (Gupta et al. 2021, §3)."""

    def __init__(self, cfg, *, rngs, k: int = 64, chunk: int = 1024):
        for key, value in (("k", k), ("chunk", chunk)):
            check_option("topk", key, value, value >= 1, ">= 1")
        super().__init__(cfg, rngs=rngs)
        self.top_k = k
        self.chunk = chunk

    def core(self, q, k, v, mask, *, deterministic):
        if use_pallas(self.cfg.impl):
            return topk_kernel.topk_attention(
                q, k, v, _common.lengths_from_mask(mask), top_k=self.top_k, chunk=self.chunk,
                causal=self.cfg.causal, impl="pallas",
            )
        return topk_attention(
            q, k, v, mask, top_k=self.top_k, chunk=self.chunk, causal=self.cfg.causal
        )
