"""Seeded subsets of the released splits: a validation hold-out and small-size subsamples.

Both are pure functions of their arguments, so data prepared twice, on any
machine, holds the same rows. Indices come back sorted, keeping the source order.
Subsampling (config.data.num_train / num_val / num_test, 0 = all) exists so that
sizes smoke and cpu prepare and evaluate quickly on a CPU.
"""

from __future__ import annotations

import numpy as np

from lra.data.store import SPLITS
from lra.errors import LRAError

_STREAM = {"holdout": 0, "train": 1, "val": 2, "test": 3}


def requested_counts(config) -> dict[str, int]:
    """{split: config.data.num_<split>} where 0 means the whole split."""
    counts = {}
    for split in SPLITS:
        value = config.data.get(f"num_{split}", 0)
        if not isinstance(value, int) or value < 0:
            raise LRAError(
                f"config.data.num_{split}={value!r}: expected a count >= 0 (0 = the whole split)"
            )
        counts[split] = value
    return counts


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): a seeded random round(fraction * n) of range(n) is held out."""
    held = round(fraction * n)
    order = np.random.default_rng([seed, _STREAM["holdout"]]).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def subsample(n: int, count: int, seed: int, split: str) -> np.ndarray:
    """Sorted indices of a seeded random `count` of range(n); all of it if count is 0 or >= n."""
    if count == 0 or count >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, _STREAM[split]])
    return np.sort(rng.choice(n, count, replace=False))
