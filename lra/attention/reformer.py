"""Reformer LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer", §2-3).

Shared-QK attention (§2): one projection gives the queries, and the keys are the
normalised queries, k_j = q_j / ||q_j||, so that a query and its key hash alike.
Angular LSH (§2, lra.attention.lsh) puts each token in one of n_buckets buckets; tokens
are sorted by (bucket, position) and the sorted sequence is cut into chunks of m =
bucket_size; each chunk attends to itself and to the chunk before it (§2, Eq. 5):

    P_i = {j : floor(s_i / m) - 1 <= floor(s_j / m) <= floor(s_i / m)}

with s_i the sorted position of token i. The paper sets m = 2 l / n_buckets, so by default
n_buckets = 2 * ceil(max_len / bucket_size) (from cfg.max_len, never the runtime length).
Defaults: n_hashes = 2, bucket_size = 64 (the chunk length of the released configs).

Self-attention is masked (§2, "Causal masking for shared-QK attention"): a token does not
attend to itself unless nothing else is available; its own logit is set to -1e5 (the
paper's 10^5 penalty), which leaves it a zero weight whenever another key is in its windows.

Multi-round LSH (§2, "Multi-round LSH attention"): n_hashes independent rounds (their own
random rotations), P_i = union_r P_i^(r), combined by the softmax normalisers,
out_i = sum_r exp(z_r(i) - z(i)) o_r(i), with z_r the log-sum-exp of round r and
z = logsumexp_r z_r. Duplicates are handled exactly, as the paper's mask does: the logit of
pair (i, j) in each round is lowered by log N_ij, N_ij = |{r : j in P_i^(r)}|, so the result
is exactly the softmax over the union of i's windows.

Choices the paper leaves open:
- no wrap-around: the first chunk has no previous chunk (Eq. 5; the released code wraps);
- padded tokens get a bucket past every real one (lra.attention.lsh), so they sort last
  and never enter a real token's chunk; padded keys are masked;
- logits are q_i . k_j / sqrt(d) with the normalised keys k_j;
- the random rotations are drawn once at init and kept (a non-trainable variable);
- there is no causal form: which earlier keys share a chunk with a token depends on how
  many later tokens fall into lower buckets, so causal=True is refused.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.attention import register
from lra.attention.base import MultiHeadAttention, check_option, mask_value, pad_to_multiple
from lra.attention.lsh import hash_vectors, random_rotations, sort_by_bucket
from lra.errors import LRAError

SELF_LOGIT = -1e5


class LSHRotations(nnx.Variable):
    """Random rotations of the angular LSH [n_hashes, H, Dh, n_buckets / 2]; never trained."""


def _look_back(x):
    """[R, B, H, nc, m, ...] -> [R, B, H, nc, 2m, ...]: the previous chunk (zeros for the first)
    followed by the chunk itself."""
    prev = jnp.concatenate([jnp.zeros_like(x[:, :, :, :1]), x[:, :, :, :-1]], axis=3)
    return jnp.concatenate([prev, x], axis=4)


def lsh_attention(qk, v, mask, rotations, *, bucket_size: int, n_buckets: int):
    """Shared-QK LSH attention. qk, v: [B, L, H, Dh]; mask bool[B, L]; returns qk.dtype.

    `rotations` from lra.attention.lsh.random_rotations: one round per leading entry.
    """
    b, l, h, d = qk.shape
    m = bucket_size
    heads_first = lambda x: jnp.swapaxes(pad_to_multiple(x, m), 1, 2).astype(jnp.float32)
    q, vh = heads_first(qk), heads_first(v)
    mask = pad_to_multiple(mask, m, value=False)
    n = q.shape[2]
    rounds, chunks = rotations.shape[0], n // m

    buckets = hash_vectors(jnp.swapaxes(q, 1, 2), rotations, mask, n_buckets)
    perm, inverse = sort_by_bucket(buckets)  # [R, B, H, n]
    keys = q * jax.lax.rsqrt(jnp.maximum(jnp.sum(q * q, axis=-1, keepdims=True), 1e-12))
    sort = lambda x: jnp.take_along_axis(x[None], perm[..., None], axis=3)
    in_chunks = lambda x: x.reshape(rounds, b, h, chunks, m, *x.shape[4:])

    sq = in_chunks(sort(q))
    sk, sv = (_look_back(in_chunks(sort(x))) for x in (keys, vh))
    pos_q = in_chunks(perm)
    pos_k = _look_back(pos_q)
    real = jnp.broadcast_to(mask[None, :, None, :], perm.shape)
    ok = _look_back(in_chunks(jnp.take_along_axis(real, perm, axis=-1)))  # False before chunk 0

    # N_ij: in how many rounds j lies in i's window (its chunk or the one before).
    chunk_of = (inverse // m)[:, None]  # [R', 1, B, H, n]
    flat = lambda p: p.reshape(1, rounds, b, h, -1)
    cq = jnp.take_along_axis(chunk_of, flat(pos_q), axis=-1).reshape(-1, *pos_q.shape)
    ck = jnp.take_along_axis(chunk_of, flat(pos_k), axis=-1).reshape(-1, *pos_k.shape)
    gap = cq[..., :, None] - ck[..., None, :]
    copies = jnp.sum((gap == 0) | (gap == 1), axis=0)

    logits = jnp.einsum("rbhnqd,rbhnkd->rbhnqk", sq, sk) / math.sqrt(d)
    logits = jnp.where(pos_q[..., :, None] == pos_k[..., None, :], SELF_LOGIT, logits)
    logits = logits - jnp.log(jnp.maximum(copies, 1).astype(jnp.float32))
    logits = jnp.where(ok[..., None, :], logits, mask_value(jnp.float32))
    lse = jax.nn.logsumexp(logits, axis=-1)
    out = jnp.einsum("rbhnqk,rbhnkd->rbhnqd", jnp.exp(logits - lse[..., None]), sv)

    out = jnp.take_along_axis(out.reshape(rounds, b, h, n, d), inverse[..., None], axis=3)
    lse = jnp.take_along_axis(lse.reshape(rounds, b, h, n), inverse, axis=3)
    weights = jax.nn.softmax(lse, axis=0)
    out = jnp.sum(weights[..., None] * out, axis=0)
    return jnp.swapaxes(out, 1, 2)[:, :l].astype(qk.dtype)


@register("reformer", paper="Kitaev et al. 2020",
          complexity="O(n_hashes n bucket_size d) plus an O(n log n) sort",
          # 2 hash rounds x (own chunk + previous chunk)
          budget=lambda b, n: {"bucket_size": max(1, b // 4)})
class ReformerAttention(MultiHeadAttention):
    """Shared-QK multi-round LSH attention (Kitaev et al. 2020, §2-3)."""

    def __init__(
        self,
        cfg,
        *,
        rngs: nnx.Rngs,
        n_hashes: int = 2,
        bucket_size: int = 64,
        n_buckets: int | None = None,
    ):
        if cfg.causal:
            raise LRAError(
                "reformer has no causal form: which earlier keys share a sorted chunk with a "
                "token depends on later tokens; set model.causal=False"
            )
        for key, value in (("n_hashes", n_hashes), ("bucket_size", bucket_size)):
            check_option("reformer", key, value, value >= 1, ">= 1")
        super().__init__(cfg, rngs=rngs)
        del self.key
        self.bucket_size = bucket_size
        self.n_buckets = 2 * -(-cfg.max_len // bucket_size) if n_buckets is None else n_buckets
        self.rotations = LSHRotations(random_rotations(
            rngs.params(), cfg.num_heads, cfg.head_dim, self.n_buckets, n_hashes
        ))

    def project(self, x):
        """Shared QK: the one projection serves as queries and (normalised in the core) keys."""
        qk = self.heads(self.query(x))
        return qk, qk, self.heads(self.value(x))

    def core(self, q, k, v, mask, *, deterministic):
        return lsh_attention(
            q, v, mask, self.rotations[...], bucket_size=self.bucket_size, n_buckets=self.n_buckets
        )
