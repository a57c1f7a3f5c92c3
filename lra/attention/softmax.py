"""Vanilla softmax attention (Vaswani et al. 2017, §3.2.1, Eq. 1): the baseline.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

O(n^2) time; O(n^2) memory on the XLA path. On GPU/TPU (`impl="auto"` or "pallas") the
core is the `kernels.flash` Pallas kernel (FlashAttention-2 tiling, O(n) memory); on CPU
it is the XLA reference. Both agree at every real token; the kernel reads the padding
mask as lengths, which holds because masks are built from sequence lengths (a prefix).
"""

from lra.attention import register
from lra.attention.base import MultiHeadAttention, dense_attention, use_pallas
from lra.kernels import _common
from lra.kernels.flash import flash_attention


@register("softmax", paper="Vaswani et al. 2017", complexity="O(n^2) time and memory")
class SoftmaxAttention(MultiHeadAttention):
    def core(self, q, k, v, mask, *, deterministic):
        if use_pallas(self.cfg.impl):
            return flash_attention(q, k, v, _common.lengths_from_mask(mask),
                                   causal=self.cfg.causal, impl="pallas")
        return dense_attention(q, k, v, mask, causal=self.cfg.causal)
