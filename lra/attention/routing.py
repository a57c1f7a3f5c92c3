"""Routing Transformer attention (Roy et al. 2020, "Efficient Content-Based Sparse Attention
with Routing Transformers", TACL 2021, §4).

Routing heads (§4, routing attention): the queries and keys of a routing head are compared
with k centroids mu_1..mu_k of that head, and a query attends to the keys routed to the
same centroid,

    X_i = {j : mu(Q_i) = mu(K_j)},    out_i = softmax_{j in X_i}(s(Q_i, K_j)) V_j.

`score` picks the vectors that route and attend (default "layernorm", the released code):
- "layernorm": Q and K are each layer-normalised over the head dimension without scale or
  bias (eps 1e-6); routing scores are LN(Q_i) . mu and LN(K_j) . mu, and the logits are
  s = LN(Q_i) . LN(K_j), with no further 1/sqrt(d). This is what the released code
  (google-research `routing_transformer/utils.py`, the clustered-attention helper) does:
  it scales q by d^-1/2, then normalises q and k and uses the normalised pair both for the
  routing and for the dot-product attention, so the norm undoes the 1/sqrt(d) (only its
  epsilon, d * 1e-6 for q, differs: not reproduced). The centroids are not re-normalised:
  they start layer-normalised (normal draws, as released) and then move by the EMA below.
- "raw": the projected Q and K route (Q_i . mu, K_j . mu) and attend with the usual
  s = Q_i . K_j / sqrt(d), so one cluster with w = n is exactly softmax attention.
Scores are plain dot products, as in the released nearest-centroid code (the nearest
centroid in Euclidean distance when the centroids have equal norms, as at initialisation).

Balanced routing, as in the released implementation: each centroid takes the w queries and
the w keys with the highest scores (top-w), and attention runs within each of these k
groups: O(k w^2) = O(n w). With k = sqrt(n) clusters the cost is O(n^1.5 d) (§4), so the
default is num_clusters = round(sqrt(max_len)), and w = ceil(max_len / num_clusters); both
come from cfg.max_len, never from the runtime length. A query picked by several centroids
averages their outputs; a query picked by none gets a zero output from the routing heads
(the released code divides the scattered sum by count + 0.01; here by the exact count).

Centroids (§4, online mini-batch k-means): only in training, each real token's routing
vector (LN(Q), LN(K) under "layernorm", the raw Q, K under "raw") is assigned to its
highest-scoring centroid, and every centroid follows the exponential moving average
mu <- lambda mu + (1 - lambda) / 2 (mean of its queries + mean of its keys), never
gradients (a non-trainable `Centroids` variable, inputs behind stop_gradient). The decay
lambda = 0.999 is the "decay" hyperparameter of the base hparams set of the released
configs (`routing_transformer/sparse_transformer.py`, sparse_transformer_local, inherited
by every routing config there; the function signatures' own default, 0.99, is overridden).
The optional commitment loss beta * (mean ||Q_i - mu(Q_i)||^2 + mean ||K_j - mu(K_j)||^2)
on the same routing vectors, beta = 1e-4 as in the same hparams set, is sown as "aux_loss"
in training (the trainer collects it with nnx.capture).

Local heads (the experiments of §5 and the released configs put half the heads on local
attention and half on routing): the first `num_local_heads` heads attend within blocks of
`local_window` positions, each block seeing itself and its two neighbouring blocks (query
block and memory flange of 256 in the released configs): a band layout of the shared
block-sparse code (`lra.attention.blocksparse`, XLA). They always use raw q . k / sqrt(d).

Choices the paper leaves open:
- the EMA moves towards per-batch means, not sums (the released code keeps EMA sums and
  EMA counts and divides them): centroids stay on the scale of the routing vectors
  whatever the batch size; a centroid that received nothing is left unchanged;
- padding never routes: padded positions score below every real token, are never kept as
  queries, are masked as keys and are left out of the k-means statistics;
- keys are separate (shared_qk=False), as in the released encoder self-attention;
- there is no causal form: which tokens a centroid picks depends on the whole sequence,
  later tokens included, so causal=True is refused.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra.attention import register
from lra.attention.base import MultiHeadAttention, check_option, mask_value, pad_to_multiple
from lra.attention.blocksparse import band_layout, block_sparse_attention
from lra.errors import LRAError

SCORES = ("layernorm", "raw")


class Centroids(nnx.Variable):
    """Online k-means centroids [routing heads, clusters, Dh]: EMA updates only, no gradient."""


def normalise(x, eps: float = 1e-6):
    """Layer norm over the last axis without scale or bias, in float32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _nearest(x, centroids, mask):
    """One-hot highest-scoring centroid of each real token: f32[B, H, L, C] (zero for padding)."""
    scores = jnp.einsum("bhld,hcd->bhlc", x, centroids)
    onehot = jax.nn.one_hot(jnp.argmax(scores, axis=-1), centroids.shape[1])
    return onehot * mask[:, None, :, None]


def kmeans_update(centroids, xq, xk, mask, decay: float):
    """One EMA step of the centroids towards the mean query and mean key of each cluster.

    centroids: [H, C, D]; xq, xk: routing vectors f32[B, H, L, D]; mask: bool[B, L].
    """
    means = []
    for x in (xq, xk):
        onehot = _nearest(x, centroids, mask)
        sums = jnp.einsum("bhlc,bhld->hcd", onehot, x)
        counts = jnp.sum(onehot, axis=(0, 2))[..., None]
        means.append((sums / jnp.maximum(counts, 1.0), counts > 0))
    (mq, has_q), (mk, has_k) = means
    target = jnp.where(has_q & has_k, (mq + mk) / 2, jnp.where(has_q, mq, mk))
    moved = decay * centroids + (1 - decay) * target
    return jnp.where(has_q | has_k, moved, centroids)


def commitment_loss(x, centroids, mask):
    """Mean over real tokens and features of ||x - sg(mu(x))||^2 (x routing vectors [B, H, L, D])."""
    onehot = _nearest(x, centroids, mask)
    assigned = jnp.einsum("bhlc,hcd->bhld", onehot, centroids)
    err = jnp.sum(jnp.square(x - assigned), axis=-1) * mask[:, None, :]
    return jnp.sum(err) / (jnp.maximum(jnp.sum(mask), 1) * x.shape[1] * x.shape[-1])


def _take(x, idx):
    """x [B, H, L, ...] at idx int[B, H, C, W] along L -> [B, H, C, W, ...]."""
    b, h, c, w = idx.shape
    flat = idx.reshape(b, h, c * w, *([1] * (x.ndim - 3)))
    return jnp.take_along_axis(x, flat, axis=2).reshape(b, h, c, w, *x.shape[3:])


def routed_attention(q, k, v, mask, centroids, window: int, scale: float):
    """Attention within each centroid's top-`window` queries and keys. Heads-first f32 inputs.

    q, k, v: [B, H, L, D] (q, k the routing vectors); mask: bool[B, L]; centroids [H, C, D].
    Logits are scale * q . k. Returns f32[B, H, L, D]: each real query's outputs averaged
    over the centroids that picked it, zero where none did.
    """
    b, h, l, d = q.shape
    neg = mask_value(jnp.float32)
    real = jnp.broadcast_to(mask[:, None, :], (b, h, l))

    def pick(x):
        scores = jnp.einsum("bhld,hcd->bhcl", x, centroids)
        return jax.lax.top_k(jnp.where(real[:, :, None, :], scores, neg), window)[1]

    qi, ki = pick(q), pick(k)
    logits = jnp.einsum("bhcqd,bhckd->bhcqk", _take(q, qi), _take(k, ki)) * scale
    logits = jnp.where(_take(real, ki)[:, :, :, None, :], logits, neg)
    out = jnp.einsum("bhcqk,bhckd->bhcqd", jax.nn.softmax(logits, axis=-1), _take(v, ki))
    keep = _take(real, qi).astype(jnp.float32)
    rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None], qi.reshape(b, h, -1))
    total = jnp.zeros_like(q).at[rows].add((out * keep[..., None]).reshape(b, h, -1, d))
    count = jnp.zeros((b, h, l), jnp.float32).at[rows].add(keep.reshape(b, h, -1))
    return total / jnp.maximum(count, 1.0)[..., None]


@register("routing", paper="Roy et al. 2020",
          complexity="O(n^1.5 d) with sqrt(n) clusters; local heads O(n w d)",
          # routing heads: clusters of n / num_clusters; local heads: 3 blocks of local_window.
          # score=raw: the default (layernorm) attends with LN(q).LN(k), not the softmax measured
          budget=lambda b, n: {"num_clusters": max(1, n // b), "local_window": max(1, b // 3),
                               "score": "raw"})
class RoutingAttention(MultiHeadAttention):
    """Local heads plus k-means routing heads (Roy et al. 2020, §4)."""

    def __init__(
        self,
        cfg,
        *,
        rngs: nnx.Rngs,
        num_clusters: int | None = None,
        num_local_heads: int | None = None,
        local_window: int = 256,
        shared_qk: bool = False,
        score: str = "layernorm",
        decay: float = 0.999,
        commitment: float = 1e-4,
    ):
        if cfg.causal:
            raise LRAError(
                "routing has no causal form: balanced routing lets later tokens change which "
                "cluster an earlier token joins; set model.causal=False"
            )
        clusters = round(math.sqrt(cfg.max_len)) if num_clusters is None else num_clusters
        local = cfg.num_heads // 2 if num_local_heads is None else num_local_heads
        checks = (
            ("score", score, score in SCORES, f"one of {', '.join(SCORES)}"),
            ("num_clusters", clusters, clusters >= 1, ">= 1"),
            ("local_window", local_window, local_window >= 1, ">= 1"),
            ("num_local_heads", local, 0 <= local < cfg.num_heads,
             f"in [0, model.num_heads={cfg.num_heads}) (at least one head routes)"),
            ("decay", decay, 0 <= decay <= 1, "in [0, 1]"),
            ("commitment", commitment, commitment >= 0, ">= 0"),
        )
        for name, value, ok, allowed in checks:
            check_option("routing", name, value, ok, allowed)
        super().__init__(cfg, rngs=rngs)
        if shared_qk:
            del self.key
        self.shared_qk = shared_qk
        self.num_local_heads = local
        self.local_window = local_window
        self.window = -(-cfg.max_len // clusters)
        self.score = score
        self.decay = decay
        self.commitment = commitment
        shape = (cfg.num_heads - local, clusters, cfg.head_dim)
        # Drawn flat: on CPU, XLA compiles an N-d normal draw far more slowly than a 1-d one.
        draw = jax.random.normal(rngs.params(), (math.prod(shape),)).reshape(shape)
        self.centroids = Centroids(normalise(draw))

    def project(self, x):
        q, v = self.heads(self.query(x)), self.heads(self.value(x))
        return (q, q, v) if self.shared_qk else (q, self.heads(self.key(x)), v)

    def core(self, q, k, v, mask, *, deterministic):
        nl, l = self.num_local_heads, q.shape[1]
        parts = []
        if nl:
            idx, count = band_layout(-(-l // self.local_window), 1, 1)
            parts.append(block_sparse_attention(q[:, :, :nl], k[:, :, :nl], v[:, :, :nl], mask,
                                                idx, count, block_size=self.local_window))
        heads_first = lambda x: jnp.swapaxes(pad_to_multiple(x[:, :, nl:], self.window), 1, 2)
        qr, kr, vr = (heads_first(x).astype(jnp.float32) for x in (q, k, v))
        m = pad_to_multiple(mask, self.window, value=False)
        if self.score == "layernorm":
            qr, kr, scale = normalise(qr), normalise(kr), 1.0
        else:
            scale = 1 / math.sqrt(q.shape[-1])
        centroids = jax.lax.stop_gradient(self.centroids[...])
        routed = routed_attention(qr, kr, vr, m, centroids, self.window, scale)
        parts.append(jnp.swapaxes(routed, 1, 2)[:, :l])
        if not deterministic:
            self._train_step(qr, kr, m, centroids)
        return jnp.concatenate(parts, axis=2).astype(q.dtype)

    def _train_step(self, xq, xk, mask, centroids):
        """EMA step of the centroids and, if enabled, the sown commitment loss."""
        stopped = (jax.lax.stop_gradient(x) for x in (xq, xk))
        self.centroids[...] = kmeans_update(centroids, *stopped, mask, self.decay)
        if self.commitment > 0:
            loss = commitment_loss(xq, centroids, mask) + commitment_loss(xk, centroids, mask)
            self.sow(nnx.Intermediate, "aux_loss", self.commitment * loss)
