"""Text: IMDb movie-review sentiment at byte level (Maas et al. 2011; LRA, Tay et al. 2020, §3.2).

Two classes, neg = 0 and pos = 1 (the order of tfds' `imdb_reviews` labels). The
25,000 labelled train and 25,000 test reviews are used; the unlabelled `unsup`
reviews are ignored. Each review is its file's bytes with surrounding whitespace
stripped (as tfds builds `imdb_reviews`), tokenised by `bytes_tokenizer` (byte + 1,
vocabulary 257) and truncated to `config.data.max_len` bytes: 1000 in the LRA
paper, 4000 in the Nystromformer and AdaMRA papers.

Sources:
  archive  the official aclImdb_v1.tar.gz, read as a stream (never unpacked), or the
           unpacked aclImdb/ folder; --path, config.data.path or $LRA_IMDB_ARCHIVE
  tfds     tfds `imdb_reviews`, already built; --path is then the tfds data_dir

Splits: validation is a seeded random 10% of the train reviews
(`config.data.val_fraction`, `config.data.seed`), never the test set; test is the
official test set. The LRA code had no validation split: it evaluated, and picked
its reported step, on the test set. `config.data.val_from_test = True` restores that
protocol (train on all 25,000, validation = test). Choice: before the hold-out each
split is sorted by (text, label), so both sources, whose file orders differ, give
the same split. Sizes smoke and cpu subsample each split (`subsets`).
"""

from __future__ import annotations

import logging
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np

from lra import data
from lra.data import bytes_tokenizer, subsets, tfds_source
from lra.errors import LRAError

log = logging.getLogger(__name__)

NUM_CLASSES = 2
SOURCES = ("archive", "tfds")
ARCHIVE_ENV = "LRA_IMDB_ARCHIVE"
URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
LABELS = {"neg": 0, "pos": 1}

_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(neg|pos)/[^/]+\.txt$")

Reviews = dict[str, list[tuple[bytes, int]]]


def variant(config) -> str:
    d = config.data
    name = f"len{d.max_len}-" + ("valtest" if d.val_from_test else f"val{d.val_fraction:g}")
    name += f"-seed{d.seed}"
    counts = (d.num_train, d.num_val, d.num_test)
    return name + (f"-n{'.'.join(map(str, counts))}" if any(counts) else "")


@data.task("text", column="Text", vocab_size=bytes_tokenizer.VOCAB_SIZE, order=1)
def prepare(config, source: str, path: str | None):
    max_len, fraction = _checked(config)
    reviews = _read_tfds(path) if source == "tfds" else _read_archive(_locate(config, path))
    for rows in reviews.values():
        rows.sort()
    if config.data.val_from_test:
        pools = {"train": reviews["train"], "test": reviews["test"]}
    else:
        kept, held = subsets.holdout(len(reviews["train"]), fraction, config.data.seed)
        pools = {
            "train": [reviews["train"][i] for i in kept],
            "val": [reviews["train"][i] for i in held],
            "test": reviews["test"],
        }
    counts = subsets.requested_counts(config)
    splits = {}
    for split, rows in pools.items():
        picked = subsets.subsample(len(rows), counts[split], config.data.seed, split)
        rows = [rows[i] for i in picked]
        inputs, lengths = bytes_tokenizer.encode([text for text, _ in rows], max_len)
        labels = np.array([label for _, label in rows], np.int32)
        splits[split] = {"inputs": inputs, "lengths": lengths, "labels": labels}
    if config.data.val_from_test:
        splits["val"] = splits["test"]
    meta = {
        "vocab_size": bytes_tokenizer.VOCAB_SIZE,
        "num_classes": NUM_CLASSES,
        "max_len": max_len,
        "validation": "test set (LRA code)" if config.data.val_from_test
        else f"seeded {fraction:g} of train (seed {config.data.seed})",
    }
    return splits, meta


def _checked(config) -> tuple[int, float]:
    max_len, fraction = config.data.max_len, config.data.val_fraction
    if not isinstance(max_len, int) or max_len < 1:
        raise LRAError(f"config.data.max_len={max_len!r}: expected a positive number of bytes")
    if not 0 < fraction < 1:
        raise LRAError(f"config.data.val_fraction={fraction!r}: expected 0 < fraction < 1")
    return max_len, fraction


def _prepare_command(config) -> str:
    return (f"lra data prepare text --size {config.size} --source archive "
            f"--path /path/to/aclImdb_v1.tar.gz")


def _locate(config, path: str | None) -> Path:
    """The archive file or the aclImdb/ folder named by `path` or $LRA_IMDB_ARCHIVE."""
    where = data.given_path("text", path, ARCHIVE_ENV, "IMDb data",
                            f"download {URL} and run: {_prepare_command(config)}")
    if where.is_file():
        return where
    for candidate in (where, where / "aclImdb"):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    if (where / "aclImdb_v1.tar.gz").is_file():
        return where / "aclImdb_v1.tar.gz"
    raise LRAError(
        f"text: no IMDb data at {where} (looked for aclImdb_v1.tar.gz or an unpacked aclImdb/ "
        f"folder); download {URL} and run: {_prepare_command(config)}"
    )


def _read_archive(where: Path) -> Reviews:
    reviews = _read_folder(where) if where.is_dir() else _read_tar(where)
    for split, rows in reviews.items():
        if not rows:
            raise LRAError(
                f"{where}: no {split} reviews (expected aclImdb/{split}/{{neg,pos}}/*.txt); "
                f"is this aclImdb_v1.tar.gz from {URL}?"
            )
    log.info("read %d train and %d test reviews from %s",
             len(reviews["train"]), len(reviews["test"]), where)
    return reviews


def _read_tar(archive_path: Path) -> Reviews:
    reviews: Reviews = {"train": [], "test": []}
    try:
        with tarfile.open(archive_path, "r|gz") as archive:
            for member in archive:
                match = _MEMBER.match(member.name)
                if match and member.isfile():
                    text = archive.extractfile(member).read().strip()
                    reviews[match[1]].append((text, LABELS[match[2]]))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise LRAError(
            f"{archive_path}: not a readable gzip tar archive ({type(err).__name__}: {err}); "
            f"download it again from {URL}"
        ) from err
    return reviews


def _read_folder(root: Path) -> Reviews:
    reviews: Reviews = {"train": [], "test": []}
    for split, rows in reviews.items():
        for name, label in LABELS.items():
            for file in sorted((root / split / name).glob("*.txt")):
                rows.append((file.read_bytes().strip(), label))
    return reviews


def _read_tfds(data_dir: str | None) -> Reviews:
    reviews: Reviews = {}
    for split in ("train", "test"):
        data = tfds_source.load_split("text", "imdb_reviews", split, data_dir)
        reviews[split] = [(bytes(text).strip(), int(label))
                          for text, label in zip(data["text"], data["label"], strict=True)]
    return reviews
