"""kernels.topk: the Pallas path (XLA selection + interpreted kernels on CPU) against the jnp
reference, and the reference against a brute-force top-k mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lra.kernels.flash import flash_reference
from lra.kernels.topk import select, topk_attention, topk_reference
from triton_lowering import triton_kernel_count

B, L, H, D, TOP_K = 3, 40, 2, 12, 5
LENGTHS = jnp.array([40, 19, 0])
INTERPRET = jax.default_backend() == "cpu"   # natively on a GPU (scripts/gpu_check.py)


def qkv(seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(key, (B, L, H, D)) for key in keys[:3])
    return q, k, v, jax.random.normal(keys[3], (B, L, H, D))


def brute_force(q, k, v, lengths, top_k, causal):
    """Dense softmax over each query's top_k eligible keys, found by sorting in numpy."""
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
    ok = (np.arange(L)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]
    if causal:
        ok = ok & np.tril(np.ones((L, L), bool))
    ok = np.broadcast_to(ok, s.shape)
    s = np.where(ok, s, -np.inf)
    kth = -np.sort(-s, axis=-1)[..., top_k - 1: top_k]
    keep = ok & (s >= kth)
    e = np.where(keep, np.exp(s - s.max(-1, keepdims=True, initial=-1e30)), 0.0)
    p = e / np.maximum(e.sum(-1, keepdims=True), 1e-30)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def value_and_vjp(fn, q, k, v, cotangent):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(cotangent))


@pytest.mark.parametrize("causal", [False, True])
def test_reference(causal):
    q, k, v, _ = qkv()
    ref = jax.jit(lambda *a, top_k: topk_reference(*a, LENGTHS, top_k=top_k, chunk=16,
                                                    causal=causal), static_argnames="top_k")
    got = ref(q, k, v, top_k=TOP_K)
    np.testing.assert_allclose(got, brute_force(q, k, v, LENGTHS, TOP_K, causal),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[2], 0.0)
    every = jax.jit(lambda *a: flash_reference(*a, LENGTHS, causal=causal))(q, k, v)
    np.testing.assert_allclose(ref(q, k, v, top_k=L), every, rtol=1e-5, atol=1e-6)


def test_select_marks_missing_picks():
    q, k, _, _ = qkv()
    picks = jax.jit(lambda q, k: select(q, k, jnp.array([40, 3, 0]), top_k=TOP_K, chunk=16,
                                        causal=False, scale=1.0))(q, k)
    assert picks.shape == (B, H, L, TOP_K)
    assert (picks[0] >= 0).all()
    np.testing.assert_array_equal(jnp.sort(picks[1], axis=-1)[..., :2], -1)  # 3 keys for 5 picks
    assert ((picks[1] < 3)).all() and (picks[2] == -1).all()


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_matches_reference_values_and_gradients(causal):
    q, k, v, ct = qkv()

    def run(impl, interpret):
        fn = lambda q, k, v: topk_attention(q, k, v, LENGTHS, top_k=TOP_K, chunk=16,
                                            causal=causal, impl=impl, interpret=interpret)
        return jax.jit(lambda *a: value_and_vjp(fn, *a))(q, k, v, ct)

    got, want = run("pallas", INTERPRET), run("xla", False)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all(), name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)


def test_lowers_to_triton_for_gpu(monkeypatch):
    x = jnp.zeros((2, 256, 2, 64), jnp.bfloat16)
    fn = lambda q, k, v: topk_attention(q, k, v, jnp.array([256, 100]), top_k=16)
    assert triton_kernel_count(monkeypatch, fn, x, x, x) == 2    # forward, backward
