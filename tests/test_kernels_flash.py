"""kernels.flash: the Pallas kernels (interpreted on CPU) against the jnp reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lra.kernels import _common
from lra.kernels.errors import KernelError
from lra.kernels.flash import flash_attention, flash_reference
from triton_lowering import triton_kernel_count

from lra.attention.base import dense_attention

B, L, H, D = 3, 40, 2, 12          # L is not a multiple of the block, D is padded to 16
LENGTHS = jnp.array([40, 23, 0])   # full, ragged, all padding
INTERPRET = jax.default_backend() == "cpu"   # natively on a GPU (scripts/gpu_check.py)


def qkv(dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(key, (B, L, H, D), dtype) for key in keys[:3])
    return q, k, v, jax.random.normal(keys[3], (B, L, H, D), dtype)


def value_and_vjp(fn, q, k, v, cotangent):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(cotangent))


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_matches_reference_values_and_gradients(causal):
    q, k, v, ct = qkv()
    kernel = lambda q, k, v: flash_attention(q, k, v, LENGTHS, causal=causal, block_q=16,
                                             block_k=16, impl="pallas", interpret=INTERPRET)
    ref = lambda q, k, v: flash_reference(q, k, v, LENGTHS, causal=causal)
    got = jax.jit(lambda *a: value_and_vjp(kernel, *a))(q, k, v, ct)
    want = jax.jit(lambda *a: value_and_vjp(ref, *a))(q, k, v, ct)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all(), name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(got[0][2], 0.0)   # no visible key: zeros, not NaN


def test_kernel_bfloat16_forward():
    q, k, v, _ = qkv(jnp.bfloat16)
    got = jax.jit(lambda q, k, v: flash_attention(q, k, v, LENGTHS, block_q=16, block_k=32,
                                                  impl="pallas", interpret=INTERPRET))(q, k, v)
    want = flash_reference(q, k, v, LENGTHS)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=3e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_is_dense_attention_where_a_key_is_visible(causal):
    q, k, v, _ = qkv()
    mask = jnp.arange(L)[None, :] < LENGTHS[:, None]
    got = jax.jit(lambda *a: flash_reference(*a, LENGTHS, causal=causal))(q, k, v)
    want = jax.jit(lambda *a: dense_attention(*a, mask, causal=causal))(q, k, v)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], 0.0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="dispatch off CPU takes the kernel")
def test_dispatch_on_cpu():
    q, k, v, _ = qkv()
    assert not _common.use_kernel("auto", interpret=False)
    np.testing.assert_array_equal(flash_attention(q, k, v, LENGTHS),
                                  flash_reference(q, k, v, LENGTHS))
    with pytest.raises(KernelError, match="needs a GPU"):
        flash_attention(q, k, v, LENGTHS, impl="pallas")
    with pytest.raises(KernelError, match="impl"):
        flash_attention(q, k, v, LENGTHS, impl="cuda")


def test_tiles_must_be_powers_of_two():
    q, k, v, _ = qkv()
    with pytest.raises(KernelError, match="block_q=48"):
        flash_attention(q, k, v, LENGTHS, block_q=48, impl="pallas", interpret=True)


@pytest.mark.parametrize("causal", [False, True])
def test_lowers_to_triton_for_gpu(monkeypatch, causal):
    x = jnp.zeros((2, 256, 2, 64), jnp.bfloat16)
    fn = lambda q, k, v: flash_attention(q, k, v, jnp.array([256, 100]), causal=causal)
    assert triton_kernel_count(monkeypatch, fn, x, x, x) == 3    # forward, dq, dk/dv
