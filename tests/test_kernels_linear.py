"""kernels.linear: Pallas kernels (interpreted on CPU) against the jnp reference, and the
reference against the quadratic form of the same attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lra.kernels.linear import linear_attention, linear_reference
from triton_lowering import triton_kernel_count

B, L, H, F, DV = 3, 40, 2, 12, 8     # L not a multiple of the chunk; F, Dv padded to 16
LENGTHS = jnp.array([40, 21, 0])
INTERPRET = jax.default_backend() == "cpu"   # natively on a GPU (scripts/gpu_check.py)


def inputs(seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    qf = jax.nn.elu(jax.random.normal(keys[0], (B, L, H, F))) + 1   # elu + 1 features (>= 0)
    kf = jax.nn.elu(jax.random.normal(keys[1], (B, L, H, F))) + 1
    v = jax.random.normal(keys[2], (B, L, H, DV))
    return qf, kf, v, jax.random.normal(keys[3], (B, L, H, DV))


def quadratic(qf, kf, v, lengths, causal, eps=1e-6):
    """(q' k'^T masked) v / row sums: the O(L^2) form of Katharopoulos et al. Eq. 4-6."""
    real = jnp.arange(L)[None, :] < lengths[:, None]
    a = jnp.einsum("bqhf,bkhf->bhqk", qf, kf) * real[:, None, None, :]
    if causal:
        a = a * jnp.tril(jnp.ones((L, L)))
    den = jnp.swapaxes(a.sum(-1), 1, 2)[..., None] + eps
    return jnp.einsum("bhqk,bkhd->bqhd", a, v) / den


def value_and_vjp(fn, q, k, v, cotangent):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(cotangent))


@pytest.mark.parametrize("causal", [False, True])
def test_reference_matches_quadratic_form(causal):
    qf, kf, v, _ = inputs()
    want = jax.jit(quadratic, static_argnums=4)(qf, kf, v, LENGTHS, causal)
    for chunk in (8, 16, 64):
        got = jax.jit(lambda *a, c=chunk: linear_reference(*a, LENGTHS, causal=causal, chunk=c))(
            qf, kf, v)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[2], 0.0)   # all padding: zeros, not NaN


@pytest.mark.parametrize("causal, chunk", [(False, 16), (True, 16), (True, 32)])
def test_kernel_matches_reference_values_and_gradients(causal, chunk):
    """chunk 16: three chunks over L = 40, lengths ending inside the second chunk and 0;
    chunk 32: two chunks, the second mostly padding."""
    qf, kf, v, ct = inputs()

    def run(impl, interpret):
        fn = lambda q, k, v: linear_attention(q, k, v, LENGTHS, causal=causal, chunk=chunk,
                                              impl=impl, interpret=interpret)
        return jax.jit(lambda *a: value_and_vjp(fn, *a))(qf, kf, v, ct)

    got, want = run("pallas", INTERPRET), run("xla", False)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all(), name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    real = np.arange(L)[None, :] < np.asarray(LENGTHS)[:, None]
    np.testing.assert_array_equal(np.asarray(got[2])[~real], 0.0)   # padded keys: no dk'
    for name, g in zip(("out", "dq", "dk", "dv"), got, strict=True):
        np.testing.assert_array_equal(g[2], 0.0, err_msg=name)       # all padding: zeros


@pytest.mark.parametrize("causal, kernels", [(False, 4), (True, 4)])
def test_lowers_to_triton_for_gpu(monkeypatch, causal, kernels):
    x = jnp.ones((2, 256, 2, 64), jnp.bfloat16)
    fn = lambda q, k, v: linear_attention(q, k, v, jnp.array([256, 100]), causal=causal)
    assert triton_kernel_count(monkeypatch, fn, x, x, x) == kernels
