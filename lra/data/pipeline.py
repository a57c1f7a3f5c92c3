"""Batches from prepared arrays, deterministic in (seed, step) for exact resume."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _num_rows(arrays: dict[str, np.ndarray]) -> int:
    return len(arrays["labels"])


def train_batch(arrays: dict[str, np.ndarray], step: int, batch_size: int, seed: int) -> dict:
    """The training batch at `step`: epoch e is a permutation seeded by (seed, e).

    A pure function of its arguments, so a resumed run sees exactly the batches an
    uninterrupted one would. The last incomplete batch of an epoch is dropped.
    """
    n = _num_rows(arrays)
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training examples")
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    rows = np.sort(order[index * batch_size : (index + 1) * batch_size])
    return {k: np.asarray(v[rows], np.int32) for k, v in arrays.items()}


def eval_batches(
    arrays: dict[str, np.ndarray], batch_size: int, max_batches: int = 0
) -> Iterator[dict]:
    """Sequential batches over a split; the last is padded, with `weights` 0 on padding rows."""
    n = _num_rows(arrays)
    if max_batches:
        n = min(n, max_batches * batch_size)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {k: np.asarray(v[start:stop], np.int32) for k, v in arrays.items()}
        pad = batch_size - (stop - start)
        weights = np.ones(batch_size, np.float32)
        if pad:
            weights[stop - start :] = 0
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in batch.items()}
        batch["weights"] = weights
        yield batch
