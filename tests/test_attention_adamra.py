"""AdaMRA against a float64 reference written from the paper's Eq. 6-9, plus options and errors.

The reference works on the layer's input x, one query, one head and one subhead at a time,
with the equations' own shapes (W^Q_hs: d x d/S, head outputs concatenated over subheads,
summed over heads, then W^O); it only reads the layer's weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra.attention import AttentionConfig
from lra.attention.adamra import AdaMRAAttention
from lra.errors import LRAError

B, L, D = 2, 20, 8
LENGTHS = (20, 13)
EPS = 1e-6


def build(rates=(0.5, 0.125, 0.03125), num_heads=2, dim=D, seed=0, **kwargs):
    cfg = AttentionConfig(dim=dim, num_heads=num_heads, max_len=32)
    return AdaMRAAttention(cfg, rngs=nnx.Rngs(seed), compression_rates=rates, **kwargs)


def inputs(seed=1):
    x = jax.random.normal(jax.random.key(seed), (B, L, D))
    mask = jnp.arange(L)[None, :] < jnp.array(LENGTHS)[:, None]
    return x, mask


def f64(x):
    return np.asarray(x[...], np.float64)


def paper_adamra(model, x, n, rates, subheads, feature_map, gate):
    """Eq. 1 and 6-9 for one example whose first n tokens are real; rows past n are 0."""
    x = f64(x)[:n]
    d = x.shape[1]
    dv = d // subheads
    q, k, v = (x @ f64(lin.kernel) + f64(lin.bias) for lin in (model.query, model.key, model.value))
    phi = {"relu": lambda t: np.maximum(t, 0), "elu+1": lambda t: np.where(t > 0, t + 1, np.exp(t))}
    out = np.zeros((L, d))
    for i in range(n):
        if hasattr(model, "router"):
            logits = q[i] @ f64(model.router.kernel)  # Eq. 6: P = softmax(Q W)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            head = int(np.argmax(p))
            weight = p[head] if gate == "probability" else 1.0
        else:
            head, weight = int(np.asarray(model.random_heads[...])[i]), 1.0
        size = round(1 / rates[head])
        # segment means over the real tokens: m_h = ceil(n c_h) landmarks
        k_c = np.stack([k[s:s + size].mean(0) for s in range(0, n, size)])
        v_c = np.stack([v[s:s + size].mean(0) for s in range(0, n, size)])
        parts = []
        for s in range(subheads):
            cols = slice(s * dv, (s + 1) * dv)
            qs = q[i] @ f64(model.head_query)[head][:, cols]  # Eq. 9: Q^h W^Q_hs
            ks = k_c @ f64(model.head_key)[head][:, cols]
            vs = v_c @ f64(model.head_value)[head][:, cols]
            if feature_map == "softmax":
                w = np.exp(ks @ qs / np.sqrt(dv) - (ks @ qs / np.sqrt(dv)).max())
                parts.append(w @ vs / w.sum())
            else:  # Eq. 7
                w = phi[feature_map](ks) @ phi[feature_map](qs)
                parts.append(w @ vs / (w.sum() + EPS))
        out[i] = weight * np.concatenate(parts)  # Eq. 8: the other heads are masked out: 0
    return out @ f64(model.out.kernel) + f64(model.out.bias)  # (sum_h Head_h) W^O


def check_against_paper(model, rates, subheads=2, feature_map="relu", gate="probability"):
    x, mask = inputs()
    got = np.asarray(model(x, mask, deterministic=True), np.float64)
    for b, n in enumerate(LENGTHS):
        ref = paper_adamra(model, x[b], n, rates, subheads, feature_map, gate)
        np.testing.assert_allclose(got[b, :n], ref[:n], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("feature_map", ["relu", "elu+1", "softmax"])
@pytest.mark.parametrize("gate", ["probability", "mask"])
def test_matches_the_paper_equations(feature_map, gate):
    """Default rates (segments 2, 8, 32: partial and single segments), S = 2, padding."""
    rates = (0.5, 0.125, 0.03125)
    model = build(rates, feature_map=feature_map, gate=gate)
    check_against_paper(model, rates, feature_map=feature_map, gate=gate)


@pytest.mark.parametrize("rates, subheads", [
    ((0.25, 0.03125), 2),  # Table 4 model 1
    ((0.5, 0.25, 0.125, 0.0625), 4),  # Table 2's four-head variant, four subheads
    ((0.5, 0.5, 0.5), 1),  # Table 4 model 9: single resolution
])
def test_other_rates_and_subheads(rates, subheads):
    check_against_paper(build(rates, subheads=subheads), rates, subheads=subheads)


def test_random_router_matches_the_paper_equations():
    rates = (0.5, 0.125, 0.03125)
    model = build(rates, router="random")
    assert not hasattr(model, "router")
    heads = np.asarray(model.random_heads[...])
    assert heads.shape == (32,) and set(heads) == {0, 1, 2}  # every head gets queries
    check_against_paper(model, rates)


def test_heads_are_resolutions_not_slices_of_d():
    """H = len(rates) heads of full width d whatever model.num_heads is: the parameters
    are 4 d x d outer projections (+ biases), 3 d x d per head and the d x H router."""
    counts = set()
    for num_heads in (1, 2, 4):
        model = build(num_heads=num_heads)
        counts.add(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
    assert counts == {4 * (D * D + D) + 3 * 3 * D * D + D * 3}


@pytest.mark.parametrize("gate, learns", [("probability", True), ("mask", False)])
def test_router_learns_only_through_the_probability_gate(gate, learns):
    model = build(gate=gate)
    x, mask = inputs()

    def loss(m):
        return jnp.sum(jnp.where(mask[..., None], m(x, mask, deterministic=True), 0.0) ** 2)

    router = np.asarray(nnx.grad(loss)(model).router.kernel[...])
    assert np.isfinite(router).all()
    assert (np.abs(router).max() > 1e-6) == learns


def test_gradients_match_finite_differences():
    """Autodiff against a float64 central difference along a random direction of each
    parameter group: a path cut from the gradient (a stop_gradient on the router's input or
    on the compressed keys) leaves the forward pass, and the reference above, unchanged."""
    with jax.enable_x64(True):
        model = build()
        x, mask = inputs()
        x = x.astype(jnp.float64)
        cotangent = jax.random.normal(jax.random.key(5), (B, L, D)) * mask[..., None]
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

        @jax.jit
        def loss(p):
            return jnp.sum(nnx.merge(graphdef, p, rest)(x, mask, deterministic=True) * cotangent)

        grads = jax.tree.leaves(jax.jit(jax.grad(loss))(params))
        leaves, treedef = jax.tree.flatten_with_path(params)
        names = [jax.tree_util.keystr(path) for path, _ in leaves]
        for group in ("query", "key", "value", "head_query", "head_key", "head_value",
                      "router", "out"):
            keys = jax.random.split(jax.random.key(6), len(leaves))
            direction = [jax.random.normal(k, v.shape, jnp.float64) * n.startswith(f"['{group}']")
                         for k, (_, v), n in zip(keys, leaves, names, strict=True)]
            shifted = [jax.tree.unflatten(treedef, [v + h * d for (_, v), d
                                                    in zip(leaves, direction, strict=True)])
                       for h in (1e-6, -1e-6)]
            numeric = (loss(shifted[0]) - loss(shifted[1])) / 2e-6
            autodiff = sum(jnp.sum(g * d) for g, d in zip(grads, direction, strict=True))
            assert abs(float(numeric)) > 1e-2, group
            np.testing.assert_allclose(float(autodiff), float(numeric), rtol=1e-5, err_msg=group)


def test_bad_options_name_the_key():
    for kwargs, key in [(dict(rates=(0.3, 0.5)), "compression_rates"),
                        (dict(rates=()), "compression_rates"),
                        (dict(subheads=3), "subheads"),
                        (dict(feature_map="gelu"), "feature_map"),
                        (dict(router="hash"), "router"),
                        (dict(gate="soft"), "gate")]:
        with pytest.raises(LRAError, match=f"model.attention_kwargs.{key}"):
            build(**kwargs)
    with pytest.raises(LRAError, match="causal"):
        AdaMRAAttention(AttentionConfig(dim=D, num_heads=2, max_len=32, causal=True),
                        rngs=nnx.Rngs(0))
