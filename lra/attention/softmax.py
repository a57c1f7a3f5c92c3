"""Vanilla softmax attention (Vaswani et al. 2017, §3.2.1, Eq. 1): the baseline.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

O(n^2) time; O(n^2) memory on the XLA path. On CPU the core is the XLA reference. On
GPU (`impl="auto"`) it is cuDNN's fused flash attention, through
`jax.nn.dot_product_attention(implementation="cudnn")`, where cuDNN takes the inputs
(`gpu_path`), and the `kernels.flash` Pallas kernel (FlashAttention-2 tiling, O(n)
memory) otherwise; `impl="pallas"` and TPUs always take the Pallas kernel. All agree at
every real token: the kernels read the padding mask as lengths, which holds because
masks are built from sequence lengths (a prefix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lra.attention import register
from lra.attention.base import MultiHeadAttention, dense_attention, use_pallas
from lra.kernels import _common
from lra.kernels.flash import flash_attention

CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)


def gpu_path(dtype, head_dim: int, capability: tuple[int, int] | None) -> str:
    """"cudnn" or "pallas": the GPU path of a softmax core on `dtype` inputs.

    cuDNN wherever `jax.nn.dot_product_attention(implementation="cudnn")` accepts the
    inputs and the mask, the Pallas kernel otherwise. The constraints are those of jax's checks
    (jax._src.cudnn.fused_attention_stablehlo: check_layout, check_is_flash_attention)
    and cuDNN's support matrix: fp16/bf16 inputs (no fp32, so the float32 models stay on
    Pallas), a GPU of compute capability >= 8.0 (`capability`, None when unknown or not
    CUDA), head dim a multiple of 8 and <= 256 from Hopper (9.0) on, <= 128 before. The
    mask is always supported: padding as key_value_seq_lengths, causal as is_causal.
    """
    if capability is None or capability < (8, 0) or jnp.dtype(dtype) not in CUDNN_DTYPES:
        return "pallas"
    most = 256 if capability >= (9, 0) else 128
    return "cudnn" if head_dim % 8 == 0 and head_dim <= most else "pallas"


def device_capability(device) -> tuple[int, int] | None:
    """A CUDA device's compute capability as (major, minor); None for any other device."""
    try:
        major, minor = str(device.compute_capability).split(".")
        return int(major), int(minor)
    except (AttributeError, ValueError):
        return None


def cudnn_attention(q, k, v, lengths, *, causal: bool, implementation: str = "cudnn"):
    """The cuDNN call of the GPU path; tests run the same call with implementation="xla".

    A row with no real key gets one (a padding key) so that its output, never used, is
    finite whatever cuDNN does with an empty row.
    """
    return jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=jnp.maximum(lengths, 1), is_causal=causal,
        implementation=implementation)


@register("softmax", paper="Vaswani et al. 2017", complexity="O(n^2) time and memory")
class SoftmaxAttention(MultiHeadAttention):
    def core(self, q, k, v, mask, *, deterministic):
        if not use_pallas(self.cfg.impl):
            return dense_attention(q, k, v, mask, causal=self.cfg.causal)
        lengths = _common.lengths_from_mask(mask)
        if self.cfg.impl == "auto" and jax.default_backend() == "gpu" and gpu_path(
                q.dtype, q.shape[-1], device_capability(jax.devices()[0])) == "cudnn":
            return cudnn_attention(q, k, v, lengths, causal=self.cfg.causal)
        return flash_attention(q, k, v, lengths, causal=self.cfg.causal, impl="pallas")
