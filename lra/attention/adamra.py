"""AdaMRA (Zhang et al. 2021, "Adaptive Multi-Resolution Attention with Linear
Complexity", §3.2, Eq. 6-9, Fig. 2).

The layer forms Q, K, V = X W^Q, X W^K, X W^V, each n x d (Eq. 1). Its H heads are
resolutions, one per compression rate c_h (H = len(compression_rates), independent of
`model.num_heads`): head h compresses K and V by means over segments of 1/c_h tokens
into K~h, V~h (m_h = n c_h landmarks). Every head sees the whole d-wide Q and has S
subheads of width d / S with their own projections (Eq. 9):

    subhead_hs = Attention(Q^h W^Q_hs, K~h W^K_hs, V~h W^V_hs),     W^{Q,K,V}_hs: d x d/S
    Head_h     = Concat(subhead_h1, ..., subhead_hS)                              (width d)
    AdaMRA     = (sum_h Head_h) W^O                                      (Eq. 8, W^O: d x d)

Attention is kernel attention (Eq. 7), phi(q)^T sum_j phi(k~_j) v~_j^T /
(phi(q)^T sum_j phi(k~_j) + eps), computed as phi(Q) (phi(K~)^T V~): linear in n.
Routing (Eq. 6): P = softmax(Q W), W: d x H; query i goes to the head argmax_h P_ih and
is masked out of every other head, so Head_h is 0 for the queries not routed to h.
Cost O(H n d^2 + sum_h m_h d^2) (§3.4), linear in n.

Defaults: c = (1/2, 1/8, 1/32), S = 2, phi = ReLU, learned router. The paper does not
list its LRA model's rates; we read them from Table 4 model 3, whose Image and Text
accuracies (46.0, 68.4) are Table 1's. S = 2 is Fig. 2's example (the paper fixes no S;
with S = `model.num_heads` instead, the Nystromformer protocol's 2 heads give the same).
phi = ReLU is stated (§3.2, Table 5).

Options (the ablations of Tables 4-5):
- `compression_rates`: any tuple of 1/s rates, e.g. (1/2, 1/2, 1/2) (Table 4 model 9).
- `router`: "learned" (Eq. 6) | "random" (Table 5 "Rand"): each position is sent to a
  head drawn uniformly at init and kept (a non-trainable variable), so train and eval
  route alike; the gate is then 1, so compare it with `gate="mask"` to change only the
  routing. The paper does not say when Rand draws; this is our choice.
- `feature_map`: "relu" | "elu+1" (Katharopoulos et al. 2020) | "softmax" (Table 5
  "Softmax": each subhead is exact softmax attention, scaled by 1/sqrt(d/S), over its
  head's compressed keys: multi-resolution without the kernel; O(n sum_h m_h)).
- `gate`: how the learned router masks the heads. "probability" (default): the chosen
  head's output is scaled by P_ih, the top-1 gate of the Switch Transformer (Fedus et al.
  2021; the paper cites Shazeer et al. 2017, whose top-1 gate is exactly 1), so W is
  trained by the task loss. "mask": the paper's literal wording, the chosen head's output
  unscaled; argmax has no gradient, so W gets none (the routing still drifts as Q
  trains). We default to the gate because a W that is never trained cannot give the
  "learned routing" whose benefit Table 5 reports.

Choices where the paper is silent:
- Compression counts real tokens only (mask-aware means): segments start at position 0,
  a trailing segment averages the real tokens it holds and a segment without any is
  dropped, so padding changes no output (the paper's n is divisible by m_h; otherwise it
  would pad the input).
- Compressing then projecting equals projecting then compressing (means commute with
  linear maps): K~h W^K_hs is computed on the m_h landmarks, as §3.4's cost counts it.
- eps = 1e-6 in the denominator of Eq. 7 (phi = ReLU can zero it: the output is then 0).
- W^{Q,K,V}_hs have no bias (Eq. 9 writes none); the outer W^{Q,K,V,O} are the shared
  wrapper's projections, with bias as for every method.
- No causal form: a segment mean mixes future tokens.

On GPU/TPU (`impl="auto"` or "pallas") Eq. 7 with phi = ReLU or elu+1 runs through the
`kernels.linear` Pallas kernel, one kernel head per (head, subhead). The kernel takes
keys as long as the queries, so each head's compressed keys are padded with zero
features up to n (they add nothing to phi(K~)^T V~ or its normaliser).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lra.attention import register
from lra.attention.base import (
    AttentionConfig,
    MultiHeadAttention,
    check_option,
    dense_attention,
    segment_means,
    use_pallas,
)
from lra.errors import LRAError
from lra.kernels import _common
from lra.kernels.linear import linear_attention

FEATURE_MAPS = {"relu": jax.nn.relu, "elu+1": lambda x: jax.nn.elu(x) + 1.0, "softmax": None}
ROUTERS = ("learned", "random")
GATES = ("probability", "mask")


def segment_size(rate: float) -> int:
    """The segment length 1/c of a compression rate c (must be a whole number >= 1)."""
    size = round(1.0 / rate) if rate > 0 else 0
    if size < 1 or abs(size * rate - 1.0) > 1e-6:
        raise LRAError(f"model.attention_kwargs.compression_rates: rate {rate} must be 1/s "
                       "for a whole number s >= 1 (e.g. 0.125 for segments of 8 tokens)")
    return size


@register("adamra", paper="Zhang et al. 2021",
          complexity="O(H n d^2 + sum_h m_h d^2) time, O(H n d) memory")
class AdaMRAAttention(MultiHeadAttention):
    def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs,
                 compression_rates: tuple = (0.5, 0.125, 0.03125), subheads: int = 2,
                 feature_map: str = "relu", router: str = "learned",
                 gate: str = "probability", eps: float = 1e-6):
        if cfg.causal:
            raise LRAError("adamra has no causal form (segment means mix future tokens); "
                           "set model.causal=False")
        if not compression_rates:
            raise LRAError("model.attention_kwargs.compression_rates is empty; give one "
                           "rate per head, e.g. (0.5, 0.125, 0.03125)")
        self.segments = tuple(segment_size(c) for c in compression_rates)
        if subheads < 1 or cfg.dim % subheads:
            raise LRAError(f"model.attention_kwargs.subheads={subheads} must divide "
                           f"model.emb_dim={cfg.dim} (subheads are d / S wide)")
        for key, value, allowed in (("feature_map", feature_map, tuple(FEATURE_MAPS)),
                                    ("router", router, ROUTERS), ("gate", gate, GATES)):
            check_option("adamra", key, value, value in allowed, f"one of {', '.join(allowed)}")
        self.feature_map, self.router_kind, self.gate = feature_map, router, gate
        super().__init__(cfg, rngs=rngs)
        h, d = len(self.segments), cfg.dim
        self.subheads, self.eps = subheads, eps
        init = nnx.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
        # W^{Q,K,V}_hs of Eq. 9, stacked: [H, d, d], subhead s is columns s d/S .. (s+1) d/S.
        self.head_query = nnx.Param(init(rngs.params(), (h, d, d)))
        self.head_key = nnx.Param(init(rngs.params(), (h, d, d)))
        self.head_value = nnx.Param(init(rngs.params(), (h, d, d)))
        if router == "learned":
            self.router = nnx.Linear(d, h, use_bias=False,
                                     kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs)
        else:
            self.random_heads = nnx.Variable(
                jax.random.randint(rngs.params(), (cfg.max_len,), 0, h))

    def route(self, q: jax.Array) -> jax.Array:
        """Eq. 6 on Q [B, L, d]: the weight of each head in each query's output, [B, L, H]
        (the gate on the argmax head, 0 on the others)."""
        h = len(self.segments)
        if self.router_kind == "random":
            chosen = self.random_heads[...][: q.shape[1]]
            return jnp.broadcast_to(jax.nn.one_hot(chosen, h), (*q.shape[:2], h))
        probs = jax.nn.softmax(self.router(q), axis=-1)
        chosen = jax.nn.one_hot(jnp.argmax(probs, axis=-1), h, dtype=q.dtype)
        return probs * chosen if self.gate == "probability" else chosen

    def heads_out(self, q, k, v, mask) -> list[jax.Array]:
        """Head_h (Eq. 8-9) for every query, unrouted: a list of H arrays [B, L, d]."""
        b, l, d = q.shape
        s, ds = self.subheads, d // self.subheads
        split = lambda x: x.reshape(*x.shape[:-1], s, ds)  # noqa: E731
        wq, wk, wv = (w[...].astype(q.dtype) for w in
                      (self.head_query, self.head_key, self.head_value))
        qs, ks, vs, seg_masks = [], [], [], []
        for h, size in enumerate(self.segments):
            k_tilde, seg_mask = segment_means(k, mask, size)  # [B, m_h, d]
            v_tilde = segment_means(v, mask, size)[0]
            qs.append(split(q @ wq[h]))  # [B, L, S, d/S]
            ks.append(split(k_tilde @ wk[h]))  # [B, m_h, S, d/S]
            vs.append(split(v_tilde @ wv[h]))
            seg_masks.append(seg_mask)
        if self.feature_map == "softmax":
            return [dense_attention(qh, kh, vh, m).reshape(b, l, d)
                    for qh, kh, vh, m in zip(qs, ks, vs, seg_masks, strict=True)]
        phi = FEATURE_MAPS[self.feature_map]
        phi_q = [phi(x) for x in qs]
        phi_k = [phi(x) * m[:, :, None, None] for x, m in zip(ks, seg_masks, strict=True)]
        if use_pallas(self.cfg.impl):
            stack = lambda xs: jnp.concatenate(  # noqa: E731
                [_common.pad_axis(x, 1, l) for x in xs], axis=2)  # [B, L, H * S, d/S]
            out = linear_attention(stack(phi_q), stack(phi_k), stack(vs), eps=self.eps,
                                   impl="pallas")
            return list(out.reshape(b, l, len(self.segments), d).transpose(2, 0, 1, 3))
        outs = []
        for fq, fk, vh in zip(phi_q, phi_k, vs, strict=True):
            kv = jnp.einsum("bmsd,bmse->bsde", fk, vh)
            num = jnp.einsum("blsd,bsde->blse", fq, kv)
            den = jnp.einsum("blsd,bsd->bls", fq, jnp.sum(fk, axis=1))
            outs.append((num / (den[..., None] + self.eps)).reshape(b, l, d))
        return outs

    def core(self, q, k, v, mask, *, deterministic):
        """The wrapper's [B, L, heads, Dh] layout is read as the d-wide Q, K, V of Eq. 1.
        Computed in float32 at least (float64 inputs stay float64)."""
        shape, dtype = q.shape, q.dtype
        compute = jnp.promote_types(dtype, jnp.float32)
        q, k, v = (x.reshape(*shape[:2], -1).astype(compute) for x in (q, k, v))
        gate = self.route(q)
        out = sum(gate[:, :, h, None] * head
                  for h, head in enumerate(self.heads_out(q, k, v, mask)))
        return out.reshape(shape).astype(dtype)
