"""Prepared datasets on disk: `$LRA_DATA_DIR/<task>/<variant>/`.

Each split is a set of `.npy` arrays, memory-mapped on read, so training never
holds a whole release in RAM:

    {split}.inputs.npy   uint[N, L]    token ids, 0 = padding: uint8 when the vocabulary
                                       fits in 256 ids, else uint16 (or int32)
    {split}.lengths.npy  int32[N]      real tokens per row (the padding mask comes from these)
    {split}.labels.npy   int32[N]
    {split}.inputs2.npy, {split}.lengths2.npy   second document (Retrieval only)
    meta.json            task, source, vocab_size, num_classes, max_len, counts,
                         chance_accuracy, chance_loss (the train label prior, `chance`),
                         files ({name: {"bytes", "sha256"}}), ...
    verified             stamp: the checksums were checked once after writing

A dataset is written into a temporary sibling folder and renamed into place at
the end, so nothing half-prepared is ever visible. `damage` checks it on open: file
sizes always (cheap), sha256 checksums until the `verified` stamp exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lra.atomic import atomic_path
from lra.errors import LRAError

SPLITS = ("train", "val", "test")
FIELDS = ("inputs", "lengths", "labels", "inputs2", "lengths2")
TOKEN_FIELDS = ("inputs", "inputs2")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding ids 0 .. vocab_size - 1 (Path-X: 1/4 of int32)."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def data_dir() -> Path:
    """`$LRA_DATA_DIR`, default `~/.cache/lra`."""
    return Path(os.environ.get("LRA_DATA_DIR") or Path.home() / ".cache" / "lra")


def dataset_dir(task: str, variant: str) -> Path:
    return data_dir() / task / variant


def is_prepared(path: Path) -> bool:
    return (path / "meta.json").is_file()


def write_dataset(path: Path, splits: dict[str, dict[str, np.ndarray]], meta: dict) -> Path:
    """Atomically write `splits` ({split: {field: array}}) and `meta` to `path`.

    Token fields are stored as `token_dtype(meta["vocab_size"])`, the rest as int32.
    """
    tokens = token_dtype(meta["vocab_size"])
    with atomic_path(path, directory=True) as tmp:
        counts = {}
        for split, arrays in splits.items():
            n = {len(a) for a in arrays.values()}
            if len(n) != 1:
                raise ValueError(f"split {split}: fields have different lengths {n}")
            counts[split] = n.pop()
            for field, array in arrays.items():
                if field not in FIELDS:
                    raise ValueError(f"unknown field {field!r}")
                dtype = tokens if field in TOKEN_FIELDS else np.int32
                if field in TOKEN_FIELDS and array.size and not 0 <= array.min() <= array.max() < (
                    meta["vocab_size"]
                ):
                    raise ValueError(f"split {split}: {field} has ids outside the vocabulary")
                np.save(tmp / f"{split}.{field}.npy", np.ascontiguousarray(array, dtype=dtype))
        files = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)}
                 for f in sorted(tmp.glob("*.npy"))}
        meta = {**meta, "counts": counts, "files": files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def _sha256(f: Path) -> str:
    with open(f, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def damage(path: Path, full: bool | None = None) -> str | None:
    """Why the prepared folder `path` is damaged ("<file>: <why>"), or None when it is sound.

    Every array must load (its header) and have the size meta.json records; with `full` (by
    default: until the `verified` stamp exists) its sha256 must match too, and a sound folder
    is then stamped. A folder written before sizes were recorded skips the size and checksum
    checks.
    """
    try:
        files = read_meta(path).get("files", {})
    except (OSError, ValueError) as e:
        return f"meta.json: unreadable ({e})"
    stamp = path / "verified"
    full = not stamp.is_file() if full is None else full
    for name in sorted(set(files) | {f.name for f in path.glob("*.npy")}):
        f, want = path / name, files.get(name)
        if not f.is_file():
            return f"{name}: missing"
        if want and f.stat().st_size != want["bytes"]:
            return f"{name}: {f.stat().st_size} bytes, meta.json records {want['bytes']}"
        try:
            np.load(f, mmap_mode="r")
        except (OSError, ValueError) as e:
            return f"{name}: unreadable array ({str(e).splitlines()[0]})"
        if full and want and _sha256(f) != want["sha256"]:
            return f"{name}: sha256 differs from meta.json"
    if full and files and not stamp.is_file():
        with contextlib.suppress(OSError), atomic_path(stamp) as tmp:  # read-only: check next time
            tmp.write_text("checksums verified\n")
    return None


def chance(labels: np.ndarray) -> dict[str, float]:
    """What a model that never learns scores: `chance_accuracy`, the majority class's share of
    `labels` (the training labels), and `chance_loss`, the entropy of their prior in nats (the
    cross-entropy of always predicting it: ln 2 for balanced binary labels)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    p = counts[counts > 0] / max(counts.sum(), 1)
    return {"chance_accuracy": float(p.max(initial=0.0)),
            "chance_loss": float(-(p * np.log(p)).sum())}


def read_meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def read_split(path: Path, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split, memory-mapped."""
    if split not in SPLITS:
        raise LRAError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    arrays = {}
    for field in FIELDS:
        f = path / f"{split}.{field}.npy"
        if f.is_file():
            arrays[field] = np.load(f, mmap_mode="r")
    if not arrays:
        raise LRAError(f"{path}: split {split!r} is missing; prepare the data again")
    return arrays
