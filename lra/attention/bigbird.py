"""BigBird block-sparse attention (Zaheer et al. 2020), the ITC form.

§2 (Eq. 1, generalised attention over a graph D) builds the graph from three parts:
every query attends to r random keys, to a window of w neighbours, and to g global
tokens, which in turn attend to everything. App. D computes it on blocks of b
positions; the base-model hyperparameters (App. E, Table 8, BigBird-ITC) are b = 64,
w = 3b (`window_blocks`), r = 3b (`random_blocks`), g = 2b. ITC ("internal transformer
construction") makes existing tokens global: here, as in the authors' block
implementation, the g = 2b tokens of the FIRST and LAST blocks. The layout of query
block i is

    {0, nb - 1}  U  {i - 1, i, i + 1}  U  R_h(i),   and blocks 0 and nb - 1 read every key,

where R_h(i) are `random_blocks` blocks drawn, per head h and without replacement,
among the blocks not already in the row (App. D draws random blocks outside the
window and the global blocks). A short sequence with fewer free blocks takes them all.

Choices:
- Padding invariance: the number of blocks nb = ceil(max_len / b) and the random
  layout come from `model.max_len`, drawn once at init from `rngs` and stored as a
  non-trainable `BlockLayout` variable; they never depend on the runtime length. The
  last global block is therefore block nb - 1 of `max_len` (as in LRA, where inputs
  are padded to max_len): for shorter inputs it is padding and drops out.
- Random blocks are drawn per head, as in the authors' code.
- BigBird's encoder attention has no causal form here: `causal=True` is refused.

Cost: the window, global and random blocks are a fixed number per query block,
n * b * (w + 2 + r) logits, plus 2 b n for the two global query blocks: O(n).

On GPU/TPU (`impl="auto"` or "pallas") the per-head layout runs through the
`kernels.block_sparse` Pallas kernel and the two global query blocks through
`kernels.flash`. On CPU (XLA) the two global query blocks are one dense attention and
the layout rows of the other blocks are split back into their parts: the window is read
from shifted slices, the global key blocks are one key set that every query block shares
(one large matmul), only the random blocks are gathered, and one softmax runs over the
union (`blocksparse.union_attention`): the same keys as the layout, without gathering
the 5 fixed blocks of each row.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, pad_to_multiple, use_pallas
from lra.attention.blocksparse import (
    attend,
    band_blocks,
    block_sparse_attention,
    compact_layout,
    from_head_blocks,
    gather_blocks,
    head_blocks,
    union_attention,
)
from lra.errors import LRAError
from lra.kernels import _common
from lra.kernels.flash import flash_attention


class BlockLayout(nnx.Variable):
    """A block layout fixed at init (not trained, not redrawn)."""


def bigbird_layout(key, num_blocks: int, num_heads: int, window_blocks: int, random_blocks: int):
    """Per-head layout (block_idx int32[H, nb, max_kb], block_count int32[H, nb])."""
    i = jnp.arange(num_blocks)[:, None]
    j = jnp.arange(num_blocks)[None, :]
    is_global = (j == 0) | (j == num_blocks - 1)
    fixed = (jnp.abs(i - j) <= window_blocks // 2) | is_global
    global_row = (i == 0) | (i == num_blocks - 1)
    scores = jax.random.uniform(key, (num_heads, num_blocks, num_blocks))
    scores = jnp.where(fixed | global_row, jnp.inf, scores)
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    chosen = (rank < random_blocks) & ~fixed & ~global_row
    max_kb = min(num_blocks, window_blocks + 2 + random_blocks)
    return compact_layout(fixed[None] | chosen, max_kb)


@register("bigbird", paper="Zaheer et al. 2020",
          complexity="O(n*b*(w+g+r)) time and memory: linear in n",
          # 3 window + 2 global + 3 random blocks
          budget=lambda b, n: {"block_size": max(1, b // 8)})
class BigBirdAttention(MultiHeadAttention):
    def __init__(
        self,
        cfg: AttentionConfig,
        *,
        rngs: nnx.Rngs,
        block_size: int = 64,
        window_blocks: int = 3,
        random_blocks: int = 3,
    ):
        if cfg.causal:
            raise LRAError("bigbird has no causal form; set model.causal=False")
        if window_blocks < 1 or window_blocks % 2 == 0:
            raise LRAError(f"bigbird: model.attention_kwargs.window_blocks={window_blocks} must be odd "
                           "and >= 1")
        if block_size < 1:
            raise LRAError(f"bigbird: model.attention_kwargs.block_size={block_size} must be >= 1")
        if random_blocks < 0:
            raise LRAError(f"bigbird: model.attention_kwargs.random_blocks={random_blocks} "
                           "must be >= 0")
        super().__init__(cfg, rngs=rngs)
        self.block_size = block_size
        self.window_blocks = window_blocks
        self.random_blocks = random_blocks
        self.num_blocks = -(-cfg.max_len // block_size)
        idx, count = bigbird_layout(
            rngs.params(), self.num_blocks, cfg.num_heads, window_blocks, random_blocks
        )
        self.block_idx = BlockLayout(idx)
        self.block_count = BlockLayout(count)

    def core(self, q, k, v, mask, *, deterministic):
        length, b = q.shape[1], self.block_size
        if length > self.cfg.max_len:
            raise LRAError(
                f"bigbird: input length {length} exceeds model.max_len={self.cfg.max_len}; "
                "raise model.max_len (the random layout is drawn for it)"
            )
        # The global query blocks read every key: the first block, and the last one when the
        # input reaches it; one dense attention serves both. The blocks between read their
        # layout rows.
        head = min(b, length)
        last = (self.num_blocks - 1) * b
        tail = last if 0 < last < length else length
        queries = jnp.concatenate([q[:, :head], q[:, tail:]], axis=1)
        if use_pallas(self.cfg.impl):
            rows = flash_attention(queries, k, v, _common.lengths_from_mask(mask), impl="pallas")
            middle = block_sparse_attention(
                q, k, v, mask, self.block_idx[...], self.block_count[...], block_size=b,
                pallas=True,
            )[:, head:tail]
        else:
            rows = attend(queries, k, v, mask[:, None, None, :])
            middle = self.middle_blocks(q, k, v, mask, tail)
        return jnp.concatenate([rows[:, :head], middle, rows[:, head:]], axis=1)

    def middle_blocks(self, q, k, v, mask, tail: int):
        """Positions b .. tail - 1 (the non-global query blocks) on XLA: one softmax over
        their window, the global key blocks and their random blocks (each row's layout
        entries outside the window and the globals)."""
        b, w, nb_max = self.block_size, self.window_blocks // 2, self.num_blocks
        if tail <= b:
            return q[:, :0]
        qb, kb, vb = (head_blocks(x, b) for x in (q, k, v))
        mb = pad_to_multiple(mask, b, value=False).reshape(mask.shape[0], 1, -1, b)
        nb, rows = qb.shape[2], slice(1, -(-tail // b))
        i = np.arange(nb)[rows, None]
        globals_ = [j for j in sorted({0, nb_max - 1}) if j < nb]
        in_window = band_blocks(mb, w, w)[:, :, rows]
        not_global = ~np.isin(i - w + np.arange(2 * w + 1), globals_)  # [m, 2w + 1]
        key_sets = [
            (band_blocks(kb, w, w)[:, :, rows], band_blocks(vb, w, w)[:, :, rows],
             (in_window & np.repeat(not_global, b, axis=-1))[..., None, :]),
            (jnp.concatenate([kb[:, :, j] for j in globals_], axis=2),
             jnp.concatenate([vb[:, :, j] for j in globals_], axis=2),
             jnp.concatenate([mb[:, :, j] for j in globals_], axis=-1)[:, :, None, None]),
        ]
        idx, count = self.block_idx[...][:, rows], self.block_count[...][:, rows]
        rand = ((jnp.arange(idx.shape[-1]) < count[..., None]) & (idx < nb)
                & (jnp.abs(idx - i) > w) & ~jnp.isin(idx, np.array(globals_)))
        width = min(self.random_blocks, idx.shape[-1])
        if width:  # the random blocks of each row first, then any unused slots
            order = jnp.argsort(~rand, axis=-1, stable=True)[..., :width]
            chosen = jnp.take_along_axis(rand, order, axis=-1)
            ridx = jnp.where(chosen, jnp.take_along_axis(idx, order, axis=-1), 0)[None]
            real = gather_blocks(mb, ridx) & jnp.repeat(chosen, b, axis=-1)
            key_sets.append((gather_blocks(kb, ridx), gather_blocks(vb, ridx), real[..., None, :]))
        out = union_attention(qb[:, :, rows], key_sets, 1.0 / math.sqrt(q.shape[-1]))
        return from_head_blocks(out, tail - b).astype(q.dtype)
