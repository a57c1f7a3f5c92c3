"""Conformance of every registered attention method to the interface in DESIGN.md.

Parametrised over `attention.names()`, so a new method is tested without new code.
Structural hyperparameters come from the method's `size=smoke` preset (configs/models.py).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from lra.configs import models

from lra import attention

METHODS = attention.names()
B, L, D, H = 2, 48, 32, 4
MAX_LEN = 64
LENGTHS = (48, 37)


def build(name, seed=0, **overrides):
    cfg = attention.AttentionConfig(dim=D, num_heads=H, max_len=MAX_LEN, dropout=0.1, **overrides)
    kwargs = models.preset(name, "smoke")
    return attention.get(name)(cfg, rngs=nnx.Rngs(seed), **kwargs)


def inputs(length=L, batch=B, seed=1, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(seed), (batch, length, D), dtype)
    mask = jnp.arange(length)[None, :] < jnp.array(LENGTHS[:batch])[:, None]
    return x, mask


def real(out, mask):
    return np.where(np.asarray(mask)[..., None], np.asarray(out, np.float32), 0.0)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_and_dtype(name, dtype):
    x, mask = inputs(dtype=dtype)
    out = build(name)(x, mask, deterministic=True)
    assert out.shape == x.shape and out.dtype == dtype
    assert np.isfinite(np.asarray(out, np.float32)).all()


@pytest.mark.parametrize("name", METHODS)
def test_jit_matches_eager(name):
    model = build(name)
    x, mask = inputs()
    eager = model(x, mask, deterministic=True)
    jitted = nnx.jit(lambda m, x, mask: m(x, mask, deterministic=True))(model, x, mask)
    np.testing.assert_allclose(real(jitted, mask), real(eager, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_finite_gradients(name):
    model = build(name)
    x, mask = inputs()

    def loss(m):
        out, _ = nnx.capture(m, nnx.Intermediate)(x, mask, deterministic=False)  # sown losses
        return jnp.sum(jnp.where(mask[..., None], out, 0.0) ** 2)

    grads = nnx.grad(loss)(model)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in leaves)


@pytest.mark.parametrize("name", METHODS)
def test_padding_invariance(name):
    """Appending padding, or changing padded inputs, never changes outputs at real positions."""
    model = build(name)
    x, mask = inputs()
    ref = model(x, mask, deterministic=True)
    noise = 100 * jax.random.normal(jax.random.key(7), (B, MAX_LEN - L, D))
    longer = jnp.concatenate([x, noise], axis=1)
    longer_mask = jnp.pad(mask, ((0, 0), (0, MAX_LEN - L)))
    out = model(longer, longer_mask, deterministic=True)
    np.testing.assert_allclose(real(out[:, :L], mask), real(ref, mask), rtol=1e-4, atol=1e-4)
    assert np.isfinite(np.asarray(out)).all()
    scrambled = jnp.where(mask[..., None], x, -50.0)
    out2 = model(scrambled, mask, deterministic=True)
    np.testing.assert_allclose(real(out2, mask), real(ref, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_batch_independence(name):
    model = build(name)
    x, mask = inputs()
    both = model(x, mask, deterministic=True)
    first = model(x[:1], mask[:1], deterministic=True)
    np.testing.assert_allclose(real(first, mask[:1]), real(both[:1], mask[:1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_eval_is_deterministic(name):
    model = build(name)
    x, mask = inputs()
    a = model(x, mask, deterministic=True)
    b = model(x, mask, deterministic=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", METHODS)
def test_causal_option_or_clear_refusal(name):
    """causal=True either works (output at i ignores inputs after i) or is refused with LRAError."""
    from lra.errors import LRAError

    try:
        model = build(name, causal=True)
    except LRAError:
        return
    x, mask = inputs()
    ref = model(x, mask, deterministic=True)
    changed = x.at[:, 30:].set(3.0)
    out = model(changed, mask, deterministic=True)
    np.testing.assert_allclose(np.asarray(out[:, :30]), np.asarray(ref[:, :30]), rtol=1e-4, atol=1e-4)


def test_registry_lists_paper_and_complexity():
    for name in METHODS:
        info = attention.info(name)
        assert info.paper and info.complexity
        plugins = os.environ.get("LRA_PLUGINS", "").split(",")
        assert info.cls.__module__.startswith("lra.attention.") or info.cls.__module__ in plugins
        assert len(sys.modules[info.cls.__module__].__doc__ or "") > 100, "cite the paper"



def test_unknown_method_is_a_clear_error():
    from lra.errors import LRAError

    with pytest.raises(LRAError, match="valid: softmax"):
        attention.get("no-such-method")
