"""Sparse Transformer (strided, fixed) and the shared block-sparse machinery.

Each method is checked against a naive reference written here: the n x n allowed
pattern is built from the paper's set definitions and a masked softmax runs on it.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from lra.kernels import _common

from lra import attention
from lra.attention.base import AttentionConfig, dense_attention
from lra.attention.blocksparse import band_layout, block_sparse_attention, compact_layout
from lra.errors import LRAError

B, L, H, DH = 2, 37, 4, 8
LENGTHS = (37, 26)


def qkv_mask(length=L, heads=H, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    q, k, v = (jax.random.normal(key, (B, length, heads, DH)) for key in ks)
    mask = np.arange(length)[None, :] < np.array(LENGTHS)[:, None]
    return q, k, v, jnp.asarray(mask)


def naive(q, k, v, mask, allowed):
    """float64 masked softmax; allowed: bool[L, L] or [H, L, L]; empty rows give 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    allowed = np.broadcast_to(allowed, logits.shape[1:])[None] & np.asarray(mask)[:, None, None]
    logits = np.where(allowed, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(logits - np.where(np.isfinite(top), top, 0)), 0.0)
    weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def real(x, mask):
    return np.where(np.asarray(mask)[:, :, None, None], np.asarray(x, np.float64), 0.0)


def strided_patterns(n, l, causal):
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    local, every = np.abs(i - j) < l, (i - j) % l == 0
    if causal:
        local, every = local & (j <= i), every & (j <= i)
    return local, every


def split_heads(first, second):
    return np.stack([first] * (H // 2) + [second] * (H // 2))


def core(name, causal=False, **hyper):
    """The method's jitted core (q, k, v, mask) -> out, in eval mode."""
    cfg = AttentionConfig(dim=H * DH, num_heads=H, max_len=64, causal=causal)
    model = attention.get(name)(cfg, rngs=nnx.Rngs(0), **hyper)
    return jax.jit(lambda q, k, v, m: model.core(q, k, v, m, deterministic=True))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stride", [8, 5])
def test_strided_matches_dense_mask_reference(causal, stride):
    q, k, v, mask = qkv_mask()
    out = core("sparse_strided", causal, stride=stride)(q, k, v, mask)
    ref = naive(q, k, v, mask, split_heads(*strided_patterns(L, stride, causal)))
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)
    assert np.isfinite(np.asarray(out)).all()


def fixed_key_sets(n, l, c, heads, offsets, causal):
    """bool[H, n, n]: the key set S_i of each head and query, key by key from §4.3's sets
    (A1: j in i's block of l; A2: j mod l in the head's summary subblock of c, subblock
    g mod (l / c) from the block's end for the g-th head reading A2 when offsets, else the
    last) and §5.1's head forms (merged: A1 or A2; split: A1 on the first half, A2 after)."""
    a2_heads = list(range(H)) if heads == "merged" else list(range(H // 2, H))
    sets = np.zeros((H, n, n), bool)
    for h in range(H):
        sub = a2_heads.index(h) % (l // c) if offsets and h in a2_heads else 0
        for i in range(n):
            for j in range(n):
                a1 = j // l == i // l
                a2 = l - (sub + 1) * c <= j % l < l - sub * c
                member = (a1 or a2) if heads == "merged" else (a2 if h in a2_heads else a1)
                sets[h, i, j] = member and (j <= i or not causal)
    return sets


def layer(name, causal=False, impl="xla", **hyper):
    cfg = AttentionConfig(dim=H * DH, num_heads=H, max_len=64, causal=causal, impl=impl)
    return attention.get(name)(cfg, rngs=nnx.Rngs(0), **hyper)


def layer_reference(model, x, mask, sets):
    """float64 forward of the layer's projections around a dense softmax over `sets`."""
    x = np.asarray(x, np.float64)

    def dense(lin, y):
        return y @ np.asarray(lin.kernel[...], np.float64) + np.asarray(lin.bias[...], np.float64)

    q, k, v = (dense(lin, x).reshape(*x.shape[:2], H, DH)
               for lin in (model.query, model.key, model.value))
    return dense(model.out, naive(q, k, v, mask, sets).reshape(x.shape))


def layer_output(model, x, mask):
    return np.asarray(jax.jit(lambda x, m: model(x, m, deterministic=True))(x, mask))


def real_rows(y, mask):
    return np.where(np.asarray(mask)[:, :, None], np.asarray(y, np.float64), 0.0)


def inputs():
    mask = jnp.asarray(np.arange(L)[None, :] < np.array(LENGTHS)[:, None])
    return jax.random.normal(jax.random.key(5), (B, L, H * DH)), mask


FIXED_CASES = [(8, 3, False), (8, 2, True), (8, 4, True)]  # (l, c, offsets); l/c = 4, 2 with offsets


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", ["merged", "split"])
@pytest.mark.parametrize("stride,summary,offsets", FIXED_CASES)
def test_fixed_layer_matches_set_reference(causal, heads, stride, summary, offsets):
    x, mask = inputs()
    model = layer("sparse_fixed", causal, stride=stride, summary=summary, heads=heads,
                  summary_offsets=offsets)
    ref = layer_reference(model, x, mask, fixed_key_sets(L, stride, summary, heads, offsets, causal))
    out = layer_output(model, x, mask)
    np.testing.assert_allclose(real_rows(out, mask), real_rows(ref, mask), atol=1e-5)
    assert np.isfinite(out).all()


def test_reference_tells_the_head_forms_apart():
    """The checks above can fail: the merged layer is far from the split and offset sets."""
    x, mask = inputs()
    model = layer("sparse_fixed", stride=8, summary=2)
    out = real_rows(layer_output(model, x, mask), mask)
    for heads, offsets in [("split", False), ("merged", True)]:
        wrong = layer_reference(model, x, mask, fixed_key_sets(L, 8, 2, heads, offsets, False))
        assert np.abs(out - real_rows(wrong, mask)).max() > 1e-2


@pytest.mark.parametrize("causal,heads,offsets", [(True, "merged", True), (False, "split", False)])
def test_fixed_pallas_matches_set_reference(monkeypatch, causal, heads, offsets):
    """The Pallas path (one block-sparse call, blocks of gcd(l, c) = 2, per-head layout)."""
    if jax.default_backend() == "cpu":
        monkeypatch.setenv(_common.INTERPRET_ENV, "1")
    x, mask = inputs()
    model = layer("sparse_fixed", causal, "pallas", stride=8, summary=2, heads=heads,
                  summary_offsets=offsets)
    ref = layer_reference(model, x, mask, fixed_key_sets(L, 8, 2, heads, offsets, causal))
    np.testing.assert_allclose(real_rows(layer_output(model, x, mask), mask),
                               real_rows(ref, mask), atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", ["merged", "split"])
def test_fixed_full_pattern_is_softmax(causal, heads):
    """l >= n and c = l: both factors see every (past) key."""
    q, k, v, mask = qkv_mask()
    out = core("sparse_fixed", causal, stride=40, summary=40, heads=heads)(q, k, v, mask)
    ref = dense_attention(q, k, v, mask, causal=causal)
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_strided_factors_reach_softmax_at_their_limits(causal):
    """l >= n makes the local heads full softmax; l = 1 makes the strided heads full softmax."""
    q, k, v, mask = qkv_mask()
    ref = real(dense_attention(q, k, v, mask, causal=causal), mask)
    wide = core("sparse_strided", causal, stride=40)(q, k, v, mask)
    np.testing.assert_allclose(real(wide, mask)[:, :, : H // 2], ref[:, :, : H // 2], atol=1e-5)
    unit = core("sparse_strided", causal, stride=1)(q, k, v, mask)
    np.testing.assert_allclose(real(unit, mask)[:, :, H // 2 :], ref[:, :, H // 2 :], atol=1e-5)


def test_causal_fixed_empty_summary_rows_are_zero():
    """Causal split fixed: queries before the first summary column have an empty A^(2)."""
    q, k, v, mask = qkv_mask()
    out = core("sparse_fixed", True, stride=8, summary=3, heads="split")(q, k, v, mask)
    np.testing.assert_array_equal(np.asarray(out)[:, :5, H // 2 :], 0.0)
    assert np.abs(np.asarray(out)[:, 5:8, H // 2 :]).min() > 0


def test_paper_defaults():
    assert attention.info("sparse_strided").defaults == {"stride": 128}
    assert attention.info("sparse_fixed").defaults == {
        "stride": 128, "summary": 32, "heads": "merged", "summary_offsets": False}


@pytest.mark.parametrize("name,heads,hyper,message", [
    ("sparse_strided", 3, {}, "model.num_heads=3 must be even"),
    ("sparse_strided", 4, {"stride": 0}, "model.attention_kwargs.stride=0"),
    ("sparse_fixed", 4, {"heads": "both"}, "model.attention_kwargs.heads='both' is not one of"),
    ("sparse_fixed", 3, {"heads": "split"}, "model.num_heads=3 must be even"),
    ("sparse_fixed", 4, {"stride": 8, "summary": 9}, "model.attention_kwargs.summary=9"),
    ("sparse_fixed", 4, {"stride": 8, "summary": 3, "summary_offsets": True},
     "model.attention_kwargs.summary_offsets=True"),
])
def test_refusals_name_the_key(name, heads, hyper, message):
    with pytest.raises(LRAError, match=re.escape(message)) as err:
        attention.get(name)(AttentionConfig(heads * DH, heads, 64), rngs=nnx.Rngs(0), **hyper)
    assert "\n" not in str(err.value)


def test_merged_fixed_takes_an_odd_head_count():
    attention.get("sparse_fixed")(AttentionConfig(3 * DH, 3, 64), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["sparse_strided", "sparse_fixed"])
def test_memory_is_far_below_dense(name):
    """At n = 1024 with l = 32 the compiled forward needs < 20% of dense attention's memory."""
    n = 1024
    shape = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, n), jnp.bool_)
    cfg = AttentionConfig(dim=32, num_heads=2, max_len=n)
    hyper = {"stride": 32} | ({"summary": 4} if name == "sparse_fixed" else {})
    model = attention.get(name)(cfg, rngs=nnx.Rngs(0), **hyper)

    def temp(f):
        return jax.jit(f).lower(shape, shape, shape, mask).compile().memory_analysis().temp_size_in_bytes

    sparse = temp(lambda q, k, v, m: model.core(q, k, v, m, deterministic=True))
    assert sparse < 0.2 * temp(dense_attention)


# --- the shared machinery: layouts given per head and per example ---------------------------


def expand(member, bs, n):
    """Block membership [..., nq, nb] -> position pattern [..., n, n]."""
    return np.kron(member, np.ones((bs, bs), bool))[..., :n, :n]


@pytest.mark.parametrize("per_batch", [False, True])
def test_block_sparse_per_head_layouts_match_reference(per_batch):
    bs, nb = 8, 5
    q, k, v, mask = qkv_mask()
    shape = (B, H, nb, nb) if per_batch else (H, nb, nb)
    member = np.asarray(jax.random.bernoulli(jax.random.key(3), 0.5, shape))
    member = member | np.eye(nb, dtype=bool)
    idx, count = compact_layout(member, nb)
    out = jax.jit(lambda *a: block_sparse_attention(*a, idx, count, block_size=bs, causal=True))(
        q, k, v, mask
    )
    pattern = expand(member, bs, L) & np.tril(np.ones((L, L), bool))
    if per_batch:
        ref = np.concatenate([naive(q[i : i + 1], k[i : i + 1], v[i : i + 1], mask[i : i + 1],
                                    pattern[i]) for i in range(B)])
    else:
        ref = naive(q, k, v, mask, pattern)
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)


def test_block_sparse_ignores_blocks_past_the_input():
    """A layout drawn for a longer max_len serves a shorter input: extra blocks are padding."""
    bs = 8
    q, k, v, mask = qkv_mask()
    member = np.ones((8, 8), bool)
    idx, count = compact_layout(member, 8)
    out = jax.jit(lambda *a: block_sparse_attention(*a, idx, count, block_size=bs, window=11))(
        q, k, v, mask
    )
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    ref = naive(q, k, v, mask, np.abs(i - j) < 11)
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)


@pytest.mark.parametrize("before,after,causal,window", [
    (0, 0, False, None), (1, 0, True, 8), (1, 1, False, 8), (2, 1, True, None),
])
def test_static_band_slices_match_the_gather(before, after, causal, window):
    """A static (numpy) band layout is read from shifted slices; the same layout as a jax
    array goes through the gather. Both give the same output and gradients."""
    bs = 8
    q, k, v, mask = qkv_mask()
    idx, count = band_layout(-(-L // bs), before, after)

    def grad(layout):  # the layout is closed over: numpy stays static under jit
        def loss(q, k, v):
            out = block_sparse_attention(q, k, v, mask, *layout, block_size=bs, causal=causal,
                                         window=window)
            return jnp.sum(jnp.where(mask[..., None, None], out, 0.0) ** 2), out

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (g_slices, out), (g_gather, ref) = grad((idx, count)), grad(
        (jnp.asarray(idx), jnp.asarray(count)))
    np.testing.assert_allclose(real(out, mask), real(ref, mask), atol=1e-5)
    for a, b in zip(g_slices, g_gather, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_compact_layout_puts_valid_blocks_first():
    member = np.array([[False, True, False, True], [True, True, True, False]])
    idx, count = compact_layout(member, 3)
    np.testing.assert_array_equal(count, [2, 3])
    np.testing.assert_array_equal(idx, [[1, 3, 0], [0, 1, 2]])
    jidx, jcount = compact_layout(jnp.asarray(member), 3)
    np.testing.assert_array_equal(jidx, idx)
    np.testing.assert_array_equal(jcount, count)
