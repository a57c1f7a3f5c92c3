"""Routing Transformer (Roy et al. 2020): float64 reference of the whole layer, k-means state, aux loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention.base import AttentionConfig
from lra.attention.routing import Centroids, RoutingAttention, kmeans_update
from lra.errors import LRAError

B, H, DH = 2, 4, 8
D = H * DH


def build(max_len, seed=0, **hyper):
    cfg = AttentionConfig(dim=D, num_heads=H, max_len=max_len)
    return RoutingAttention(cfg, rngs=nnx.Rngs(seed), **hyper)


def inputs(length, lengths, seed=0):
    x = jax.random.normal(jax.random.key(seed), (B, length, D))
    return x, jnp.arange(length)[None, :] < jnp.array(lengths)[:, None]


@nnx.jit(static_argnums=3)
def call(model, x, mask, deterministic):
    """The layer as the trainer runs it: returns (output, leaves of the sown intermediates)."""
    out, sown = nnx.capture(model, nnx.Intermediate)(x, mask, deterministic=deterministic)
    return out, jax.tree.leaves(sown)


def copy_in(model, seed):
    """Random projections and centroids (rows of unequal norms) copied into the layer; float64 copies."""
    rng = np.random.default_rng(seed)
    params = {}
    for name in ("query", "key", "value", "out"):
        kernel = rng.normal(size=(D, D)).astype(np.float32) / np.sqrt(D)
        bias = rng.normal(size=D).astype(np.float32) * 0.1
        getattr(model, name).kernel[...] = jnp.asarray(kernel)
        getattr(model, name).bias[...] = jnp.asarray(bias)
        params[name] = (kernel.astype(np.float64), bias.astype(np.float64))
    mu = rng.normal(size=model.centroids[...].shape).astype(np.float32)
    model.centroids[...] = jnp.asarray(mu)
    return params, mu.astype(np.float64)


# ---- float64 reference, written from the paper (§4) and the released code's semantics ----

def layer_norm(x, eps=1e-6):
    """Layer norm over the last axis, no scale or bias (the released layer_norm(scaling=False))."""
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps)


def softmax_attend(q, k, v, scale):
    logits = scale * q @ k.T
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ v


def project(x, params, name, h):
    kernel, bias = params[name]
    return (x @ kernel + bias)[:, h * DH:(h + 1) * DH]


def routing_vectors(x, params, h, score):
    q, k = project(x, params, "query", h), project(x, params, "key", h)
    if score == "layernorm":
        return layer_norm(q), layer_norm(k), 1.0
    return q, k, 1 / np.sqrt(DH)


def reference(x, mask, params, mu, *, num_local, local_window, window, score):
    """Returns (outputs [B, L, D], how many centroids picked each real query of each routing head)."""
    x, mask = np.asarray(x, np.float64), np.asarray(mask)
    out = np.zeros(x.shape)
    picks = []
    for b in range(x.shape[0]):
        real = np.flatnonzero(mask[b])
        heads = np.zeros((x.shape[1], D))
        for h in range(H):
            v = project(x[b], params, "value", h)
            if h < num_local:  # own block and the two neighbouring blocks, real keys only
                q, k = project(x[b], params, "query", h), project(x[b], params, "key", h)
                for i in real:
                    near = real[np.abs(real // local_window - i // local_window) <= 1]
                    heads[i, h * DH:(h + 1) * DH] = softmax_attend(q[i:i + 1], k[near], v[near],
                                                                   1 / np.sqrt(DH))[0]
                continue
            q, k, scale = routing_vectors(x[b], params, h, score)
            total, count = np.zeros((x.shape[1], DH)), np.zeros(x.shape[1])
            for centroid in mu[h - num_local]:  # balanced: the top-w real queries and keys
                qs = real[np.argsort(-(q[real] @ centroid), kind="stable")[:window]]
                ks = real[np.argsort(-(k[real] @ centroid), kind="stable")[:window]]
                total[qs] += softmax_attend(q[qs], k[ks], v[ks], scale)
                count[qs] += 1
            heads[:, h * DH:(h + 1) * DH] = np.where(count[:, None] > 0,
                                                     total / np.maximum(count, 1)[:, None], 0.0)
            picks.append(count[real])
        kernel, bias = params["out"]
        out[b] = heads @ kernel + bias
    return out, np.concatenate(picks)


def ema_reference(x, mask, params, mu, *, num_local, decay, score):
    """One online k-means step: each centroid moves towards the mean of its queries and keys."""
    x, mask = np.asarray(x, np.float64), np.asarray(mask)
    new = mu.copy()
    for r in range(mu.shape[0]):
        vectors = [routing_vectors(x[b], params, num_local + r, score)[:2] for b in range(B)]
        means = []
        for which in (0, 1):
            pts = np.concatenate([vec[which][mask[b]] for b, vec in enumerate(vectors)])
            nearest = np.argmax(pts @ mu[r].T, axis=1)
            means.append([pts[nearest == c].mean(0) if np.any(nearest == c) else None
                          for c in range(mu.shape[1])])
        for c in range(mu.shape[1]):
            got = [m[c] for m in means if m[c] is not None]
            if got:
                new[r, c] = decay * mu[r, c] + (1 - decay) * np.mean(got, axis=0)
    return new


def real_rows(x, mask):
    return np.asarray(x, np.float64)[np.asarray(mask)]


# ---- tests ----

@pytest.mark.parametrize("score", ["layernorm", "raw"])
@pytest.mark.parametrize("length, lengths", [(32, (32, 21)), (27, (27, 5))])
def test_layer_matches_float64_reference(score, length, lengths):
    model = build(32, num_clusters=4, num_local_heads=1, local_window=8, score=score)
    assert model.window == 8
    params, mu = copy_in(model, seed=length)
    x, mask = inputs(length, lengths, seed=length)
    out, _ = call(model, x, mask, True)
    hyper = dict(num_local=1, local_window=8, window=8)
    ref, picks = reference(x, mask, params, mu, score=score, **hyper)
    assert np.any(picks == 0) and np.any(picks > 1), "unpicked and multiply picked queries occur"
    np.testing.assert_allclose(real_rows(out, mask), real_rows(ref, mask), atol=2e-5, rtol=1e-4)
    # the comparison can fail: the other score routes and attends differently
    other = reference(x, mask, params, mu, score={"layernorm": "raw", "raw": "layernorm"}[score],
                      **hyper)[0]
    assert np.abs(real_rows(out, mask) - real_rows(other, mask)).max() > 1e-2


@pytest.mark.parametrize("score", ["layernorm", "raw"])
def test_one_cluster_covering_everything_is_full_attention(score):
    """w = n: every real query attends to every real key, softmax of s(Q_i, K_j)."""
    model = build(32, num_clusters=1, num_local_heads=0, score=score)
    params, mu = copy_in(model, seed=1)
    x, mask = inputs(32, (32, 19), seed=1)
    out, _ = call(model, x, mask, True)
    xs, m = np.asarray(x, np.float64), np.asarray(mask)
    for b in range(B):
        heads = [softmax_attend(*routing_vectors(xs[b][m[b]], params, h, score)[:2],
                                project(xs[b][m[b]], params, "value", h),
                                routing_vectors(xs[b], params, h, score)[2]) for h in range(H)]
        kernel, bias = params["out"]
        np.testing.assert_allclose(np.asarray(out[b])[m[b]], np.concatenate(heads, 1) @ kernel + bias,
                                   atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("score", ["layernorm", "raw"])
def test_one_training_step_moves_centroids_like_the_reference_ema(score):
    model = build(32, num_clusters=4, num_local_heads=2, local_window=8, score=score, decay=0.5)
    params, mu = copy_in(model, seed=2)
    x, mask = inputs(32, (32, 23), seed=2)
    call(model, x, mask, True)
    np.testing.assert_array_equal(np.asarray(model.centroids[...]), mu.astype(np.float32))
    call(model, x, mask, False)
    expected = ema_reference(x, mask, params, mu, num_local=2, decay=0.5, score=score)
    assert np.abs(expected - mu).max() > 0.1
    np.testing.assert_allclose(np.asarray(model.centroids[...]), expected, atol=1e-5, rtol=1e-5)


def test_kmeans_update_by_hand():
    centroids = jnp.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])  # [H=1, C=3, D=2]
    xq = jnp.array([[[[2.0, 0.1], [4.0, -0.1], [0.0, 3.0]]]])  # [B=1, H=1, L=3, D=2]
    xk = jnp.array([[[[0.0, 5.0], [6.0, 0.0], [9.0, 9.0]]]])
    mask = jnp.array([[True, True, False]])
    new = kmeans_update(centroids, xq, xk, mask, decay=0.5)
    # cluster 0: queries (2, .1), (4, -.1) -> mean (3, 0); key (6, 0) -> target (4.5, 0)
    # cluster 1: key (0, 5) only -> target (0, 5); cluster 2: nothing (padding ignored)
    expected = jnp.array([[[2.75, 0.0], [0.0, 3.0], [-1.0, -1.0]]])
    np.testing.assert_allclose(new, expected, atol=1e-6)


def test_default_decay_moves_centroids_slowly_and_eval_not_at_all():
    model = build(32, num_clusters=4, local_window=8)
    x, mask = inputs(32, (32, 32), seed=1)
    before = np.array(model.centroids[...])
    call(model, x, mask, True)
    np.testing.assert_array_equal(np.asarray(model.centroids[...]), before)
    call(model, x, mask, False)
    moved = np.abs(np.asarray(model.centroids[...]) - before).max()
    assert 0 < moved < 0.1, "decay 0.999 moves centroids slowly"


def test_centroids_get_no_gradient_but_projections_do():
    model = build(32, num_clusters=4, local_window=8, commitment=1e-2)
    x, mask = inputs(32, (32, 32), seed=2)
    graphdef, params, centroids, rest = nnx.split(model, nnx.Param, Centroids, ...)

    def loss(params, centroids):
        m = nnx.merge(graphdef, params, centroids, rest)
        out, _ = nnx.capture(m, nnx.Intermediate)(x, mask, deterministic=False)
        return jnp.sum(out ** 2)

    g_params, g_centroids = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, centroids)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_centroids))
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(g_params))


def test_commitment_loss_is_sown_in_training_only_when_enabled():
    x, mask = inputs(32, (32, 32), seed=3)
    model = build(32, num_clusters=4, local_window=8)
    assert not call(model, x, mask, True)[1]
    (loss,) = call(model, x, mask, False)[1]
    assert 0 < float(loss) < 1e-4 * 4, "beta = 1e-4 times two mean squared distances"
    silent = build(32, num_clusters=4, local_window=8, commitment=0.0)
    assert not call(silent, x, mask, False)[1]
    assert not nnx.state(model, nnx.Intermediate), "captured, never stored on the layer"


def test_defaults_shared_qk_and_causal_refusal():
    model = build(64)
    assert model.centroids[...].shape == (H // 2, 8, DH) and model.window == 8
    defaults = attention.info("routing").defaults
    assert defaults["decay"] == 0.999 and defaults["score"] == "layernorm"
    assert defaults["commitment"] == 1e-4
    assert not hasattr(build(32, local_window=8, shared_qk=True), "key")
    with pytest.raises(LRAError, match="no causal form"):
        RoutingAttention(AttentionConfig(dim=32, num_heads=4, max_len=32, causal=True),
                         rngs=nnx.Rngs(0))


@pytest.mark.parametrize("hyper", [{"score": "cosine"}, {"num_clusters": 0}, {"local_window": 0},
                                   {"num_local_heads": H}, {"decay": 1.5}, {"commitment": -1.0}])
def test_bad_hyperparameters_are_one_line_errors_naming_the_key(hyper):
    (name, value), = hyper.items()
    with pytest.raises(LRAError) as err:
        build(32, **hyper)
    message = str(err.value)
    assert f"model.attention_kwargs.{name}={value!r}" in message and "\n" not in message
