"""Prepared-data store: compact token dtypes, atomic writes, int32 batches."""

import numpy as np
import pytest

from lra.data import pipeline, store


def splits(vocab_size: int, rows: int = 6, length: int = 5):
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.integers(0, vocab_size, (rows, length)),
              "lengths": np.full(rows, length), "labels": np.arange(rows) % 2}
    return {"train": arrays, "val": arrays, "test": arrays}


@pytest.mark.parametrize("vocab_size, dtype", [(16, np.uint8), (256, np.uint8),
                                               (257, np.uint16), (70_000, np.int32)])
def test_tokens_are_stored_in_the_smallest_dtype_and_read_back_exactly(tmp_path, vocab_size, dtype):
    data = splits(vocab_size)
    path = store.write_dataset(tmp_path / "d", data, {"vocab_size": vocab_size})
    train = store.read_split(path, "train")
    assert train["inputs"].dtype == dtype and train["labels"].dtype == np.int32
    np.testing.assert_array_equal(train["inputs"], data["train"]["inputs"])
    batch = pipeline.train_batch(train, step=0, batch_size=4, seed=0)
    assert all(v.dtype == np.int32 for v in batch.values())
    assert next(pipeline.eval_batches(train, 4))["inputs"].dtype == np.int32


def test_ids_outside_the_vocabulary_are_refused_and_nothing_is_left(tmp_path):
    data = splits(16)
    data["val"] = {**data["val"], "inputs": data["val"]["inputs"] + 16}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        store.write_dataset(tmp_path / "d", data, {"vocab_size": 16})
    assert list(tmp_path.iterdir()) == []
