"""Pallas kernels for the attention cores: one op per module, each with its Pallas kernels
(forward and backward), a pure-jnp reference and a custom_vjp.

Every op takes `impl` ("auto": Pallas on GPU/TPU, the XLA reference on CPU; "xla";
"pallas") and `interpret` (run the kernels in the Pallas interpreter, e.g. on CPU in
tests). Layout [B, L, H, Dh] like the attention cores; padding is given as lengths int32[B].
"""

from lra.kernels.block_sparse import block_sparse_attention
from lra.kernels.flash import flash_attention
from lra.kernels.linear import linear_attention
from lra.kernels.topk import topk_attention

__all__ = ["block_sparse_attention", "flash_attention", "linear_attention", "topk_attention"]
