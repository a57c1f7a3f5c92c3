"""Scatterbrain: sparse + low-rank attention (Chen et al. 2021, NeurIPS, §4, Algorithm 1).

The unnormalised attention matrix A = exp(Q K^T / sqrt(d)) is estimated by a low-rank
random-feature term plus a sparse correction on a support set S (§4; §3 motivates the
split with a clustered generative model):

    A_hat = phi(Q) phi(K)^T + S,
    S_ij  = exp(q_i.k_j / sqrt(d)) - phi(q_i).phi(k_j)  for (i, j) in S, 0 elsewhere,
    out   = D^-1 (phi(Q) (phi(K)^T V) + S V),   D = diag(phi(Q) (phi(K)^T 1) + S 1),

so entries on the support are exact and the rest come from the kernel estimate, which is
unbiased. Cost O(n m d) for the low-rank part plus O(n b (d + m)) per hash round for the
support, b the block size; no n x n matrix is formed.

Feature map (`feature_map`): phi is the Performer's positive random-feature map
(lra.attention.features, shared with `performer`; orthogonal rows, log-space
stabilisation) with the query-side stabiliser `eps`.
  * "hyperbolic" (default, the authors' feature map, SBPerformerFeatures with cosh=True in
    HazyResearch/fly): m/2 orthogonal directions w and their negatives, phi(x) =
    [exp(w x - |x|^2/2), exp(-w x - |x|^2/2)] / sqrt(m) (Performer's hyperbolic variant);
    `nb_features` = m must then be even.
  * "positive": m orthogonal directions, the `performer` estimator itself.

Sparse support (`sparse`):
  * "lsh" (default; §4 and Algorithm 1, with the clustering of the authors' code,
    SBSmyrfAttention in HazyResearch/fly, taken from SMYRF, Daras et al. 2020): queries and
    keys first go through SMYRF's asymmetric XBOX+ transform (`xbox_plus`), which makes the
    Euclidean distance of q' and k' fall as q.k grows; each of `n_hashes` rounds projects
    them on one random Gaussian direction (E2LSH), sorts queries and keys separately by
    that projection (padded tokens last) and cuts both orders into chunks of `block_size`;
    query chunk c and key chunk c form one block of the support (balanced clusters). The
    rounds' supports are united: a pair found in r rounds is weighted 1/r in each, so it
    counts once. No causal form: a token's chunk depends on future tokens.
  * "local" (the authors' SBLocalAttention): query i sees the keys j - i in
    [-w//2, w - 1 - w//2], w = `block_size`, computed in blocks of w//2 queries against
    three neighbouring key blocks. Causal: the window is intersected with j <= i and the
    low-rank part uses prefix sums.

Defaults, from the authors' LRA experiment configs (HazyResearch/fly,
configs/experiment/lra/<task>/sbsmyrf.yaml; sblocal.yaml for "local"): every task uses
2 hash rounds, softmax_eps 1e-4 and as many features as the cluster size; the cluster
size is 32 for ListOps, 16 for Text, 64 for Retrieval, 16 for Image and for Pathfinder
(the per-task values are presets at sizes nystrom and lra, configs/models.py). The authors have no
default cluster size; 16, the value of three of their five tasks, is ours. Their "local"
configs pair a window of 2c with c features, hence nb_features defaults to block_size
with "lsh" and to block_size / 2 with "local" (rounded up to an even number).

Choices where the authors' code differs or the paper is silent:
  * the random directions and features are drawn once at init and kept (non-trainable);
    the authors' code draws fresh hash directions at every call, one per round shared by
    all heads; here each head has its own;
  * eps as in the authors' softmax_kernel: each query's features, divided by their largest
    entry, get eps / sqrt(m) added (the `performer` adds eps itself); the authors add it to
    the key features too, here only queries get it (lra.attention.features);
  * stabilisation: phi(q_i).phi(k_j) is kept as exp(a_i + c_j) fq_i.fk_j with a, c the
    per-row log-scales of the features, and each query's sums are rescaled to one common
    offset, the largest of its low-rank scale and its exact logits on the support, so the
    exact and the low-rank terms are on the same scale and nothing overflows; offsets
    carry no gradient. Dropout is the wrapper's output dropout, as for every method.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention, check_option, pad_to_multiple
from lra.attention.features import (
    FEATURE_EPS,
    RandomFeatures,
    favor_features,
    heads_first,
    kernel_attention,
    normalise,
    orthogonal_gaussian,
)
from lra.attention.lsh import sort_by_bucket
from lra.errors import LRAError

SPARSE = ("lsh", "local")
FEATURE_MAPS = ("hyperbolic", "positive")
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

    q, k: [B, H, L, Dh]; M^2 = max |q|^2 + max |k|^2 of each example and head, as the
    authors' XBOXPLUS, but over the real tokens only (theirs includes padding), so padding
    never changes the hashing. Then |q'| = |k'| = M and q'.k' = q.k, so the distance
    |q' - k'|^2 = 2 M^2 - 2 q.k falls as q.k grows.
    """
    nq, nk = jnp.sum(q * q, -1, keepdims=True), jnp.sum(k * k, -1, keepdims=True)
    real = mask[:, None, :, None]
    top = sum(jnp.max(jnp.where(real, x, 0.0), axis=2, keepdims=True) for x in (nq, nk))
    zero = jnp.zeros_like(nq)
    return (jnp.concatenate([q, zero, jnp.sqrt(jnp.maximum(top - nq, 0.0))], -1),
            jnp.concatenate([k, jnp.sqrt(jnp.maximum(top - nk, 0.0)), zero], -1))


def _take(x, perm):
    """x: [B, H, L, ...] reordered by perm: int[R, B, H, L] -> [R, B, H, L, ...]."""
    perm = perm.reshape(perm.shape + (1,) * (x.ndim - 3))
    return jnp.take_along_axis(x[None], perm, axis=3)


def lsh_order(qx, kx, directions, mask):
    """Each round's order of the queries and of the keys along one random direction.

    qx, kx: [B, H, L, Dh + 2] (after `xbox_plus`); directions: [R, H, Dh + 2]. A token's
    hash is its projection a_r . x (E2LSH; its offset and width do not change the order);
    padded tokens sort last. Returns (perm_q, slot_q, perm_k, slot_k), int32[R, B, H, L].
    """
    project = lambda x: jnp.where(mask[None, :, None, :],
                                  jnp.einsum("bhld,rhd->rbhl", x, directions), jnp.inf)
    return (*sort_by_bucket(project(qx)), *sort_by_bucket(project(kx)))


def scatterbrain_lsh(q, k, v, mask, w, directions, block: int, *,
                     eps: float = FEATURE_EPS):
    """The estimator with the sorted-LSH support. q, k, v: [B, H, L, Dh], L a multiple of
    `block`.

    Everything is computed on copies sorted by hash, so the wide features exist once
    per round; the low-rank sums, which do not depend on the order of the keys, use
    round 0's copies. Returns float32[B, H, L, Dh].
    """
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    b, h, length, d = q.shape
    qx, kx = xbox_plus(lax.stop_gradient(q), lax.stop_gradient(k), mask)
    perm_q, slot_q, perm_k, slot_k = lsh_order(qx, kx, directions, mask)
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


def feature_matrix(key, nb_features: int, head_dim: int, feature_map: str) -> jax.Array:
    """W [m, Dh]: m orthogonal Gaussian rows, or m/2 rows and their negatives (hyperbolic)."""
    if feature_map == "positive":
        return orthogonal_gaussian(key, nb_features, head_dim)
    rows = orthogonal_gaussian(key, nb_features // 2, head_dim)
    return jnp.concatenate([rows, -rows])


@register("scatterbrain", paper="Chen et al. 2021",
          complexity="O(n m (d + b)) time, O(n (m + b)) memory: m features, b block",
          # half of each part: b/2 features (Performer: b), 2 rounds of chunks of b/4
          budget=lambda b, n: {"nb_features": max(1, b // 2), "block_size": max(1, b // 4),
                               "n_hashes": 2, "feature_map": "positive"})
class ScatterbrainAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, nb_features: int | None = None,
                 sparse: str = "lsh", block_size: int = 16, n_hashes: int = 2,
                 eps: float = 1e-4, feature_map: str = "hyperbolic"):
        if nb_features is None:
            share = block_size if sparse == "lsh" else block_size // 2
            nb_features = max(2, share + share % 2)  # even, for the hyperbolic pairs
        for key, value, ok, allowed in (
            ("sparse", sparse, sparse in SPARSE, f"one of {', '.join(SPARSE)}"),
            ("feature_map", feature_map, feature_map in FEATURE_MAPS,
             f"one of {', '.join(FEATURE_MAPS)}"),
            ("block_size", block_size, block_size >= 1, "an integer >= 1"),
            ("n_hashes", n_hashes, n_hashes >= 1, "an integer >= 1"),
            ("eps", eps, eps >= 0, "a number >= 0"),
            ("nb_features", nb_features, nb_features >= 1, "an integer >= 1"),
            ("nb_features", nb_features, feature_map == "positive" or nb_features % 2 == 0,
             "even with feature_map='hyperbolic' (features come in +w, -w pairs), or set "
             "feature_map='positive'"),
        ):
            check_option("scatterbrain", key, value, ok, allowed)
        if cfg.causal and sparse == "lsh":
            raise LRAError("scatterbrain with sparse='lsh' has no causal form (LSH chunks depend "
                           "on future tokens); set model.attention_kwargs.sparse='local' or "
                           "model.causal=False")
        super().__init__(cfg, rngs=rngs)
        self.sparse, self.block_size, self.eps = sparse, block_size, eps
        self.features = RandomFeatures(feature_matrix(rngs.params(), nb_features, cfg.head_dim,
                                                      feature_map))
        self.directions = RandomFeatures(jax.random.normal(
            rngs.params(), (n_hashes, cfg.num_heads, cfg.head_dim + 2))) if sparse == "lsh" else None

    def core(self, q, k, v, mask, *, deterministic):
        length = q.shape[1]
        block = self.block_size if self.sparse == "lsh" else max(1, self.block_size // 2)
        qp, kp, vp = (heads_first(pad_to_multiple(t, block)) for t in (q, k, v))
        mp = pad_to_multiple(mask, block, value=False)
        w = self.features[...]
        eps = self.eps / math.sqrt(w.shape[0])  # the authors' eps / sqrt(m), see the docstring
        if self.sparse == "lsh":
            out = scatterbrain_lsh(qp, kp, vp, mp, w, self.directions[...], block, eps=eps)
        else:
            out = scatterbrain_local(qp, kp, vp, mp, w, self.block_size, causal=self.cfg.causal,
                                     eps=eps)
        return heads_first(out)[:, :length].astype(q.dtype)
