"""Routing Transformer (Roy et al. 2020): exact limit, naive reference, k-means state, aux loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention.base import AttentionConfig, dense_attention
from lra.attention.routing import Centroids, RoutingAttention, kmeans_update
from lra.errors import LRAError

B, H, DH = 2, 4, 8


def build(max_len, seed=0, **hyper):
    cfg = AttentionConfig(dim=H * DH, num_heads=H, max_len=max_len)
    return RoutingAttention(cfg, rngs=nnx.Rngs(seed), **hyper)


def qkv(length, lengths, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    q, k, v = (jax.random.normal(x, (B, length, H, DH)) for x in ks)
    return q, k, v, jnp.arange(length)[None, :] < jnp.array(lengths)[:, None]


def run_core(model, q, k, v, mask):
    return jax.jit(lambda *a: model.core(*a, deterministic=True))(q, k, v, mask)


@nnx.jit(static_argnums=3)
def call(model, x, mask, deterministic):
    """The layer as the trainer runs it: returns (output, leaves of the sown intermediates)."""
    out, sown = nnx.capture(model, nnx.Intermediate)(x, mask, deterministic=deterministic)
    return out, jax.tree.leaves(sown)


def real(x, mask):
    return np.where(np.asarray(mask)[..., None, None], np.asarray(x), 0.0)


def softmax_rows(q, k, v, allowed):
    """Masked softmax attention of one head: q, k, v [L, D]; allowed bool[L, L]."""
    logits = np.where(allowed, q @ k.T / np.sqrt(q.shape[-1]), -1e30)
    w = np.exp(logits - logits.max(-1, keepdims=True)) * allowed
    return (w / np.maximum(w.sum(-1, keepdims=True), 1e-30)) @ v


def nearest(scores, mask, window):
    """Indices of the `window` best scores, real tokens first, ties to the earlier position."""
    return np.argsort(-np.where(mask, scores, -np.inf), kind="stable")[:window]


def naive_routing(q, k, v, mask, centroids, window, num_local, local_window):
    """Per head: local heads by a block-band mask; routing heads cluster by cluster, averaged."""
    q, k, v, mask, centroids = (np.asarray(x, np.float64) for x in (q, k, v, mask, centroids))
    mask = mask > 0
    n = q.shape[1]
    out = np.zeros_like(q)
    norm = lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    block = np.arange(n) // local_window
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            qh, kh, vh = q[b, :, h], k[b, :, h], v[b, :, h]
            if h < num_local:
                band = np.abs(block[:, None] - block[None, :]) <= 1
                out[b, :, h] = softmax_rows(qh, kh, vh, band & mask[b][None, :])
                continue
            mu = centroids[h - num_local]
            total, count = np.zeros_like(qh), np.zeros(n)
            for centroid in mu:
                queries = np.zeros(n, bool)
                keys = np.zeros(n, bool)
                queries[nearest(norm(qh) @ centroid, mask[b], window)] = True
                keys[nearest(norm(kh) @ centroid, mask[b], window)] = True
                queries &= mask[b]
                keys &= mask[b]
                pattern = queries[:, None] & keys[None, :]
                total += np.where(queries[:, None], softmax_rows(qh, kh, vh, pattern), 0.0)
                count += queries
            out[b, :, h] = total / np.maximum(count, 1)[:, None]
    return out


def test_one_cluster_covering_everything_is_softmax():
    model = build(32, num_clusters=1, num_local_heads=0)
    q, k, v, mask = qkv(32, [32, 19])
    out = run_core(model, q, k, v, mask)
    np.testing.assert_allclose(real(out, mask), real(dense_attention(q, k, v, mask), mask),
                               atol=1e-5)


@pytest.mark.parametrize("length", [32, 27])
def test_matches_naive_cluster_by_cluster_reference(length):
    model = build(32, num_clusters=4, num_local_heads=1, local_window=8)
    assert model.window == 8
    q, k, v, mask = qkv(length, [length, 21], seed=length)
    out = run_core(model, q, k, v, mask)
    ref = naive_routing(q, k, v, mask, model.centroids[...], 8, 1, 8)
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)


def test_training_moves_centroids_and_eval_does_not():
    model = build(32, num_clusters=4, local_window=8)
    x = jax.random.normal(jax.random.key(1), (B, 32, H * DH))
    mask = jnp.ones((B, 32), bool)
    before = np.array(model.centroids[...])
    call(model, x, mask, True)
    np.testing.assert_array_equal(np.asarray(model.centroids[...]), before)
    call(model, x, mask, False)
    after = np.asarray(model.centroids[...])
    assert np.abs(after - before).max() > 0
    assert np.abs(after - before).max() < 0.1, "decay 0.999 moves centroids slowly"


def test_centroids_get_no_gradient_but_projections_do():
    model = build(32, num_clusters=4, local_window=8, commitment=1e-2)
    x = jax.random.normal(jax.random.key(2), (B, 32, H * DH))
    mask = jnp.ones((B, 32), bool)
    graphdef, params, centroids, rest = nnx.split(model, nnx.Param, Centroids, ...)

    def loss(params, centroids):
        m = nnx.merge(graphdef, params, centroids, rest)
        out, _ = nnx.capture(m, nnx.Intermediate)(x, mask, deterministic=False)
        return jnp.sum(out ** 2)

    g_params, g_centroids = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, centroids)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_centroids))
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(g_params))


def test_commitment_loss_is_sown_in_training_only_when_enabled():
    x = jax.random.normal(jax.random.key(3), (B, 32, H * DH))
    mask = jnp.ones((B, 32), bool)
    model = build(32, num_clusters=4, local_window=8)
    assert not call(model, x, mask, True)[1]
    (loss,) = call(model, x, mask, False)[1]
    assert 0 < float(loss) < 1e-4 * 4, "beta = 1e-4 times two mean squared distances"
    silent = build(32, num_clusters=4, local_window=8, commitment=0.0)
    assert not call(silent, x, mask, False)[1]
    assert not nnx.state(model, nnx.Intermediate), "captured, never stored on the layer"


def test_kmeans_update_moves_towards_cluster_means():
    centroids = jnp.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])  # [H=1, C=3, D=2]
    qn = jnp.array([[[[2.0, 0.1], [4.0, -0.1], [0.0, 3.0]]]])  # [B=1, H=1, L=3, D=2]
    kn = jnp.array([[[[0.0, 5.0], [6.0, 0.0], [9.0, 9.0]]]])
    mask = jnp.array([[True, True, False]])
    new = kmeans_update(centroids, qn, kn, mask, decay=0.5)
    # cluster 0: queries (2, .1), (4, -.1) -> mean (3, 0); key (6, 0) -> target (4.5, 0)
    # cluster 1: key (0, 5) only -> target (0, 5); cluster 2: nothing (padding ignored)
    expected = jnp.array([[[2.75, 0.0], [0.0, 3.0], [-1.0, -1.0]]])
    np.testing.assert_allclose(new, expected, atol=1e-6)


def test_defaults_shared_qk_and_refusals():
    model = build(64)
    assert model.centroids[...].shape == (H // 2, 8, DH) and model.window == 8
    assert attention.info("routing").defaults["decay"] == 0.999
    assert not hasattr(build(32, local_window=8, shared_qk=True), "key")
    with pytest.raises(LRAError, match="no causal form"):
        RoutingAttention(AttentionConfig(dim=32, num_heads=4, max_len=32, causal=True),
                         rngs=nnx.Rngs(0))
    with pytest.raises(LRAError, match="num_local_heads"):
        build(32, num_local_heads=H)
