"""Performer: FAVOR+ attention (Choromanski et al. 2020, "Rethinking Attention with Performers").

softmax(Q K^T / sqrt(d)) V is estimated with positive orthogonal random features
(§2.3, Lemma 1; §2.4):

    Att(Q, K, V) ~= D^-1 (phi(Q) (phi(K)^T V)),   D = diag(phi(Q) (phi(K)^T 1_L)),
    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m),    x' = x d^(-1/4)

in O(n m d) time and memory (§2.1, Eq. 1, approximated as in §2.2). W holds
m = `nb_features` block-orthogonal Gaussian rows: 256 by default, the default of the
authors' reference implementation and of the Nystromformer LRA config (the `nystrom`
preset); AdaMRA Table 2 uses 32 (the bench variant `performer-32` in configs/models.py).
The feature map, its log-space stabilisation and the unidirectional
(causal) prefix sums (§2.2) are in `lra.attention.features`, where the choices left open
by the paper are stated.

Choices: one W per layer shared by all heads, as in the reference implementation. W is
drawn once at init from the `params` stream and kept fixed (a non-trainable variable).
With `redraw=True` (the paper's feature redrawing, taken to every training call) each
training call draws a fresh W from the `dropout` stream, while evaluation keeps the W
drawn at init, so it stays deterministic.
"""

from flax import nnx

from lra.attention import register
from lra.attention.base import AttentionConfig, MultiHeadAttention
from lra.attention.features import (
    RandomFeatures,
    favor_features,
    heads_first,
    kernel_attention,
    normalise,
    orthogonal_gaussian,
)
from lra.errors import LRAError


@register("performer", paper="Choromanski et al. 2020", complexity="O(n m d) time and memory",
          budget=lambda b, n: {"nb_features": b})
class PerformerAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs, nb_features: int = 256,
                 redraw: bool = False):
        super().__init__(cfg, rngs=rngs)
        if nb_features < 1:
            raise LRAError(f"performer: model.attention_kwargs.nb_features={nb_features} "
                           "must be >= 1")
        self.nb_features = nb_features
        self.redraw = redraw
        self.features = RandomFeatures(
            orthogonal_gaussian(rngs.params(), nb_features, cfg.head_dim))
        self.redraw_rngs = rngs["dropout"].fork() if redraw else None

    def projection(self, deterministic: bool):
        """The feature matrix W [m, Dh]: fixed, or fresh in training when `redraw`."""
        if self.redraw and not deterministic:
            return orthogonal_gaussian(self.redraw_rngs(), self.nb_features, self.cfg.head_dim)
        return self.features[...]

    def core(self, q, k, v, mask, *, deterministic):
        w = self.projection(deterministic)
        q, k, v = (heads_first(t) for t in (q, k, v))
        fq, _ = favor_features(q, w, is_query=True)
        fk, key_scale = favor_features(k, w, is_query=False)
        num, den, _ = kernel_attention(fq, fk, v, mask, key_log_scale=key_scale,
                                       causal=self.cfg.causal)
        return heads_first(normalise(num, den)).astype(q.dtype)
