"""Helpers shared by the ops: dispatch, padding to kernel tiles, masks, in-kernel matmuls and
the FlashAttention-2 loops of the flash and block-sparse kernels.

Triton tiles must have power-of-two sizes and its matmuls need every side >= 16, so the
wrappers pad the sequence to a multiple of the block and the feature axes to a power of
two >= 16 with zeros, and slice the result back; padding never changes a real output.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from lra.kernels._compat import compiler_params
from lra.kernels.errors import KernelError

IMPLS = ("auto", "xla", "pallas")
# Set to "1" to run every kernel in the Pallas interpreter, as if called with interpret=True.
INTERPRET_ENV = "LRA_PALLAS_INTERPRET"
# A large negative logit that stays finite in float32 (exp of it underflows to 0).
NEG = float(jnp.finfo(jnp.float32).min) / 2


def use_kernel(impl: str, interpret: bool) -> bool:
    """Whether to run the Pallas kernel: `auto` means GPU/TPU, or the interpreter if asked."""
    if impl not in IMPLS:
        raise KernelError(f"model.impl={impl!r} is not one of {', '.join(IMPLS)}")
    if impl == "xla":
        return False
    on_device = jax.default_backend() in ("gpu", "tpu")
    if impl == "pallas" and not (on_device or interpret):
        raise KernelError(
            "model.impl='pallas' needs a GPU or TPU; on CPU use model.impl=auto or xla "
            f"(or interpret=True / {INTERPRET_ENV}=1 to run the kernel in the Pallas interpreter)"
        )
    return on_device or interpret


def interpret_mode(interpret: bool) -> bool:
    """`interpret`, or True when $LRA_PALLAS_INTERPRET is "1" (read when the op is traced)."""
    return interpret or os.environ.get(INTERPRET_ENV) == "1"


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def feature_size(d: int) -> int:
    """The padded size of a feature axis: a power of two >= 16."""
    return max(16, next_pow2(d))


def tile(requested: int, length: int, name: str) -> int:
    """A power-of-two tile >= 16 no longer than the (power-of-two-rounded) length."""
    if requested < 16 or requested & (requested - 1):
        raise KernelError(f"{name}={requested} must be a power of two >= 16 (a Triton tile size)")
    return min(requested, max(16, next_pow2(length)))


def pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    """Pad `x` with `value` along `axis` up to `size`."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def full_lengths(lengths, batch: int, length: int) -> jax.Array:
    """int32[B] valid-key counts clipped to [0, length]; all keys valid when None."""
    if lengths is None:
        return jnp.full((batch,), length, jnp.int32)
    lengths = jnp.asarray(lengths)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {lengths.shape}")
    return jnp.clip(lengths.astype(jnp.int32), 0, length)


def lengths_from_mask(mask: jax.Array) -> jax.Array:
    """int32[B] from a prefix padding mask bool[B, L] (True at the first `length` tokens)."""
    return jnp.sum(mask, axis=1, dtype=jnp.int32)


def cdiv(a, b: int):
    """Ceiling division of a traced non-negative int32 by a static int (Triton-safe)."""
    return lax.div(a + (b - 1), b)


def mm(a, b):
    """a @ b with float32 accumulation."""
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def mm_t(a, b):
    """a @ b.T with float32 accumulation."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def t_mm(a, b):
    """a.T @ b with float32 accumulation."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def softmax_rows(s, allowed):
    """Row softmax of `s` over `allowed` entries; a row with none gets all zeros.

    Returns (p, lse) with lse = 0 on empty rows (their p is zero whatever lse is).
    """
    s = jnp.where(allowed, s, NEG)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.where(allowed, jnp.exp(s - m), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    safe = jnp.where(total > 0, total, 1.0)
    lse = jnp.where(total > 0, m + jnp.log(safe), 0.0)
    return e / safe, lse[..., 0]


def visible(q_pos, k_pos, length, causal: bool, window: int | None = None):
    """bool[..., Lq, Lk]: key j is visible to query i iff k_pos[j] < length, and also
    k_pos[j] <= q_pos[i] when causal and |q_pos[i] - k_pos[j]| < window when one is given."""
    allowed = k_pos[None, :] < length
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])
    if window is not None:
        allowed = allowed & (jnp.abs(q_pos[:, None] - k_pos[None, :]) < window)
    return allowed


def online_softmax(q, num_blocks, key_block, scale: float):
    """One query block's attention over key blocks 0 <= j < num_blocks, by FlashAttention-2's
    online softmax (Dao 2023, Algorithm 1): the running max m, running sum l and unnormalised
    output are rescaled by exp(m_old - m_new) at each block.

    key_block(j) -> (k, v, allowed). Returns (out float32, lse); a row with no allowed key
    gets zeros and lse 0.
    """
    def body(j, carry):
        acc, m, l = carry
        k, v, allowed = key_block(j)
        s = jnp.where(allowed, mm_t(q, k) * scale, NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.where(allowed, jnp.exp(s - m_new[:, None]), 0.0)
        rescale = jnp.exp(m - m_new)
        l = rescale * l + jnp.sum(p, axis=1)
        acc = rescale[:, None] * acc + mm(p.astype(v.dtype), v)
        return acc, m_new, l

    rows = q.shape[0]
    init = (jnp.zeros(q.shape, jnp.float32), jnp.full((rows,), NEG, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    acc, m, l = lax.fori_loop(0, num_blocks, body, init)
    safe = jnp.where(l > 0, l, 1.0)
    return acc / safe[:, None], jnp.where(l > 0, m + jnp.log(safe), 0.0)


def _grad_scores(q, k, v, do, lse, delta, allowed, scale: float):
    """Probabilities p (recomputed from the logsumexp) and score gradients ds of one
    (query block, key block) pair: FlashAttention-2's Algorithm 2, with delta = rowsum(dO * O)."""
    p = jnp.where(allowed, jnp.exp(mm_t(q, k) * scale - lse[:, None]), 0.0)
    return p, p * (mm_t(do, v) - delta[:, None])


def online_softmax_dq(q, do, lse, delta, num_blocks, key_block, scale: float):
    """dQ (float32) of one query block over key blocks 0 <= j < num_blocks;
    key_block(j) -> (k, v, allowed) as in `online_softmax`."""
    def body(j, dq):
        k, v, allowed = key_block(j)
        _, ds = _grad_scores(q, k, v, do, lse, delta, allowed, scale)
        return dq + mm(ds.astype(k.dtype), k)

    return lax.fori_loop(0, num_blocks, body, jnp.zeros(q.shape, jnp.float32)) * scale


def online_softmax_dkv(k, v, first, last, query_block, scale: float):
    """dK, dV (float32) of one key block over query blocks first <= i < last;
    query_block(i) -> (q, do, lse, delta, allowed)."""
    def body(i, carry):
        dk, dv = carry
        q, do, lse, delta, allowed = query_block(i)
        p, ds = _grad_scores(q, k, v, do, lse, delta, allowed, scale)
        return dk + t_mm(ds.astype(q.dtype), q), dv + t_mm(p.astype(do.dtype), do)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(first, last, body, (zeros, zeros))
    return dk * scale, dv


def custom_vjp(forward, backward):
    """The op `op(cfg, *inputs) = forward(*inputs, cfg)[0]` with the gradient of
    `backward(*inputs, *outputs, do, cfg)`, where `outputs` is all that `forward` returned
    (the output, then what the backward pass needs). `backward` returns the gradients of
    the first inputs (q, k, v); the others get none."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def op(cfg, *inputs):
        return forward(*inputs, cfg)[0]

    def fwd(cfg, *inputs):
        outputs = forward(*inputs, cfg)
        return outputs[0], (inputs, outputs)

    def bwd(cfg, residuals, do):
        inputs, outputs = residuals
        grads = backward(*inputs, *outputs, do, cfg)
        return (*grads, *[None] * (len(inputs) - len(grads)))

    op.defvjp(fwd, bwd)
    return op


def pallas_call(kernel, cfg, grid, in_specs, out_specs, out_shape, name):
    """`pl.pallas_call` of `kernel(..., cfg=cfg)` with the Triton params and interpret flag of `cfg`."""
    return pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=compiler_params(num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                                        interpret=cfg.interpret),
        interpret=cfg.interpret,
        name=name,
    )
