"""Performer / FAVOR+ (lra/attention/performer.py) against explicit n x n references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from lra.configs import models

from lra import attention
from lra.attention.base import dense_attention
from lra.attention.features import FEATURE_EPS
from lra.errors import LRAError

B, H, DH = 2, 2, 4


def build(n, causal=False, **kwargs):
    cfg = attention.AttentionConfig(dim=H * DH, num_heads=H, max_len=n, causal=causal)
    return attention.get("performer")(cfg, rngs=nnx.Rngs(0), **kwargs)


def qkv(n, seed=1, scale=1.0):
    return tuple(scale * jax.random.normal(key, (B, n, H, DH))
                 for key in jax.random.split(jax.random.key(seed), 3))


@nnx.jit
def run_core(model, q, k, v, mask):
    """The eval-mode core, jitted once per model structure and shape."""
    return model.core(q, k, v, mask, deterministic=True)


def naive_favor(w, q, k, v, mask, causal):
    """Lemma 1 features written out, the n x n kernel matrix explicit, float64.

    Query rows carry the reference's stabiliser: exp(. - row max) + eps; it is the
    feature map whose estimate the module computes (keys are exact).
    """
    w, q, k, v = (np.asarray(t, np.float64) for t in (w, q, k, v))
    m, d = w.shape

    def exponent(x):
        x = x / d**0.25
        return np.einsum("blhd,md->blhm", x, w) - 0.5 * np.sum(x * x, -1, keepdims=True)

    a = exponent(q)
    phi_q = (np.exp(a - a.max(-1, keepdims=True)) + FEATURE_EPS) / math.sqrt(m)
    phi_k = np.exp(exponent(k)) / math.sqrt(m)
    kernel = np.einsum("bihm,bjhm->bhij", phi_q, phi_k)
    allowed = np.asarray(mask)[:, None, None, :]
    if causal:
        allowed = allowed & np.tril(np.ones((q.shape[1],) * 2, bool))
    kernel = np.where(allowed, kernel, 0.0)
    return np.einsum("bhij,bjhd->bihd", kernel, v) / kernel.sum(-1).transpose(0, 2, 1)[..., None]


@pytest.mark.parametrize("causal,n", [(False, 11), (True, 70)])
def test_core_matches_explicit_feature_matrix(causal, n):
    model = build(n, causal, nb_features=24)
    q, k, v = qkv(n)
    mask = jnp.arange(n)[None] < jnp.array([n, n - 5])[:, None]
    out = np.asarray(run_core(model, q, k, v, mask))
    ref = naive_favor(model.features[...], q, k, v, mask, causal)
    real = np.asarray(mask)
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-5, atol=1e-5)


def test_approaches_softmax_as_features_grow():
    """Unbiased estimator: the error to exact softmax shrinks with m and is small at m = 4096."""
    n = 16
    q, k, v = qkv(n, seed=2, scale=0.5)
    mask = jnp.ones((B, n), bool)
    exact = np.asarray(dense_attention(q, k, v, mask))
    err = {m: np.abs(np.asarray(run_core(build(n, nb_features=m), q, k, v, mask)) - exact).max()
           for m in (8, 4096)}
    assert err[4096] < 0.04 and err[4096] < err[8] / 5


def test_redraw_draws_new_features_in_training_only():
    n = 8
    q, k, v = qkv(n)
    mask = jnp.ones((B, n), bool)
    fixed = build(n, nb_features=16)
    redrawn = build(n, nb_features=16, redraw=True)
    train = lambda m: np.asarray(m.core(q, k, v, mask, deterministic=False))
    evaluate = lambda m: np.asarray(m.core(q, k, v, mask, deterministic=True))
    assert not np.allclose(train(redrawn), train(redrawn))
    np.testing.assert_array_equal(evaluate(redrawn), evaluate(redrawn))
    np.testing.assert_array_equal(evaluate(redrawn), evaluate(fixed))  # eval: the init draw
    np.testing.assert_array_equal(train(fixed), evaluate(fixed))


def test_features_are_not_trainable_and_defaults_are_the_papers():
    model = build(8)
    assert model.features[...].shape == (256, DH)
    params = nnx.state(model, nnx.Param)
    assert all(leaf.shape != (256, DH) for leaf in jax.tree.leaves(params))
    assert attention.info("performer").defaults == {"nb_features": 256, "redraw": False}
    assert models.preset("performer", "nystrom") == {"nb_features": 256}


def test_bad_feature_count_is_a_clear_error():
    with pytest.raises(LRAError, match="nb_features"):
        build(8, nb_features=0)
