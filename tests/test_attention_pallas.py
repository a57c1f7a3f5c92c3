"""Attention layers on their Pallas kernels equal the same layers on XLA.

Each method wired to `kernels/` is built twice from one seed (same weights, same random
layout), with `impl="pallas"` and `impl="xla"`, and compared at the size=smoke preset:
outputs and gradients with respect to the input, float32. On CPU the kernels run in the
Pallas interpreter ($LRA_PALLAS_INTERPRET=1, docs/kernels.md); on a GPU, natively.
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from lra.configs import models
from lra.kernels import _common
from lra.kernels.errors import KernelError

from lra import attention

B, L, D, H, MAX_LEN = 2, 48, 32, 4, 64
LENGTHS = (48, 29)  # ragged: 29 is inside a block of every smoke preset
ON_CPU = jax.default_backend() == "cpu"

# method, causal, the Pallas kernels its forward pass must call. One causal case (block-sparse
# causal + window, flash causal): interpreted kernels compile slowly, so the cases are few.
CASES = [
    ("local", False, {"block_sparse_fwd"}),
    ("sparse_strided", False, {"block_sparse_fwd", "flash_fwd"}),
    ("sparse_strided", True, {"block_sparse_fwd", "flash_fwd"}),
    ("sparse_fixed", False, {"block_sparse_fwd"}),
    ("bigbird", False, {"block_sparse_fwd", "flash_fwd"}),
    ("adamra", False, {"linear_reduce", "linear_readout"}),
    ("topk", False, {"topk_fwd"}),
]


@pytest.fixture
def interpreted(monkeypatch):
    if ON_CPU:
        monkeypatch.setenv(_common.INTERPRET_ENV, "1")


def build(name, impl, causal=False):
    cfg = attention.AttentionConfig(dim=D, num_heads=H, max_len=MAX_LEN, causal=causal, impl=impl)
    return attention.get(name)(cfg, rngs=nnx.Rngs(0), **models.preset(name, "smoke"))


def inputs():
    x = jax.random.normal(jax.random.key(1), (B, L, D))
    mask = jnp.arange(L)[None, :] < jnp.array(LENGTHS)[:, None]
    cotangent = jax.random.normal(jax.random.key(2), (B, L, D))
    return x, mask, cotangent


def value_and_grad(layer, x, mask, cotangent):
    """The layer's output and the gradient of <output, cotangent> with respect to x."""
    graphdef, state = nnx.split(layer)

    def run(state, x):
        layer = nnx.merge(graphdef, state)

        def loss(x):
            out = layer(x, mask, deterministic=True)
            return jnp.sum(out * cotangent), out

        (_, out), grad = jax.value_and_grad(loss, has_aux=True)(x)
        return out, grad

    # These programs compile for seconds and run for milliseconds: skip the backend's
    # optimisations (halves the compile time of the interpreted kernels).
    fast_compile = {"xla_backend_optimization_level": 0}
    return map(np.asarray, jax.jit(run, compiler_options=fast_compile)(state, x))


def kernels_called(layer, x, mask):
    jaxpr = jax.make_jaxpr(lambda x: layer(x, mask, deterministic=True))(x)
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                params = eqn.params  # the kernel's name: "name" now, "name_and_src_info" before
                found.add(str(params.get("name") or params["name_and_src_info"].name))
        for sub in jax.extend.core.subjaxprs(jaxpr):
            walk(sub)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize(("name", "causal", "expected"), CASES)
def test_pallas_equals_xla(interpreted, name, causal, expected):
    x, mask, cotangent = inputs()
    pallas, xla = build(name, "pallas", causal), build(name, "xla", causal)
    assert kernels_called(pallas, x, mask) == expected
    assert kernels_called(xla, x, mask) == set()
    out_p, grad_p = value_and_grad(pallas, x, mask, cotangent)
    out_x, grad_x = value_and_grad(xla, x, mask, cotangent)
    assert np.isfinite(out_p).all() and np.isfinite(grad_p).all()
    np.testing.assert_allclose(out_p, out_x, atol=1e-4, rtol=0)
    np.testing.assert_allclose(grad_p, grad_x, atol=1e-4, rtol=0)


@pytest.mark.skipif(not ON_CPU, reason="the Pallas kernels run natively off CPU")
def test_pallas_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv(_common.INTERPRET_ENV, raising=False)
    x, mask, _ = inputs()
    with pytest.raises(KernelError, match=_common.INTERPRET_ENV):
        build("local", "pallas")(x, mask, deterministic=True)
