"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity", §4).

Keys and values are projected along the length with learned matrices E_i, F_i of
shape [n, k] before softmax attention (Eq. 7):

    head_i = softmax(Q W_i^Q (E_i^T K W_i^K)^T / sqrt(d_k)) (F_i^T V W_i^V)

so the attention matrix is n x k: O(n k) time and memory. k = 256 by default (the
paper's main setting, and the Nystromformer LRA protocol's "linformer-256").

Choices where the paper is silent:
- E, F have `cfg.max_len` rows; a sequence of length L <= max_len uses the first L rows.
  Padded keys and values are zeroed before the projection, so padding contributes
  nothing and appending it changes no output. L > max_len is an error.
- Parameter sharing (§4, "Additional Efficiency Techniques"): `sharing="none"` (one E_i,
  F_i per head, the general form of Eq. 7; default), `"headwise"` (E, F shared by the
  heads of the layer) or `"kv"` (one E = F for keys, values and heads). Layerwise sharing
  across layers is outside a single layer and not offered. The LRA reference code uses
  k = 16 with one matrix for keys, values and heads: the `lra` preset in configs/models.py.
- Initialisation (not given for the experiments): normal with std 1/sqrt(max_len), the
  fan-in scaling of the length axis used by the LRA reference code, so a projected key is
  a variance-preserving mix of the real keys.
- No causal form: a projected key mixes every position.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, dense_attention
from lra.errors import LRAError

SHARING = ("none", "headwise", "kv")


@register("linformer", paper="Wang et al. 2020",
          complexity="O(n k) time and memory, k projected length",
          budget=lambda b, n: {"k": b})
class LinformerAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, k: int = 256,
                 sharing: str = "none"):
        if cfg.causal:
            raise LRAError("linformer has no causal form (projections mix every position); "
                           "set model.causal=False")
        if sharing not in SHARING:
            raise LRAError(f"linformer: model.attention_kwargs.sharing={sharing!r} is not one "
                           f"of {', '.join(SHARING)}")
        if k < 1:
            raise LRAError(f"linformer: model.attention_kwargs.k={k} must be >= 1")
        super().__init__(cfg, rngs=rngs)
        shape = (cfg.max_len, k) if sharing != "none" else (cfg.num_heads, cfg.max_len, k)
        init = nnx.initializers.normal(stddev=1.0 / math.sqrt(cfg.max_len))
        self.e = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self.f = None if sharing == "kv" else nnx.Param(init(rngs.params(), shape, jnp.float32))

    def project_length(self, x, mask, matrix):
        """E^T (x * mask) along the length: x [B, L, H, Dh] -> float32[B, k, H, Dh]."""
        length = x.shape[1]
        if length > self.cfg.max_len:
            raise LRAError(f"linformer: sequence length {length} exceeds max_len="
                           f"{self.cfg.max_len}; raise data.max_len")
        x = jnp.where(mask[:, :, None, None], x, 0).astype(jnp.float32)
        matrix = matrix[..., :length, :]
        spec = "blhd,lk->bkhd" if matrix.ndim == 2 else "blhd,hlk->bkhd"
        return jnp.einsum(spec, x, matrix)

    def core(self, q, k, v, mask, *, deterministic):
        f = self.e if self.f is None else self.f
        keys = self.project_length(k, mask, self.e[...])
        values = self.project_length(v, mask, f[...])
        every = jnp.ones(keys.shape[:2], dtype=bool)
        return dense_attention(q, keys, values, every)
