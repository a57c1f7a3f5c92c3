"""kernels.block_sparse: Pallas kernels (interpreted on CPU) against the jnp reference, the
reference against a dense masked softmax built from the layout, and the layout format
against lra.attention.blocksparse (the methods' XLA gather path)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lra.kernels.block_sparse import block_sparse_attention, block_sparse_reference, transpose_lists
from lra.kernels.flash import flash_reference
from triton_lowering import triton_kernel_count

from lra.attention import blocksparse

B, L, H, D = 2, 40, 2, 16
BLOCK = 16                             # 3 blocks, the last one ragged
INTERPRET = jax.default_backend() == "cpu"   # natively on a GPU (scripts/gpu_check.py)


def qkv(seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(key, (B, L, H, D)) for key in keys[:3])
    return q, k, v, jax.random.normal(keys[3], (B, L, H, D))


def content_lists(nq=3, seed=1):
    """Per-(batch, head) lists of distinct blocks, some rows empty, and a permutation."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.permutation(nq) for _ in range(B * H * nq)]).reshape(B, H, nq, nq)
    count = np.minimum(rng.integers(0, nq + 1, size=(B, H, nq)), 2)
    positions = np.stack([rng.permutation(L) for _ in range(B * H)]).reshape(B, H, L)
    return (jnp.asarray(idx[..., :2], jnp.int32), jnp.asarray(count, jnp.int32),
            jnp.asarray(positions, jnp.int32))


def dense_oracle(q, k, v, idx, count, lengths, positions, causal, block=BLOCK):
    """Masked softmax over all L keys with the mask the lists, lengths and positions imply."""
    nq = idx.shape[-2]
    idx = np.broadcast_to(np.asarray(idx), (B, H, nq, idx.shape[-1]))
    count = np.broadcast_to(np.asarray(count), (B, H, nq))
    blk = np.arange(L) // block
    allowed = np.zeros((B, H, L, L), bool)
    for b in range(B):
        for h in range(H):
            for i in range(nq):
                listed = idx[b, h, i, : count[b, h, i]]
                allowed[b, h, blk == i] = np.isin(blk, listed)[None, :]
    pos = np.asarray(positions)
    allowed &= (pos < np.asarray(lengths)[:, None, None])[:, :, None, :]
    if causal:
        allowed &= pos[:, :, None, :] <= pos[:, :, :, None]
    s = jnp.where(allowed, jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D), -1e30)
    p = jnp.where(allowed, jnp.exp(s - s.max(-1, keepdims=True)), 0.0)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def value_and_vjp(fn, q, k, v, cotangent):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(cotangent))


def test_reference_with_every_block_listed_is_dense():
    q, k, v, _ = qkv()
    lengths = jnp.array([40, 29])
    idx = jnp.tile(jnp.arange(3, dtype=jnp.int32), (3, 1))
    count = jnp.full((3,), 3, jnp.int32)
    for causal in (False, True):
        got = jax.jit(lambda *a, c=causal: block_sparse_reference(
            *a, idx, count, lengths, block_size=BLOCK, causal=c))(q, k, v)
        want = jax.jit(lambda *a, c=causal: flash_reference(*a, lengths, causal=c))(q, k, v)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_matches_dense_oracle_on_content_lists(causal):
    q, k, v, _ = qkv()
    lengths = jnp.array([40, 17])
    idx, count, positions = content_lists()
    got = jax.jit(lambda *a: block_sparse_attention(
        *a, idx, count, lengths, block_size=BLOCK, causal=causal, positions=positions,
        impl="xla"))(q, k, v)
    want = dense_oracle(q, k, v, idx, count, lengths, positions, causal)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["band", "per_head"])
def test_layout_format_matches_lra_blocksparse(kind):
    """Same layouts, same answers as the methods' XLA path: a band with causal and window
    masks; a per-head [H, n, m] layout with spare rows and blocks past the input."""
    q, k, v, _ = qkv()
    lengths = jnp.array([40, 23])
    mask = jnp.arange(L)[None, :] < lengths[:, None]
    if kind == "band":
        idx, count = blocksparse.band_layout(4, 1, 0)
        extra = dict(block_size=12, causal=True, window=12)
    else:
        rng = np.random.default_rng(3)
        member = rng.random((H, 5, 5)) < 0.5                     # a layout built for 5 blocks
        idx, count = blocksparse.compact_layout(member, 4)
        extra = dict(block_size=BLOCK)
    want = jax.jit(lambda *a: blocksparse.block_sparse_attention(*a, mask, idx, count, **extra))
    got = jax.jit(lambda *a: block_sparse_attention(*a, idx, count, lengths, impl="xla", **extra))
    np.testing.assert_allclose(got(q, k, v), want(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout, causal, lengths", [
    ("static", False, (40, 17)),   # block 12 in tiles of 16, window 10
    ("content", True, (40, 0)),    # per-(batch, head) lists, permuted positions
])
def test_kernel_matches_reference_values_and_gradients(layout, causal, lengths):
    q, k, v, ct = qkv()
    lengths = jnp.array(lengths)
    if layout == "static":
        idx, count = blocksparse.band_layout(4, 1, 1)
        extra = dict(block_size=12, window=10)
    else:
        idx, count, positions = content_lists()
        extra = dict(block_size=BLOCK, positions=positions)

    def run(impl, interpret):
        fn = lambda q, k, v: block_sparse_attention(q, k, v, idx, count, lengths, causal=causal,
                                                    impl=impl, interpret=interpret, **extra)
        return jax.jit(lambda *a: value_and_vjp(fn, *a))(q, k, v, ct)

    got, want = run("pallas", INTERPRET), run("xla", False)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all(), name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    if lengths[1] == 0:
        np.testing.assert_array_equal(got[0][1], 0.0)


def test_transpose_lists():
    idx = jnp.array([[0, 2], [2, 1], [1, -1]], jnp.int32)
    count = jnp.array([2, 1, 2], jnp.int32)
    t_idx, t_count = transpose_lists(idx, count, 3)
    np.testing.assert_array_equal(t_count, [1, 1, 2])   # key block 2 is listed by q blocks 0, 1
    assert t_idx[0, 0] == 0 and t_idx[1, 0] == 2 and list(t_idx[2, :2]) == [0, 1]


def test_layout_must_cover_the_input():
    q, k, v, _ = qkv()
    idx, count = blocksparse.band_layout(2, 1, 1)
    with pytest.raises(ValueError, match="layout"):
        block_sparse_attention(q, k, v, idx, count, block_size=BLOCK, impl="xla")


@pytest.mark.parametrize("lead, causal", [((), False), ((2,), False), ((2, 2), True)])
def test_lowers_to_triton_for_gpu(monkeypatch, lead, causal):
    x = jnp.zeros((2, 256, 2, 64), jnp.bfloat16)
    idx, count = jnp.zeros((*lead, 6, 3), jnp.int32), jnp.ones((*lead, 6), jnp.int32)
    fn = lambda q, k, v: block_sparse_attention(q, k, v, idx, count, jnp.array([256, 100]),
                                                block_size=50, causal=causal, window=70)
    assert triton_kernel_count(monkeypatch, fn, x, x, x) == 3    # forward, dq, dk/dv
