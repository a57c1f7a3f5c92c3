"""Top-k attention (Gupta et al. 2021): exact limit, naive reference (values and grads), memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention.base import AttentionConfig, dense_attention
from lra.attention.topk import topk_attention as _topk_attention
from lra.errors import LRAError

topk_attention = jax.jit(_topk_attention, static_argnames=("top_k", "chunk", "causal"))


def qkv(length, batch=2, heads=2, dim=8, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(k, (batch, length, heads, dim)) for k in ks]


def ragged(length, lengths):
    return jnp.arange(length)[None, :] < jnp.array(lengths)[:, None]


def naive_topk(q, k, v, mask, top_k, causal):
    """Dense scores, mask, lax.top_k, softmax over the kept scores, gather the values."""
    n = q.shape[1]
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    allowed = mask[:, None, None, :]
    if causal:
        allowed = allowed & (jnp.arange(n)[None, :] <= jnp.arange(n)[:, None])
    vals, idx = jax.lax.top_k(jnp.where(allowed, s, -1e30), min(top_k, n))
    vh = jnp.swapaxes(v, 1, 2)  # [B, H, L, D]
    picked = jax.vmap(jax.vmap(lambda x, i: x[i]))(vh, idx)  # [B, H, L, k, D]
    return jnp.einsum("bhqk,bhqkd->bqhd", jax.nn.softmax(vals, axis=-1), picked)


@pytest.mark.parametrize("causal", [False, True])
def test_k_at_least_n_is_softmax(causal):
    q, k, v = qkv(21)
    mask = ragged(21, [21, 9])
    out = topk_attention(q, k, v, mask, top_k=64, chunk=8, causal=causal)
    ref = dense_attention(q, k, v, mask, causal=causal)
    real = np.asarray(mask)[..., None, None]
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, ref, 0), atol=1e-5)


@pytest.mark.parametrize(
    "length,top_k,chunk,causal",
    [(37, 5, 8, False), (24, 3, 24, False), (37, 4, 16, True), (19, 6, 5, True)],
)
def test_values_and_grads_match_naive_topk(length, top_k, chunk, causal):
    q, k, v = qkv(length, seed=length)
    mask = ragged(length, [length, length - 7])
    w = jax.random.normal(jax.random.key(9), q.shape) * mask[..., None, None]
    ours = lambda *a: topk_attention(*a, mask, top_k=top_k, chunk=chunk, causal=causal)
    ref = lambda *a: naive_topk(*a, mask, top_k, causal)

    @jax.jit
    def values_and_grads(q, k, v):
        out, vjp = jax.vjp(lambda *a: ours(*a) * w, q, k, v)
        ref_out, ref_vjp = jax.vjp(lambda *a: ref(*a) * w, q, k, v)
        return (out, *vjp(w)), (ref_out, *ref_vjp(w))

    got, want = values_and_grads(q, k, v)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_k_one_returns_the_best_keys_value():
    q, k, v = qkv(12, seed=3)
    mask = jnp.ones((2, 12), bool)
    out = topk_attention(q, k, v, mask, top_k=1, chunk=4)
    best = jnp.argmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)  # [B, H, L]
    picked = jnp.take_along_axis(jnp.swapaxes(v, 1, 2), best[..., None], axis=2)
    np.testing.assert_allclose(out, jnp.swapaxes(picked, 1, 2), atol=1e-6)


def test_padded_keys_are_never_picked():
    q, k, v = qkv(16, seed=4)
    mask = ragged(16, [16, 10])
    out = topk_attention(q, k, v, mask, top_k=3, chunk=16)
    k2 = k.at[1, 10:].set(50.0 * q[1, :6])  # padded keys that would win every score
    v2 = v.at[1, 10:].set(1e3)
    np.testing.assert_allclose(topk_attention(q, k2, v2, mask, top_k=3, chunk=16), out, atol=1e-6)


def test_gradient_memory_is_well_below_dense():
    n, dim = 2048, 16
    q, k, v = qkv(n, batch=1, heads=1, dim=dim)
    mask = jnp.ones((1, n), bool)

    def peak(core):
        grad = jax.grad(lambda *a: jnp.sum(core(*a, mask)), argnums=(0, 1, 2))
        stats = jax.jit(grad).lower(q, k, v).compile().memory_analysis()
        return stats.temp_size_in_bytes + stats.output_size_in_bytes

    ours = peak(lambda *a: topk_attention(*a, top_k=16, chunk=256))
    dense = peak(lambda q, k, v, m: dense_attention(q, k, v, m))
    assert ours < 0.25 * dense, (ours, dense)


def test_module_defaults_and_bad_hyperparameters():
    assert attention.info("topk").defaults == {"k": 64, "chunk": 1024}
    cfg = AttentionConfig(dim=16, num_heads=2, max_len=32)
    with pytest.raises(LRAError, match="model.attention_kwargs.k=0 must be >= 1"):
        attention.get("topk")(cfg, rngs=nnx.Rngs(0), k=0)
