"""The shared classifier's masks."""

import jax.numpy as jnp
import numpy as np
import pytest
from lra.configs import pathfinder as pathfinder_config

from lra.models import classifier


@pytest.mark.parametrize("zero_is_padding", [False, True])
def test_zero_is_padding_hides_token_zero(zero_is_padding):
    """With zero_is_padding (the LRA code's `inputs > 0` mask), a token-0 position is no
    key and is not pooled: the output cannot depend on token 0's embedding."""
    c = pathfinder_config.get_config("size=smoke")
    c.model.zero_is_padding = zero_is_padding
    c.model.dropout = c.model.attention_dropout = 0.0
    meta = {"vocab_size": 256, "num_classes": 2, "max_len": 16}
    ids = np.array([[0, 3, 0, 0, 7, 9, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0]] * 2, np.int32)
    batch = {"inputs": jnp.asarray(ids), "lengths": jnp.array([16, 12])}
    model = classifier.build(c, meta, seed=0)
    before = model(batch, deterministic=True)
    table = model.tower.embed.tokens.embedding
    table[...] = table[...].at[0].set(jnp.full(table.shape[1], 3.0))
    after = model(batch, deterministic=True)
    assert np.allclose(before, after, atol=1e-5) == zero_is_padding
    assert not np.allclose(before[0], before[1])  # lengths still mask as well
