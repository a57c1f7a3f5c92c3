"""BigBird (ITC): window + first/last global blocks + per-head random blocks.

The reference builds the n x n pattern from the definition (global rows and columns,
a 3-block window, the random blocks of each row) and runs a masked softmax on it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention
from lra.attention.base import AttentionConfig, dense_attention
from lra.attention.bigbird import BlockLayout
from lra.errors import LRAError

B, H, DH, MAX_LEN, BS = 2, 4, 8, 64, 8


def build(seed=0, max_len=MAX_LEN, **hyper):
    cfg = AttentionConfig(dim=H * DH, num_heads=H, max_len=max_len)
    hyper = {"block_size": BS, "random_blocks": 2} | hyper
    return attention.get("bigbird")(cfg, rngs=nnx.Rngs(seed), **hyper)


def inputs(length, lengths):
    ks = jax.random.split(jax.random.key(1), 3)
    q, k, v = (jax.random.normal(key, (B, length, H, DH)) for key in ks)
    return q, k, v, jnp.asarray(np.arange(length)[None, :] < np.array(lengths)[:, None])


def random_blocks(model):
    """Per head and query block, the layout's blocks outside the window and the globals."""
    idx, count = np.asarray(model.block_idx[...]), np.asarray(model.block_count[...])
    nb, w = model.num_blocks, model.window_blocks // 2
    return [[set(idx[h, i, : count[h, i]]) - {0, nb - 1} - set(range(i - w, i + w + 1))
             for i in range(nb)] for h in range(H)]


def reference(model, q, k, v, mask):
    n, nb = q.shape[1], model.num_blocks
    blk = np.arange(n) // BS
    rand = random_blocks(model)
    allowed = np.zeros((H, n, n), bool)
    for h in range(H):
        for i in range(n):
            bi = blk[i]
            allowed[h, i] = (
                (bi in (0, nb - 1)) | np.isin(blk, (0, nb - 1))
                | (np.abs(blk - bi) <= model.window_blocks // 2)
                | np.isin(blk, list(rand[h][bi]))
            )
    qf, kf, vf = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", qf, kf) / np.sqrt(DH)
    allowed = allowed[None] & np.asarray(mask)[:, None, None]
    logits = np.where(allowed, logits, -1e30)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), vf)


def real(x, mask):
    return np.where(np.asarray(mask)[:, :, None, None], np.asarray(x, np.float64), 0.0)


def run(model, *args):
    return jax.jit(lambda q, k, v, m: model.core(q, k, v, m, deterministic=True))(*args)


@pytest.mark.parametrize("length,lengths,hyper", [
    (64, (64, 45), {}), (45, (45, 30), {}), (64, (64, 51), {"window_blocks": 5}),
    (60, (60, 33), {"random_blocks": 0}), (64, (64, 40), {"random_blocks": 6}),
])
def test_matches_dense_mask_reference(length, lengths, hyper):
    """Full length, a shorter input (the last global block is then padding), a wider window,
    no random blocks, and more random blocks than some rows have free."""
    model = build(**hyper)
    q, k, v, mask = inputs(length, lengths)
    out = run(model, q, k, v, mask)
    np.testing.assert_allclose(real(out, mask), real(reference(model, q, k, v, mask), mask),
                               atol=1e-5)


def test_random_layout_follows_the_paper():
    """r random blocks per non-global row, outside window and globals, per head, fixed at init."""
    model = build()
    rand = random_blocks(model)
    nb = model.num_blocks
    for h in range(H):
        assert all(len(rand[h][i]) == 2 for i in range(1, nb - 1))
    assert any(rand[0][i] != rand[h][i] for h in range(1, H) for i in range(1, nb - 1))
    idx = np.asarray(model.block_idx[...])
    for h in range(H):
        for i in range(nb):
            row = idx[h, i, : model.block_count[...][h, i]]
            assert len(set(row)) == len(row), "a repeated block would be counted twice"
    other = build(seed=5)
    assert not np.array_equal(np.asarray(other.block_idx[...]), idx)
    assert len(jax.tree.leaves(nnx.state(model, BlockLayout))) == 2
    assert "block_idx" not in nnx.state(model, nnx.Param)


def test_few_blocks_is_dense_softmax():
    """With two blocks, both are global: the exact limit is softmax."""
    model = build(block_size=32, max_len=64)
    q, k, v, mask = inputs(64, (64, 50))
    out = run(model, q, k, v, mask)
    np.testing.assert_allclose(real(out, mask), real(dense_attention(q, k, v, mask), mask),
                               atol=1e-5)


def test_short_input_below_one_block():
    model = build()
    q, k, v, mask = inputs(5, (5, 3))
    out = run(model, q, k, v, mask)
    np.testing.assert_allclose(real(out, mask), real(dense_attention(q, k, v, mask), mask),
                               atol=1e-5)


def test_paper_defaults_and_refusals():
    assert attention.info("bigbird").defaults == {
        "block_size": 64, "window_blocks": 3, "random_blocks": 3
    }
    cfg = AttentionConfig(dim=32, num_heads=4, max_len=64, causal=True)
    with pytest.raises(LRAError, match="no causal form"):
        attention.get("bigbird")(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(LRAError, match="window_blocks=2"):
        build(window_blocks=2)
    q, k, v, mask = inputs(72, (72, 72))
    with pytest.raises(LRAError, match="exceeds model.max_len=64"):
        build().core(q, k, v, mask, deterministic=True)
