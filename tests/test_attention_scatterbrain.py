"""Scatterbrain (lra/attention/scatterbrain.py) against a float64 numpy reference of §4.

The reference is written from the paper's estimator, not from the layer: given a support
set and the feature matrix copied from the layer, it forms the dense L x L matrix

    A_hat = phi(Q) phi(K)^T + S,  S_ij = exp(q_i.k_j / sqrt(d)) - phi(q_i).phi(k_j) on the
    support (each pair once), 0 elsewhere,

and returns A_hat V / A_hat 1 over the real keys. The LSH support is recomputed here from
the description of the authors' clustering (XBOX+, one projection per round, sort, chunk).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention import scatterbrain
from lra.attention.base import dense_attention
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


def reference(w, q, k, v, mask, counts, eps, *, causal=False, weight=None, subtract=True):
    """Dense float64 A_hat V / A_hat 1 from the estimator of §4.

    w: [m, d] feature directions; q, k, v: [B, L, H, d]; counts: [B, H, L, L], the number of
    hash rounds that put (i, j) in the support (1 inside a local window). phi(x) = exp(w x' -
    |x'|^2 / 2) / sqrt(m), x' = x d^(-1/4); the query features get the stabiliser
    eps / sqrt(m) * max_r exp(w_r x' - |x'|^2/2) / sqrt(m). The estimator weights the correction S_ij
    by 1 on the support (a pair counts once) and removes the low-rank entry there;
    `weight(counts)` and `subtract=False` give deliberately wrong variants.
    """
    w, q, k, v = (np.asarray(t, np.float64) for t in (w, q, k, v))
    m, d = w.shape

    def exponents(x):
        x = x / d**0.25
        return np.einsum("blhd,md->bhlm", x, w) - 0.5 * np.sum(x * x, -1)[..., None].swapaxes(1, 2)

    a, c = exponents(q), exponents(k)
    # the authors' softmax_kernel: eps / sqrt(m) relative to the query's largest feature
    phi_q = (np.exp(a) + eps / math.sqrt(m) * np.exp(a.max(-1, keepdims=True))) / math.sqrt(m)
    phi_k = np.exp(c) / math.sqrt(m)
    low = phi_q @ phi_k.swapaxes(-1, -2)
    exact = np.exp(np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d))
    in_support = (counts > 0) if weight is None else weight(counts)
    a_hat = low + in_support * (exact - low if subtract else exact)
    keep = np.asarray(mask)[:, None, None, :]
    if causal:
        keep = keep & np.tril(np.ones((q.shape[1],) * 2, bool))
    a_hat = np.where(keep, a_hat, 0.0)
    out = (a_hat @ v.swapaxes(1, 2)) / a_hat.sum(-1, keepdims=True)
    return out.swapaxes(1, 2)


def lsh_counts(directions, q, k, mask, block):
    """[B, H, L, L]: in how many rounds query i and key j land in chunks of the same index.

    XBOX+ (M^2 = largest real |q|^2 + largest real |k|^2), then per round and head the
    projection on that round's direction; queries and keys are ranked separately, padded
    tokens after every real one, and rank // block is the chunk.
    """
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    real = np.asarray(mask)[:, :, None]
    nq, nk = (q**2).sum(-1), (k**2).sum(-1)  # [B, L, H]
    top = (np.where(real, nq, 0).max(1, keepdims=True)
           + np.where(real, nk, 0).max(1, keepdims=True))
    zero = np.zeros_like(nq)
    qx = np.concatenate([q, np.stack([zero, np.sqrt(top - nq)], -1)], -1)
    kx = np.concatenate([k, np.stack([np.sqrt(top - nk), zero], -1)], -1)
    a = np.asarray(directions, np.float64)  # [R, H, d + 2]

    def chunk(x):
        proj = np.einsum("blhe,rhe->rbhl", x, a)
        proj = np.where(np.asarray(mask)[None, :, None, :], proj, np.inf)
        rank = np.argsort(np.argsort(proj, axis=-1, kind="stable"), axis=-1, kind="stable")
        return rank // block

    cq, ck = chunk(qx), chunk(kx)
    return (cq[..., :, None] == ck[..., None, :]).sum(axis=0)


def band(n, window, batch=B):
    rel = np.arange(n)[None, :] - np.arange(n)[:, None]
    inside = (rel >= -(window // 2)) & (rel <= window - 1 - window // 2)
    return np.broadcast_to(inside, (batch, H, n, n)).astype(int)


def close(a, b, mask):
    real = np.asarray(mask)
    return np.allclose(a[real], b[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("feature_map", ["hyperbolic", "positive"])
def test_lsh_default_config_matches_reference_with_padding(feature_map):
    """Default options (2 hash rounds, eps 1e-4, nb_features = block_size) at block_size 6,
    with a padded example and a length that is not a multiple of the block."""
    n, short, block = 38, 29, 6
    model = build(n, block_size=block, feature_map=feature_map)
    w = np.asarray(model.features[...])
    assert w.shape == (block, DH) and model.directions[...].shape == (2, H, DH + 2)
    if feature_map == "hyperbolic":
        np.testing.assert_array_equal(w[block // 2:], -w[:block // 2])
    q, k, v = qkv(n, seed=3, scale=1.0)
    mask = lengths_mask(n, short)
    counts = lsh_counts(model.directions[...], q, k, mask, block)
    found = counts[1, :, :short, :short]
    assert 0.1 < (found > 0).mean() < 0.7 and (found == 2).any()  # partial, with repeats
    out = run_core(model, q, k, v, mask)
    ref = reference(w, q, k, v, mask, counts, 1e-4)
    np.testing.assert_allclose(out[np.asarray(mask)], ref[np.asarray(mask)], rtol=1e-5,
                               atol=1e-5)
    # The comparison can fail: wrong variants of the estimator are far from the layer.
    wrong = {"a pair weighted by its number of rounds": dict(weight=lambda c: c),
             "exact entries added, low-rank ones kept": dict(subtract=False),
             "no sparse correction": dict(weight=lambda c: 0 * c)}
    for name, variant in wrong.items():
        bad = reference(w, q, k, v, mask, counts, 1e-4, **variant)
        assert not close(bad, out, mask), name


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
    """window = 0: no pair is exact, so the estimator reduces to the Performer's."""
    n = 12
    model = build(n, sparse="local", block_size=4, nb_features=16, feature_map="positive")
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
def test_local_matches_reference(causal):
    n, window = 24, 6
    model = build(n, causal, sparse="local", block_size=window)
    assert model.features[...].shape == (4, DH)  # window / 2 features, rounded up to even
    q, k, v = qkv(n, seed=2)
    mask = lengths_mask(n, 19)
    out = run_core(model, q, k, v, mask)
    ref = reference(model.features[...], q, k, v, mask, band(n, window), 1e-4, causal=causal)
    real = np.asarray(mask)
    np.testing.assert_allclose(out[real], ref[real], rtol=1e-5, atol=1e-5)


def test_lsh_support_holds_the_clusters():
    """On clustered q = k (8 clusters of 8 tokens at random positions, large beta), the
    layer's sorted XBOX+ projections put most of each token's attention mass in its support,
    twice the 2 block / L of two random chunks."""
    n, block, size = 64, 8, 8
    keys = jax.random.split(jax.random.key(5), 3)
    centres = jax.random.normal(keys[0], (1, n // size, H, DH))
    z = jnp.repeat(centres / jnp.linalg.norm(centres, axis=-1, keepdims=True), size, axis=1)
    z = z + 0.1 * jax.random.normal(keys[1], z.shape)
    q = jnp.swapaxes(3.0 * z[:, jax.random.permutation(keys[2], n)], 1, 2)  # [1, H, n, DH]
    mask = jnp.ones((1, n), bool)
    model = build(n, block_size=block)
    _, slot_q, _, slot_k = scatterbrain.lsh_order(*scatterbrain.xbox_plus(q, q, mask),
                                                  model.directions[...], mask)
    cq, ck = np.asarray(slot_q) // block, np.asarray(slot_k) // block
    support = (cq[..., :, None] == ck[..., None, :]).any(axis=0)
    logits = np.einsum("bhid,bhjd->bhij", *(2 * [np.asarray(q, np.float64)])) / math.sqrt(DH)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    mass = ((p / p.sum(-1, keepdims=True)) * support).sum(-1).mean()
    assert mass > 0.5 == 2 * (2 * block / n)  # twice what two random chunks would hold


def test_local_causal_and_padding_invariance():
    """sparse='local' (not the conformance suite's default): causal and padding-invariant."""
    n, longer = 20, 32
    model = build(longer, True, sparse="local", block_size=6)
    q, k, v = qkv(longer, seed=4, scale=1.0)
    mask = lengths_mask(longer, 17)
    ref = run_core(model, q[:, :n], k[:, :n], v[:, :n], mask[:, :n])
    padded = run_core(model, q, k, v, mask & (jnp.arange(longer) < n))
    real = np.asarray(mask[:, :n])
    np.testing.assert_allclose(padded[:, :n][real], ref[real], rtol=1e-5, atol=1e-5)
    changed = run_core(model, q, k.at[:, 11:].set(9.0), v.at[:, 11:].set(-9.0), mask)
    full = run_core(model, q, k, v, mask)
    np.testing.assert_allclose(changed[:, :11], full[:, :11], rtol=1e-5, atol=1e-5)


def test_defaults_and_refusals():
    assert attention.info("scatterbrain").defaults == {
        "nb_features": None, "sparse": "lsh", "block_size": 16, "n_hashes": 2, "eps": 1e-4,
        "feature_map": "hyperbolic"}
    assert build(64).features[...].shape == (16, DH)
    assert build(64, sparse="local", block_size=64).features[...].shape == (32, DH)
    assert build(64, nb_features=5, feature_map="positive").features[...].shape == (5, DH)
    with pytest.raises(LRAError, match="no causal form"):
        build(16, causal=True)
    for kwargs, key in [({"sparse": "random"}, "sparse"), ({"block_size": 0}, "block_size"),
                        ({"n_hashes": 0}, "n_hashes"), ({"eps": -1.0}, "eps"),
                        ({"feature_map": "relu"}, "feature_map"),
                        ({"nb_features": 5}, "nb_features")]:
        with pytest.raises(LRAError, match=rf"model\.attention_kwargs\.{key}="):
            build(16, **kwargs)
