"""Local attention: the blocked local baseline of the Long Range Arena (Tay et al. 2020, §3.1).

LRA lists "Local Attention" as its simplest efficient baseline: the sequence is cut
into non-overlapping blocks of b positions and each query attends only to the keys
of its own block, softmax(Q_i K_i^T / sqrt(d)) V_i for block i, O(n b) time and
memory. The LRA configs use b = 50 (ListOps, Text, Retrieval: the default here) and
b = 64 (Image, Pathfinder).

Choices:
- Blocks are contiguous positions [i b, (i + 1) b). The LRA reference code
  (lra_benchmarks/models/local/local_attention.py) reshapes [L] to [b, L / b] and
  attends along the b axis, so its "blocks" are in fact positions equal modulo L / b,
  with a padding mask reshaped the contiguous way; we follow the described (and
  intended) contiguous blocks.
- No look-back to the previous block (the reference code has none either).
- `causal=True` adds the within-block mask j <= i, as the reference code does.
- The sequence is padded to a multiple of b; padded keys are masked.

On GPU/TPU (`impl="auto"` or "pallas") the blocks run through the `kernels.block_sparse`
Pallas kernel (b = 50 is stored in tiles of 64, the extra slots masked); on CPU the
XLA path of `lra.attention.blocksparse` (shifted block slices for this band layout).
"""

from __future__ import annotations

from flax import nnx

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, use_pallas
from lra.attention.blocksparse import band_layout, block_sparse_attention
from lra.errors import LRAError


@register("local", paper="Tay et al. 2020", complexity="O(n*b) time and memory",
          budget=lambda b, n: {"block_size": b})
class LocalAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, block_size: int = 50):
        if block_size < 1:
            raise LRAError(f"local: model.attention_kwargs.block_size={block_size} must be a positive "
                           "integer")
        super().__init__(cfg, rngs=rngs)
        self.block_size = block_size

    def core(self, q, k, v, mask, *, deterministic):
        idx, count = band_layout(-(-q.shape[1] // self.block_size), 0, 0)
        return block_sparse_attention(
            q, k, v, mask, idx, count, block_size=self.block_size, causal=self.cfg.causal,
            pallas=use_pallas(self.cfg.impl),
        )
