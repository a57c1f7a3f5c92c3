"""Nystromformer (Xiong et al. 2021, "Nystromformer: A Nystrom-Based Algorithm for
Approximating Self-Attention", §3).

The softmax matrix S = softmax(Q K^T / sqrt(d)) is approximated from m landmarks
Q~, K~ (segment means of the queries and keys, §3):

    S^ = softmax(Q K~^T / sqrt(d)) (softmax(Q~ K~^T / sqrt(d)))^+ softmax(Q~ K^T / sqrt(d))
                                                                      (Eq. 14-15)
    out = S^ V, computed right to left: O(n m) time and memory, no n x n matrix.

The Moore-Penrose pseudo-inverse A^+ of the m x m middle kernel is the iterative
method of Razavi et al. 2014 (Eq. 16), 6 iterations by default:

    Z_{j+1} = 1/4 Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))),
    Z_0 = A^T / (||A||_1 ||A||_inf).

Choices where the paper is silent or its code differs:
- Landmarks: m = `num_landmarks` (paper: 64) segments of size ceil(max_len / m) taken
  from position 0, so the layout depends on `cfg.max_len`, never on the runtime length.
  The means count real tokens only. A landmark whose segment holds no real token is
  masked out of all three kernels: its column of the first kernel is masked, its row of
  the third kernel is zeroed, and its row and column of the middle kernel become an
  identity block. A block-diagonal A = diag(A_real, I) keeps Z_0 and every iterate block
  diagonal with the same real block as without the empty landmark (||A||_inf = 1 and the
  identity columns sum to 1 <= ||A_real||_1), so empty landmarks change nothing.
- Z_0 uses the norms of each (example, head) matrix; the authors' code takes one maximum
  over the whole batch, which would make an example depend on the others.
- `conv_kernel_size`: the authors' code adds a depthwise convolution of the (masked)
  values along the sequence, one filter per head (kernel 35 in their LRA configs, 33 in
  their BERT configs). It is not part of Eq. 14-16, so it is off by default (0); the
  `nystrom` and `lra` presets in configs/models.py turn it on with 35. The filter is
  initialised uniformly in +-1/sqrt(kernel size) (the PyTorch convolution default).
- No causal form: landmarks average over future tokens.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, mask_value, segment_means
from lra.errors import LRAError


def iterative_pinv(a: jax.Array, iterations: int) -> jax.Array:
    """Moore-Penrose pseudo-inverse of each matrix in a: [..., m, m] (Eq. 16).

    Z_0 = A^T / (||A||_1 ||A||_inf) per matrix, then `iterations` steps of the
    third-order iteration of Razavi et al. 2014. Computed in float32.
    """
    a = a.astype(jnp.float32)
    absolute = jnp.abs(a)
    norm_1 = jnp.max(jnp.sum(absolute, axis=-2), axis=-1)
    norm_inf = jnp.max(jnp.sum(absolute, axis=-1), axis=-1)
    z = jnp.swapaxes(a, -1, -2) / (norm_1 * norm_inf)[..., None, None]
    eye = jnp.eye(a.shape[-1], dtype=jnp.float32)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(q, k, v, mask, *, segment: int, iterations: int) -> jax.Array:
    """Eq. 14-15 on q, k, v: [B, L, H, Dh], mask bool[B, L]; landmarks of `segment` tokens.

    Returns float32[B, L, H, Dh].
    """
    neg = mask_value(jnp.float32)
    qf = q.astype(jnp.float32) / math.sqrt(q.shape[-1])
    kf = k.astype(jnp.float32)
    q_land, land_mask = segment_means(qf, mask, segment)  # [B, m, H, Dh], [B, m]
    k_land, _ = segment_means(kf, mask, segment)
    m = land_mask.shape[1]

    kernel_1 = jnp.einsum("blhd,bmhd->bhlm", qf, k_land)
    kernel_1 = jax.nn.softmax(jnp.where(land_mask[:, None, None, :], kernel_1, neg), axis=-1)

    middle = jnp.einsum("bmhd,bnhd->bhmn", q_land, k_land)
    middle = jax.nn.softmax(jnp.where(land_mask[:, None, None, :], middle, neg), axis=-1)
    middle = jnp.where(land_mask[:, None, :, None], middle, jnp.eye(m, dtype=jnp.float32))

    kernel_3 = jnp.einsum("bmhd,blhd->bhml", q_land, kf)
    kernel_3 = jax.nn.softmax(jnp.where(mask[:, None, None, :], kernel_3, neg), axis=-1)
    kernel_3 = jnp.where(land_mask[:, None, :, None], kernel_3, 0.0)

    summary = jnp.einsum("bhml,blhd->bhmd", kernel_3, v.astype(jnp.float32))
    summary = iterative_pinv(middle, iterations) @ summary
    return jnp.einsum("bhlm,bhmd->blhd", kernel_1, summary)


def depthwise_conv(v: jax.Array, kernel: jax.Array) -> jax.Array:
    """Convolve v: [B, L, H, Dh] along L with one filter per head, kernel: [K, H]; 'same' size."""
    b, l, h, dh = v.shape
    size = kernel.shape[0]
    weights = jnp.repeat(kernel.astype(jnp.float32), dh, axis=1)[:, None, :]  # [K, 1, H*Dh]
    out = jax.lax.conv_general_dilated(
        v.reshape(b, l, h * dh).astype(jnp.float32), weights,
        window_strides=(1,), padding=[(size // 2, size - 1 - size // 2)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=h * dh,
    )
    return out.reshape(b, l, h, dh)


@register("nystrom", paper="Xiong et al. 2021",
          complexity="O(n m) time and memory, m landmarks",
          budget=lambda b, n: {"num_landmarks": b})
class NystromAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, num_landmarks: int = 64,
                 pinv_iterations: int = 6, conv_kernel_size: int = 0):
        if cfg.causal:
            raise LRAError("nystrom has no causal form (landmarks average future tokens); "
                           "set model.causal=False")
        if num_landmarks < 1:
            raise LRAError(f"nystrom: model.attention_kwargs.num_landmarks={num_landmarks} "
                           "must be >= 1")
        if pinv_iterations < 0:
            raise LRAError(f"nystrom: model.attention_kwargs.pinv_iterations={pinv_iterations} "
                           "must be >= 0")
        if conv_kernel_size < 0 or (conv_kernel_size and conv_kernel_size % 2 == 0):
            raise LRAError(f"nystrom: model.attention_kwargs.conv_kernel_size={conv_kernel_size} must be 0 "
                           "(off) or an odd positive size")
        super().__init__(cfg, rngs=rngs)
        self.segment = -(-cfg.max_len // num_landmarks)
        self.pinv_iterations = pinv_iterations
        bound = 1.0 / math.sqrt(max(conv_kernel_size, 1))
        shape = (conv_kernel_size, cfg.num_heads)
        self.conv = None if not conv_kernel_size else nnx.Param(
            jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))

    def core(self, q, k, v, mask, *, deterministic):
        out = nystrom_attention(q, k, v, mask, segment=self.segment,
                                iterations=self.pinv_iterations)
        if self.conv is not None:
            out = out + depthwise_conv(jnp.where(mask[:, :, None, None], v, 0), self.conv[...])
        return out.astype(q.dtype)
