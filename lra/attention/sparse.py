"""Sparse Transformer factorised attention (Child et al. 2019): strided and fixed.

§4.2 (Eq. 2-3) writes attention as attend(X, S) = (a(x_i, S_i))_i: query i attends by
one softmax over its key set S_i. §4.2 factorises it into p = 2 patterns A^(1), A^(2)
of about sqrt(n) keys each; with l ~ sqrt(n) any position reaches any other in two
steps. §4.3 gives the patterns (query i, key j, stride l, summary length c):

Strided:
    A^(1)_i = {j : 0 <= i - j < l}                   the previous l positions
    A^(2)_i = {j : (i - j) mod l = 0}                every l-th position
Fixed:
    A^(1)_i = {j : floor(j / l) = floor(i / l)}      the query's own block of l
    A^(2)_i = {j : j mod l in {l - c, ..., l - 1}}   the last c "summary" positions of a block

§5.1 combines the patterns in one of three ways: one pattern per residual block (Eq. 5),
one merged head attending to the union A^(1) ∪ A^(2) (Eq. 6), or multi-head attention
(Eq. 7) whose heads may each use either.

sparse_fixed (`heads`):
- "merged" (default): every head attends to S_i = A^(1)_i ∪ A^(2)_i, one softmax, a key
  in both counted once (Eq. 6). This is what the authors' released code (openai/
  sparse_attention, attention.py, attn_mode "fixed": each head's layout holds the local
  block and the summary blocks) and the LRA port (lra_benchmarks sparse_transformer:
  its default OR-s Fixed1Pattern and Fixed2Pattern into one mask) compute.
- "split": the first half of the heads use A^(1), the second half A^(2) (Eq. 7 with the
  patterns split across heads); `model.num_heads` must be even.
- `summary_offsets` (default False, as in the LRA port): §4.3 "when using multiple heads,
  having them attend to distinct subblocks of length c within the block of size l was
  preferable to having them attend to the same subblock". The block of l is cut into
  l / c subblocks of c (c must divide l) and the g-th head using A^(2) (g counts all
  heads when merged, the second half when split) reads subblock s = g mod (l / c),
  counted from the block's end: j mod l in {l - (s + 1) c, ..., l - s c - 1}. s = 0 is
  the paper's A^(2); heads cycle when there are more than l / c of them. This is the
  released code's rule (head h reads vertical subblock h mod num_verts, subblocks
  counted from the end; its example uses l = 128, c = 32, num_verts = l / c = 4).

sparse_strided keeps the split form: the first half of the heads attend by A^(1), the
second half by A^(2) (Eq. 7); `model.num_heads` must be even. The released code also
computes the two strided patterns as separate attention products (attn_mode "local" and
"strided", the latter on the transposed [l, n/l] view), and here too they run in
different layouts (blocks along the sequence vs the columns of the [n/l, l] view): one
softmax over the union would need a per-query gather of the n/l column keys.

Choices where the paper leaves room (each tested in tests/test_attention_sparse.py):
- Direction: the paper's patterns are causal (j <= i); so was the LRA port, which
  masked causally even in its encoders. Encoders here default to the bidirectional
  form; `causal=True` gives the paper's. Bidirectional strided: |i - j| < l or
  (i - j) mod l = 0. Bidirectional fixed: own block, or j a summary position of ANY
  block (future blocks included).
- The paper writes A^(1) = {t, ..., i} with t = max(0, i - l), i.e. l + 1 positions
  whose oldest one, j = i - l, is also in A^(2); the strided split keeps the l previous
  positions i - l < j <= i ("the previous l locations" of the text).
- The set {t, ..., l} of fixed A^(2) is read as its c residues l - c .. l - 1 (the
  released code's subblocks of exactly c); the LRA port's mask also admits j mod l = 0.
- A query with an empty set (split, causal fixed: on an A^(2) head, the positions before
  that head's first summary position) gets output 0 on that head.
- Defaults l = 128, c = 32: the Enwik8 setting (§7.2, fixed pattern, sequences of
  12,288, so l ~ sqrt(n)); §4.3 reports c in {8, 16, 32} works for l in {128, 256}
  and advises l close to sqrt(n) (32 to 64 for LRA lengths: set `stride` then).

Computation (never an n x n matrix):
- strided A^(1): block-sparse with blocks of l, query block b reads blocks b-1, b, b+1
  (b-1, b when causal) with the position window |i - j| < l: n * 3l logits.
- strided A^(2): the keys of query i are the positions with the same offset i mod l,
  so the sequence is viewed as [n/l, l] and attention runs down each of the l columns:
  l dense problems of size n/l, n^2 / l logits in all.
- fixed, XLA (the CPU default): one softmax per query over two key sets, the own block
  (n * l logits) and the n c / l summary positions of its head, sliced out once and
  read by every query (n^2 c / l logits); when merged the summaries of the query's own
  block are left out of the second set (they are in the first).
- fixed, Pallas (`impl="auto"` on GPU/TPU, or "pallas"): one `kernels.block_sparse` call
  with blocks of g = gcd(l, c) (c when c divides l) and a per-head layout listing, for
  each query block, the key blocks of its own block of l and/or the summary blocks. It
  covers merged, split, offsets and causal alike; g below 16 leaves the kernel's tiles
  part empty, so choose c dividing l, a multiple of 16, on GPU.
- strided on Pallas: A^(1) through `kernels.block_sparse`, the column problems of A^(2)
  through `kernels.flash` (their padding masks are prefixes).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra.attention import register
from lra.attention.base import (
    AttentionConfig,
    MultiHeadAttention,
    check_option,
    pad_to_multiple,
    use_pallas,
)
from lra.attention.blocksparse import (
    attend,
    band_layout,
    block_sparse_attention,
    compact_layout,
    from_head_blocks,
    head_blocks,
    union_attention,
)
from lra.errors import LRAError
from lra.kernels import _common
from lra.kernels.flash import flash_attention

HEADS = ("merged", "split")


def _check_even_heads(name: str, num_heads: int, why: str) -> None:
    if num_heads % 2:
        raise LRAError(f"{name}: {why} gives half the heads to each pattern; "
                       f"model.num_heads={num_heads} must be even")


@register("sparse_strided", paper="Child et al. 2019",
          complexity="O(n*l + n^2/l) time and memory, O(n*sqrt(n)) with l ~ sqrt(n)",
          # half the heads: a band of 2l keys; the other half: every l-th key (n / l)
          budget=lambda b, n: {"stride": max(1, b // 2)})
class StridedSparseAttention(MultiHeadAttention):
    """Strided pattern, A^(1) on the first half of the heads and A^(2) on the second."""

    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, stride: int = 128):
        _check_even_heads("sparse_strided", cfg.num_heads, "the strided pattern")
        check_option("sparse_strided", "stride", stride, stride >= 1, "a positive integer")
        super().__init__(cfg, rngs=rngs)
        self.stride = stride

    def core(self, q, k, v, mask, *, deterministic):
        half = self.cfg.num_heads // 2
        first = self.local(q[:, :, :half], k[:, :, :half], v[:, :, :half], mask)
        second = self.columns(q[:, :, half:], k[:, :, half:], v[:, :, half:], mask)
        return jnp.concatenate([first, second], axis=2)

    def local(self, q, k, v, mask):
        """The previous l positions (and the next l - 1 when bidirectional)."""
        causal = self.cfg.causal
        idx, count = band_layout(-(-q.shape[1] // self.stride), 1, 0 if causal else 1)
        return block_sparse_attention(
            q, k, v, mask, idx, count, block_size=self.stride, causal=causal, window=self.stride,
            pallas=use_pallas(self.cfg.impl),
        )

    def columns(self, q, k, v, mask):
        """Every l-th position: attention down the columns of the [n/l, l] view."""
        b, length, h, d = q.shape
        l, nb = self.stride, -(-length // self.stride)

        def columns(x):  # [B, L, ...] -> [B * l, n/l, ...]
            x = pad_to_multiple(x, l)
            x = x.reshape(b, nb, l, *x.shape[2:])
            return jnp.swapaxes(x, 1, 2).reshape(b * l, nb, *x.shape[3:])

        col_q, col_k, col_v, col_mask = columns(q), columns(k), columns(v), columns(mask)
        if use_pallas(self.cfg.impl):
            out = flash_attention(col_q, col_k, col_v, _common.lengths_from_mask(col_mask),
                                  causal=self.cfg.causal, impl="pallas")
        else:
            allowed = col_mask[:, None, None, :]
            if self.cfg.causal:
                allowed = allowed & np.tril(np.ones((nb, nb), bool))
            out = attend(col_q, col_k, col_v, allowed)
        out = jnp.swapaxes(out.reshape(b, l, nb, h, d), 1, 2).reshape(b, nb * l, h, d)
        return out[:, :length]


@register("sparse_fixed", paper="Child et al. 2019",
          complexity="O(n*l + n^2*c/l) time and memory",
          # half the heads: the own block of l; the other half: c of each of n / l blocks
          budget=lambda b, n: {"stride": b, "summary": max(1, min(b, b * b // n))})
class FixedSparseAttention(MultiHeadAttention):
    """Fixed pattern: merged heads over A^(1) ∪ A^(2) (default) or heads split between them."""

    def __init__(
        self, cfg: AttentionConfig, *, rngs: nnx.Rngs, stride: int = 128, summary: int = 32,
        heads: str = "merged", summary_offsets: bool = False,
    ):
        check_option("sparse_fixed", "stride", stride, stride >= 1, "a positive integer")
        if heads not in HEADS:
            raise LRAError(f"sparse_fixed: model.attention_kwargs.heads={heads!r} is not one of "
                           f"{', '.join(HEADS)}")
        if heads == "split":
            _check_even_heads("sparse_fixed", cfg.num_heads, "model.attention_kwargs.heads='split'")
        if not 1 <= summary <= stride:
            raise LRAError(f"sparse_fixed: model.attention_kwargs.summary={summary} (c) must lie "
                           f"between 1 and model.attention_kwargs.stride={stride} (l)")
        if summary_offsets and stride % summary:
            raise LRAError(f"sparse_fixed: model.attention_kwargs.summary_offsets=True cuts the "
                           f"block of stride={stride} into subblocks of summary={summary}, which "
                           "must divide it")
        super().__init__(cfg, rngs=rngs)
        self.stride, self.summary = stride, summary
        self.split, self.summary_offsets = heads == "split", summary_offsets

    def subblocks(self) -> np.ndarray:
        """The summary subblock (counted from the block's end) of each head reading A^(2)."""
        n = self.cfg.num_heads // 2 if self.split else self.cfg.num_heads
        return np.arange(n) % (self.stride // self.summary) if self.summary_offsets else np.zeros(n, int)

    def core(self, q, k, v, mask, *, deterministic):
        subs = self.subblocks()
        half = self.cfg.num_heads // 2
        if use_pallas(self.cfg.impl):
            roles = ([(True, None)] * half + [(False, s) for s in subs] if self.split
                     else [(True, s) for s in subs])
            return self.pallas(q, k, v, mask, roles)
        if not self.split:
            return self.xla(q, k, v, mask, own=True, subs=subs)
        first = self.xla(q[:, :, :half], k[:, :, :half], v[:, :, :half], mask, own=True, subs=None)
        second = self.xla(q[:, :, half:], k[:, :, half:], v[:, :, half:], mask, own=False,
                          subs=subs)
        return jnp.concatenate([first, second], axis=2)

    def xla(self, q, k, v, mask, *, own: bool, subs):
        """One softmax over the own block (if `own`) and each head's summary subblock `subs`
        (None: none) of every block; with both, the own block's summaries are left out of the
        summary set so each key counts once."""
        l, c, causal = self.stride, self.summary, self.cfg.causal
        b, length, h, d = q.shape
        qb, kb, vb = (head_blocks(x, l) for x in (q, k, v))  # [B, H, nb, l, Dh]
        nb = qb.shape[2]
        real = pad_to_multiple(mask, l, value=False).reshape(b, 1, nb, l)
        sets = []
        if own:
            allowed = real[:, :, :, None, :]  # [B, 1, nb, 1, l]
            if causal:
                allowed = allowed & np.tril(np.ones((l, l), bool))
            sets.append((kb, vb, allowed))
        if subs is not None:
            starts = l - (subs + 1) * c

            def summaries(x):  # [B, H | 1, nb, l, ...] -> [B, H | 1, nb * c, ...]
                if len(set(starts)) == 1:  # one slice (stacking per-head slices is slower)
                    part = x[:, :, :, starts[0]:starts[0] + c]
                else:
                    part = jnp.stack([x[:, i % x.shape[1], :, s:s + c]
                                      for i, s in enumerate(starts)], axis=1)
                return part.reshape(b, part.shape[1], nb * c, *x.shape[4:])

            ks, vs, allowed = summaries(kb), summaries(vb), summaries(real[..., None])
            allowed = allowed[:, :, None, None, :, 0]  # [B, H | 1, 1, 1, S]
            pos = starts[:, None] + (np.arange(nb)[:, None] * l + np.arange(c)).reshape(-1)  # [H, S]
            if own:  # other blocks only: all of them, or the past ones when causal
                key_block, q_block = pos[:, None, None, :] // l, np.arange(nb)[:, None, None]
                allowed = allowed & ((key_block < q_block) if causal else (key_block != q_block))
            else:  # one key set for all queries: one block of queries (faster on CPU)
                qb = qb.reshape(b, h, 1, nb * l, d)
                if causal:
                    q_pos = jnp.arange(nb * l)[:, None]
                    allowed = allowed & (jnp.asarray(pos)[:, None, None, :] <= q_pos)
            sets.append((ks, vs, allowed))
        out = union_attention(qb, sets, 1.0 / math.sqrt(d))
        return from_head_blocks(out.reshape(b, h, nb, l, d), length).astype(q.dtype)

    def pallas(self, q, k, v, mask, roles):
        """All heads in one block-sparse kernel call, blocks of gcd(l, c), layout per head."""
        l, c = self.stride, self.summary
        g = math.gcd(l, c)
        nq = -(-q.shape[1] // l) * (l // g)
        start = np.arange(nq) * g  # first position of each block, query or key
        same_block, offset = start // l == start[:, None] // l, start % l
        member = []
        for own, sub in roles:
            reads = same_block.copy() if own else np.zeros((nq, nq), bool)
            if sub is not None:
                reads |= ((offset >= l - (sub + 1) * c) & (offset < l - sub * c))[None, :]
            if self.cfg.causal:
                reads &= np.tril(np.ones((nq, nq), bool))
            member.append(reads)
        member = np.stack(member)
        idx, count = compact_layout(member, int(member.sum(-1).max()))
        return block_sparse_attention(q, k, v, mask, idx, count, block_size=g,
                                      causal=self.cfg.causal, pallas=True)
