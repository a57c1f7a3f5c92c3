"""Lower a kernel's forward and backward for CUDA on a CPU-only machine, and verify its Triton IR.

jax.export lowers every pallas_call through Pallas' Triton lowering without a GPU. The Triton
modules it produces are then checked by the MLIR verifier, the check the GPU's Triton parser
makes first (e.g. that an scf.for's bounds share one integer type), so IR that only a GPU
would reject fails here too.
"""

import jax
import jax.numpy as jnp
from jax import export
from jax._src.pallas.triton import lowering  # private: the one place the Triton module is built

TRITON_CALL = "__gpu$xla.gpu.triton"   # the custom call Pallas Triton kernels lower to


def triton_kernel_count(monkeypatch, fn, *args) -> int:
    """The number of Triton kernels in jit(grad(sum(fn))) lowered for CUDA, each verified."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")   # take the kernel path
    build = lowering.lower_jaxpr_to_triton_module

    def verified(*a, **kw):
        result = build(*a, **kw)
        result.module.operation.verify()
        return result

    monkeypatch.setattr(lowering, "lower_jaxpr_to_triton_module", verified)
    grad = jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), argnums=(0, 1, 2))
    checks = [export.DisabledSafetyCheck.custom_call(TRITON_CALL)]
    exported = export.export(jax.jit(grad), platforms=("cuda",), disabled_checks=checks)(*args)
    return exported.mlir_module().count(TRITON_CALL)
