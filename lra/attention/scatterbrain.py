"""Scatterbrain: sparse + low-rank attention (Chen et al. 2021, NeurIPS, §4, Algorithm 1).

The unnormalised attention matrix A = exp(Q K^T / sqrt(d)) is estimated by a low-rank
FAVOR+ term plus a sparse correction on a support set S (§4; §3 motivates the split with
a clustered generative model):

    A_hat = phi(Q) phi(K)^T + S,
    S_ij  = exp(q_i.k_j / sqrt(d)) - phi(q_i).phi(k_j)  for (i, j) in S, 0 elsewhere,
    out   = D^-1 (phi(Q) (phi(K)^T V) + S V),   D = diag(phi(Q) (phi(K)^T 1) + S 1),

so entries on the support are exact and the rest come from the kernel estimate; D has
only positive terms. phi is the Performer's positive orthogonal feature map, shared with
`performer` (lra.attention.features). Cost O(n m d) for the low-rank part plus
O(n b (d + m)) for the support, b the block size; no n x n matrix is formed.

Sparse support (`sparse`):
  * "lsh" (default; the paper's LSH, §4 and Algorithm 1): queries and keys are hashed with the
    same angular-LSH rotations (lra.attention.lsh, as in Reformer) after SMYRF's
    asymmetric XBOX+ transform (Daras et al. 2020), q -> [q, 0, sqrt(M^2 - |q|^2)] and
    k -> [k, sqrt(M^2 - |k|^2), 0] with M the largest real q or k norm of the example and
    head, so that hash collisions follow q.k rather than the angle (a choice, the one of
    the authors' code; hashing q and k plainly would group by angle only). Queries and keys
    are each sorted by (bucket, position) and cut into chunks of `block_size`; query chunk
    c and key chunk c form a block of the support (SMYRF's balanced clusters, as in the
    authors' code; no look-back chunk since queries and keys are not shared). With
    `n_hashes` > 1 the rounds' supports are united: a pair found in r rounds is weighted
    1/r in each. The number of buckets is max_len / block_size rounded up to an even
    number >= 2, from the config, so padding never changes it; padded tokens sort last.
    No causal form: which chunk a past token lands in depends on future tokens. Every
    tensor is built on copies sorted by bucket, so the wide features exist once per round.
  * "local" (the local-window variant of the authors' code): query i sees the keys
    j - i in [-w//2, w - 1 - w//2] with w = `block_size` (a window of w keys), computed in
    blocks of w//2 queries against three neighbouring key blocks. Causal: the window is
    intersected with j <= i and the low-rank part uses prefix sums.

Stabilisation (choice, stated because the paper does not fix it): phi(q_i).phi(k_j) is
kept as exp(a_i + c_j) fq_i.fk_j with a, c the per-row log-scales of the features, and
each query's sums are rescaled to one common offset, the largest of its low-rank scale
and its exact logits on the support, so the exact and the low-rank terms are on the same
scale and nothing overflows; offsets carry no gradient. Dropout is the wrapper's output
dropout, as for every method. The feature matrix and the rotations are drawn once at init
(non-trainable). nb_features defaults to int(d ln d) for head width d (110 at d = 32), the
default of the authors' feature map (HazyResearch/fly, SBPerformerFeatures) and the
m = Theta(d log d) of the Performer paper's uniform-convergence result; block_size = 64
and n_hashes = 1 are ours.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, pad_to_multiple
from lra.attention.features import (
    FEATURE_EPS,
    RandomFeatures,
    favor_features,
    heads_first,
    kernel_attention,
    normalise,
    orthogonal_gaussian,
)
from lra.attention.lsh import hash_vectors, random_rotations, sort_by_bucket
from lra.errors import LRAError

SPARSE = ("lsh", "local")
_NEG = -1e30


def _sparse_sums(logits, prod, a_q, c_k, v, allowed, counts=None):
    """S V and S 1 over blocks of the support, each query at its own offset u.

    logits: exact q.k / sqrt(d) [..., Cq, Ck]; prod: fq.fk [..., Cq, Ck] (stabilised
    features, phi(q).phi(k) = exp(a_q + c_k) prod); a_q: [..., Cq]; c_k: [..., Ck];
    v: [..., Ck, Dh]; allowed: bool, broadcastable to [..., Cq, Ck]; counts: rounds that
    share each pair, or None. Returns (num [..., Cq, Dh], den [..., Cq], u [..., Cq]),
    the true sums being exp(u) num and exp(u) den.
    """
    logits = jnp.where(allowed, logits, _NEG)
    low_log = jnp.where(allowed, a_q[..., :, None] + c_k[..., None, :], _NEG)
    u = lax.stop_gradient(jnp.maximum(jnp.max(logits, -1), jnp.max(low_log, -1)))
    s = jnp.exp(logits - u[..., None]) - prod * jnp.exp(low_log - u[..., None])
    s = jnp.where(allowed, s, 0.0)
    if counts is not None:
        s = s / counts
    return jnp.einsum("...ij,...jd->...id", s, v), jnp.sum(s, -1), u


def _combine(num_lr, den_lr, low_scale, num_s, den_s, u):
    """D^-1 (low-rank + sparse) on [B, H, L, .]; the sparse terms carry a leading round axis."""
    top = lax.stop_gradient(jnp.maximum(low_scale, jnp.max(u, axis=0)))
    w_low, w_s = jnp.exp(low_scale - top), jnp.exp(u - top)
    num = w_low[..., None] * num_lr + jnp.sum(w_s[..., None] * num_s, axis=0)
    den = w_low * den_lr + jnp.sum(w_s * den_s, axis=0)
    return normalise(num, den)


def xbox_plus(q, k, mask):
    """SMYRF's asymmetric transform: [q, 0, sqrt(M^2-|q|^2)], [k, sqrt(M^2-|k|^2), 0].

    q, k: [B, H, L, Dh]; M is the largest real q or k norm of each example and head.
    """
    nq, nk = jnp.sum(q * q, -1, keepdims=True), jnp.sum(k * k, -1, keepdims=True)
    real = mask[:, None, :, None]
    top = jnp.max(jnp.where(real, jnp.maximum(nq, nk), 0.0), axis=2, keepdims=True)
    zero = jnp.zeros_like(nq)
    return (jnp.concatenate([q, zero, jnp.sqrt(jnp.maximum(top - nq, 0.0))], -1),
            jnp.concatenate([k, jnp.sqrt(jnp.maximum(top - nk, 0.0)), zero], -1))


def _take(x, perm):
    """x: [B, H, L, ...] reordered by perm: int[R, B, H, L] -> [R, B, H, L, ...]."""
    perm = perm.reshape(perm.shape + (1,) * (x.ndim - 3))
    return jnp.take_along_axis(x[None], perm, axis=3)


def scatterbrain_lsh(q, k, v, mask, w, rotations, n_buckets: int, block: int, *,
                     eps: float = FEATURE_EPS):
    """Eq. 3 with the sorted-LSH support. q, k, v: [B, H, L, Dh], L a multiple of `block`.

    Everything is computed on copies sorted by bucket, so the wide features exist once
    per round; the low-rank sums, which do not depend on the order of the keys, use
    round 0's copies. Returns float32[B, H, L, Dh].
    """
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    b, h, length, d = q.shape
    qx, kx = xbox_plus(lax.stop_gradient(q), lax.stop_gradient(k), mask)
    perm_q, slot_q = sort_by_bucket(hash_vectors(heads_first(qx), rotations, mask, n_buckets))
    perm_k, slot_k = sort_by_bucket(hash_vectors(heads_first(kx), rotations, mask, n_buckets))
    qs, ks, vs = _take(q, perm_q), _take(k, perm_k), _take(v, perm_k)
    real = _take(jnp.broadcast_to(mask[:, None], (b, h, length)), perm_k)
    fq, a_q = favor_features(qs, w, is_query=True, eps=eps)
    fk, c_k = favor_features(ks, w, is_query=False)
    num_lr, den_lr, offset = kernel_attention(fq[0], fk[0], vs[0], real[0], key_log_scale=c_k[0])

    r, n = perm_q.shape[0], length // block
    group = lambda x: x.reshape(r, b, h, n, block, *x.shape[4:])
    counts = None
    if r > 1:  # the chunk of every token in every round, read at each block's queries and keys
        q_chunk = group(_take(jnp.moveaxis(slot_q // block, 0, -1), perm_q))
        k_chunk = group(_take(jnp.moveaxis(slot_k // block, 0, -1), perm_k))
        counts = jnp.sum(q_chunk[..., :, None, :] == k_chunk[..., None, :, :], axis=-1)
    num_s, den_s, u = _sparse_sums(
        jnp.einsum("rbhnid,rbhnjd->rbhnij", group(qs), group(ks)) / math.sqrt(d),
        jnp.einsum("rbhnim,rbhnjm->rbhnij", group(fq), group(fk)),
        group(a_q), group(c_k), group(vs), group(real)[..., None, :], counts)

    unsort = lambda x, slot: jnp.take_along_axis(
        x, slot.reshape(slot.shape + (1,) * (x.ndim - slot.ndim)), axis=slot.ndim - 1)
    flat = lambda x: x.reshape(r, b, h, length, *x.shape[5:])
    num_s, den_s, u = (unsort(flat(t), slot_q) for t in (num_s, den_s, u))
    low = [unsort(x, slot_q[0]) for x in (num_lr, den_lr, a_q[0] + offset)]
    return _combine(*low, num_s, den_s, u)


@jax.checkpoint
def _neighbour_dots(x, y):
    """x_i . y_j of each query block with key blocks n-1, n, n+1: [B, H, N, bs, 3 bs].

    Rematerialised in the backward pass, so the shifted copies of y are not kept.
    """
    dot = lambda a: jnp.einsum("bhnif,bhnjf->bhnij", x, a)
    return jnp.concatenate([dot(_shift_blocks(y, 1)), dot(y), dot(_shift_blocks(y, -1))], -1)


def _shift_blocks(x, step: int):
    """Block n of the result is block n - step of x (zeros past the ends); x: [B, H, N, ...]."""
    widths = [(0, 0), (0, 0), (max(step, 0), max(-step, 0))] + [(0, 0)] * (x.ndim - 3)
    padded = jnp.pad(x, widths)
    return padded[:, :, :x.shape[2]] if step > 0 else padded[:, :, -step:]


def _neighbour_blocks(x):
    """Key-side values of blocks n-1, n, n+1: [B, H, N, bs, ...] -> [B, H, N, 3 bs, ...]."""
    return jnp.concatenate([_shift_blocks(x, 1), x, _shift_blocks(x, -1)], axis=3)


def scatterbrain_local(q, k, v, mask, w, window: int, *, causal: bool = False,
                       eps: float = FEATURE_EPS):
    """Eq. 3 with a local-window support. q, k, v: [B, H, L, Dh], L a multiple of window//2.

    Key j is in query i's support when j - i is in [-window//2, window - 1 - window//2]
    (and j <= i when causal); window = 0 gives an empty support, i.e. the Performer.
    Returns float32[B, H, L, Dh].
    """
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    b, h, length, d = q.shape
    bs = max(1, window // 2)
    fq, a_q = favor_features(q, w, is_query=True, eps=eps)
    fk, c_k = favor_features(k, w, is_query=False)
    num_lr, den_lr, offset = kernel_attention(fq, fk, v, mask, key_log_scale=c_k,
                                              causal=causal)

    blocks = lambda x: x.reshape(x.shape[0], x.shape[1], length // bs, bs, *x.shape[3:])
    rel = jnp.arange(3 * bs)[None, :] - bs - jnp.arange(bs)[:, None]
    allowed = (rel >= -(window // 2)) & (rel <= window - 1 - window // 2)
    if causal:
        allowed = allowed & (rel <= 0)
    allowed = allowed & _neighbour_blocks(blocks(mask[:, None]))[..., None, :]
    num_s, den_s, u = _sparse_sums(
        _neighbour_dots(blocks(q), blocks(k)) / math.sqrt(d),
        _neighbour_dots(blocks(fq), blocks(fk)),
        blocks(a_q), _neighbour_blocks(blocks(c_k)), _neighbour_blocks(blocks(v)), allowed)
    flat = lambda x: x.reshape(1, b, h, length, *x.shape[4:])
    return _combine(num_lr, den_lr, a_q + offset, flat(num_s), flat(den_s), flat(u))


def default_features(head_dim: int) -> int:
    """int(d ln d) random features for head width d, at least one (see the module docstring)."""
    return max(1, int(head_dim * math.log(head_dim)))


@register("scatterbrain", paper="Chen et al. 2021",
          complexity="O(n m (d + b)) time, O(n (m + b)) memory: m features, b block")
class ScatterbrainAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, nb_features: int | None = None,
                 sparse: str = "lsh", block_size: int = 64, n_hashes: int = 1):
        super().__init__(cfg, rngs=rngs)
        if nb_features is None:
            nb_features = default_features(cfg.head_dim)
        if sparse not in SPARSE:
            raise LRAError(f"scatterbrain: model.attention_kwargs.sparse={sparse!r} is not one "
                           f"of {', '.join(SPARSE)}")
        for key, value in (("nb_features", nb_features), ("block_size", block_size),
                           ("n_hashes", n_hashes)):
            if value < 1:
                raise LRAError(f"scatterbrain: model.attention_kwargs.{key}={value} must be >= 1")
        if cfg.causal and sparse == "lsh":
            raise LRAError("scatterbrain with sparse='lsh' has no causal form (LSH chunks depend "
                           "on future tokens); set model.attention_kwargs.sparse='local' or "
                           "model.causal=False")
        self.sparse, self.block_size = sparse, block_size
        self.features = RandomFeatures(orthogonal_gaussian(rngs.params(), nb_features,
                                                           cfg.head_dim))
        self.n_buckets = 2 * max(1, -(-cfg.max_len // (2 * block_size)))
        self.rotations = RandomFeatures(random_rotations(
            rngs.params(), cfg.num_heads, cfg.head_dim + 2, self.n_buckets, n_hashes)
        ) if sparse == "lsh" else None

    def core(self, q, k, v, mask, *, deterministic):
        length = q.shape[1]
        block = self.block_size if self.sparse == "lsh" else max(1, self.block_size // 2)
        qp, kp, vp = (heads_first(pad_to_multiple(t, block)) for t in (q, k, v))
        mp = pad_to_multiple(mask, block, value=False)
        w = self.features[...]
        if self.sparse == "lsh":
            out = scatterbrain_lsh(qp, kp, vp, mp, w, self.rotations[...], self.n_buckets, block)
        else:
            out = scatterbrain_local(qp, kp, vp, mp, w, self.block_size, causal=self.cfg.causal)
        return heads_first(out)[:, :length].astype(q.dtype)
