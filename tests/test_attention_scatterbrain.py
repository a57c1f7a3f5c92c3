"""Scatterbrain (lra/attention/scatterbrain.py) against a dense reference of Eq. 3."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention import scatterbrain
from lra.attention.base import dense_attention
from lra.attention.features import FEATURE_EPS
from lra.errors import LRAError

B, H, DH = 2, 2, 4


def build(max_len, causal=False, **kwargs):
    cfg = attention.AttentionConfig(dim=H * DH, num_heads=H, max_len=max_len, causal=causal)
    return attention.get("scatterbrain")(cfg, rngs=nnx.Rngs(0), **kwargs)


def qkv(n, seed=1, scale=0.5):
    return tuple(scale * jax.random.normal(key, (B, n, H, DH))
                 for key in jax.random.split(jax.random.key(seed), 3))


def lengths_mask(n, short):
    return jnp.arange(n)[None] < jnp.array([n, short])[:, None]


@nnx.jit
def _core(model, q, k, v, mask):
    return model.core(q, k, v, mask, deterministic=True)


def run_core(model, q, k, v, mask):
    """The eval-mode core, jitted once per model structure and shape."""
    return np.asarray(_core(model, q, k, v, mask))


def naive_eq3(w, q, k, v, mask, support, causal=False):
    """A_hat = phi(Q) phi(K)^T + P o (exp(QK^T/sqrt d) - phi(Q) phi(K)^T); out = A_hat V / A_hat 1.

    support: bool[B, H, n, n]. Query features carry the reference's stabiliser eps (times
    the row's largest exponential), as the module's feature map does. Float64.
    """
    w, q, k, v = (np.asarray(t, np.float64) for t in (w, q, k, v))
    m, d = w.shape

    def exponent(x):
        x = x / d**0.25
        return np.einsum("blhd,md->blhm", x, w) - 0.5 * np.sum(x * x, -1, keepdims=True)

    a, b = exponent(q), exponent(k)
    phi_q = (np.exp(a) + FEATURE_EPS * np.exp(a.max(-1, keepdims=True))) / math.sqrt(m)
    phi_k = np.exp(b) / math.sqrt(m)
    low = np.einsum("bihm,bjhm->bhij", phi_q, phi_k)
    exact = np.exp(np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d))
    a_hat = np.where(support, exact, low)
    allowed = np.asarray(mask)[:, None, None, :]
    if causal:
        allowed = allowed & np.tril(np.ones((q.shape[1],) * 2, bool))
    a_hat = np.where(allowed, a_hat, 0.0)
    return np.einsum("bhij,bjhd->bihd", a_hat, v) / a_hat.sum(-1).transpose(0, 2, 1)[..., None]


def naive_lsh_support(model, q, k, mask, block):
    """Pairs sharing a sorted chunk in some round, from an independent numpy hashing."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    real = np.asarray(mask)
    nq, nk = (q**2).sum(-1), (k**2).sum(-1)
    top = np.where(real[..., None], np.maximum(nq, nk), 0).max(1, keepdims=True)
    zero = np.zeros_like(nq)
    qx = np.stack([zero, np.sqrt(np.maximum(top - nq, 0))], -1)
    kx = np.stack([np.sqrt(np.maximum(top - nk, 0)), zero], -1)
    qx, kx = np.concatenate([q, qx], -1), np.concatenate([k, kx], -1)
    rot = np.asarray(model.rotations[...], np.float64)

    def chunk_of(x):
        proj = np.einsum("blhd,rhdk->rbhlk", x, rot)
        buckets = np.argmax(np.concatenate([proj, -proj], -1), -1)
        buckets = np.where(real[None, :, None, :], buckets, model.n_buckets)
        rank = np.argsort(np.argsort(buckets, axis=-1, kind="stable"), axis=-1, kind="stable")
        return rank // block

    cq, ck = chunk_of(qx), chunk_of(kx)
    return (cq[..., :, None] == ck[..., None, :]).any(axis=0)


def band(n, window, batch=B):
    rel = np.arange(n)[None, :] - np.arange(n)[:, None]
    inside = (rel >= -(window // 2)) & (rel <= window - 1 - window // 2)
    return np.broadcast_to(inside, (batch, H, n, n))


@pytest.mark.parametrize("sparse,causal", [("lsh", False), ("local", False), ("local", True)])
def test_full_support_is_exact_softmax(sparse, causal):
    """One chunk holding every token, or a window >= 2n: every entry exact, A_hat = A."""
    n = 12
    model = build(n, causal, sparse=sparse, block_size=32, nb_features=16)
    q, k, v = qkv(n)
    mask = lengths_mask(n, 9)
    out = run_core(model, q, k, v, mask)
    ref = np.asarray(dense_attention(q, k, v, mask, causal=causal))
    real = np.asarray(mask)
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-5, atol=1e-5)


def test_empty_support_is_performer():
    """window = 0: no pair is exact, so Eq. 3 reduces to the Performer's estimate."""
    n = 12
    model = build(n, sparse="local", block_size=4, nb_features=16)
    performer = attention.get("performer")(model.cfg, rngs=nnx.Rngs(1), nb_features=16)
    performer.features[...] = model.features[...]
    q, k, v = qkv(n)
    mask = lengths_mask(n, 9)
    local = jax.jit(scatterbrain.scatterbrain_local, static_argnames=("window", "causal"))
    out = local(*(jnp.swapaxes(t, 1, 2) for t in (q, k, v)), mask, model.features[...],
                window=0)
    np.testing.assert_allclose(np.asarray(jnp.swapaxes(out, 1, 2)),
                               run_core(performer, q, k, v, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_local_matches_dense_eq3(causal):
    n, window = 24, 6
    model = build(n, causal, sparse="local", block_size=window, nb_features=16)
    q, k, v = qkv(n, seed=2)
    mask = lengths_mask(n, 19)
    out = run_core(model, q, k, v, mask)
    ref = naive_eq3(model.features[...], q, k, v, mask, band(n, window), causal)
    real = np.asarray(mask)
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_lsh_matches_dense_eq3(n_hashes):
    """Sorted LSH chunks (3 per sequence); with 2 rounds a pair found twice counts once."""
    n, block = 24, 8
    model = build(n, sparse="lsh", block_size=block, nb_features=16, n_hashes=n_hashes)
    q, k, v = qkv(n, seed=3)
    mask = lengths_mask(n, 19)
    support = naive_lsh_support(model, q, k, mask, block)
    assert 0.1 < support[..., np.asarray(mask)[0], :].mean() < 0.9  # a real, partial support
    out = run_core(model, q, k, v, mask)
    ref = naive_eq3(model.features[...], q, k, v, mask, support)
    real = np.asarray(mask)
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-5, atol=1e-5)


def test_local_causal_and_padding_invariance():
    """sparse='local' (not the conformance suite's default): causal and padding-invariant."""
    n, longer = 20, 32
    model = build(longer, True, sparse="local", block_size=6, nb_features=16)
    q, k, v = qkv(longer, seed=4, scale=1.0)
    mask = lengths_mask(longer, 17)
    ref = run_core(model, q[:, :n], k[:, :n], v[:, :n], mask[:, :n])
    padded = run_core(model, q, k, v, mask & (jnp.arange(longer) < n))
    real = np.asarray(mask[:, :n])
    np.testing.assert_allclose(padded[:, :n][real], ref[real], rtol=1e-5, atol=1e-5)
    changed = run_core(model, q, k.at[:, 11:].set(9.0), v.at[:, 11:].set(-9.0), mask)
    full = run_core(model, q, k, v, mask)
    np.testing.assert_allclose(changed[:, :11], full[:, :11], rtol=1e-5, atol=1e-5)


def test_structure_comes_from_config_and_refusals_are_clear():
    assert build(64, block_size=16).n_buckets == 4
    assert build(100, block_size=16).n_buckets == 8
    assert attention.info("scatterbrain").defaults == {
        "nb_features": None, "sparse": "lsh", "block_size": 64, "n_hashes": 1}
    assert build(64, block_size=16).features[...].shape == (scatterbrain.default_features(DH), DH)
    assert scatterbrain.default_features(32) == 110 and scatterbrain.default_features(1) == 1
    with pytest.raises(LRAError, match="no causal form"):
        build(16, causal=True)
    with pytest.raises(LRAError, match="sparse="):
        build(16, sparse="random")
    with pytest.raises(LRAError, match="block_size"):
        build(16, block_size=0)
