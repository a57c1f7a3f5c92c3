"""Softmax's GPU path: the cuDNN-or-Pallas decision, the cuDNN call's mask translation (run
with implementation="xla" on CPU) and the layer's dispatch."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention import softmax
from lra.attention.base import dense_attention

HOPPER, AMPERE, TURING = (9, 0), (8, 0), (7, 5)


@pytest.mark.parametrize("dtype, head_dim, capability, want", [
    (jnp.float32, 64, HOPPER, "pallas"),      # cuDNN takes fp16/bf16 only
    (jnp.bfloat16, 64, HOPPER, "cudnn"),
    (jnp.float16, 128, AMPERE, "cudnn"),
    (jnp.bfloat16, 256, HOPPER, "cudnn"),
    (jnp.bfloat16, 256, AMPERE, "pallas"),    # <= 128 before Hopper
    (jnp.bfloat16, 264, HOPPER, "pallas"),    # <= 256
    (jnp.bfloat16, 12, HOPPER, "pallas"),     # a multiple of 8
    (jnp.bfloat16, 64, TURING, "pallas"),     # cuDNN flash attention needs SM80+
    (jnp.bfloat16, 64, None, "pallas"),       # not a CUDA device
])
def test_gpu_path_decision(dtype, head_dim, capability, want):
    assert softmax.gpu_path(dtype, head_dim, capability) == want


@pytest.mark.parametrize("value, want", [("9.0", (9, 0)), ("8.6", (8, 6)), ("gfx90a", None)])
def test_device_capability(value, want):
    assert softmax.device_capability(types.SimpleNamespace(compute_capability=value)) == want
    assert softmax.device_capability(object()) is None


@pytest.mark.parametrize("causal", [False, True])
def test_cudnn_call_equals_dense_attention_at_real_tokens(causal):
    """The exact call of the cuDNN branch, run by jax's XLA implementation: the lengths as
    key_value_seq_lengths and is_causal mask as dense_attention's mask does."""
    b, length, h, d = 3, 24, 2, 16
    q, k, v = (jax.random.normal(key, (b, length, h, d)) for key in jax.random.split(jax.random.key(0), 3))
    lengths = jnp.array([24, 9, 0], jnp.int32)
    mask = jnp.arange(length)[None, :] < lengths[:, None]
    got = softmax.cudnn_attention(q, k, v, lengths, causal=causal, implementation="xla")
    want = dense_attention(q, k, v, mask, causal=causal)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(got)).all()          # the all-padding row too


@pytest.mark.parametrize("impl, dtype, want", [
    ("auto", jnp.bfloat16, "cudnn"), ("auto", jnp.float32, "pallas"), ("pallas", jnp.bfloat16, "pallas")])
def test_layer_dispatch_on_gpu(monkeypatch, impl, dtype, want):
    calls = []
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *a: [types.SimpleNamespace(compute_capability="9.0")])
    monkeypatch.setattr(softmax, "cudnn_attention", lambda q, *a, **kw: calls.append("cudnn") or q)
    monkeypatch.setattr(softmax, "flash_attention", lambda q, *a, **kw: calls.append("pallas") or q)
    cfg = attention.AttentionConfig(dim=32, num_heads=2, max_len=16, impl=impl)
    layer = attention.get("softmax")(cfg, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 16, 2, 16), dtype)
    layer.core(x, x, x, jnp.ones((1, 16), bool), deterministic=True)
    assert calls == [want]
