"""Retrieval: AAN citation matching at byte level (Radev et al. 2013; LRA, Tay et al. 2020, §3.3).

Does paper 1 cite paper 2? Two classes (0, 1), a pair of documents per example,
encoded separately by a dual encoder. Each document is tokenised by
`bytes_tokenizer` (byte + 1, vocabulary 257) and truncated to
`config.data.max_len` bytes: 4000 per document in the LRA paper and in the
Nystromformer and AdaMRA papers.

Source "release": the LRA release's `lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv`
(train, validation, test; --path is lra_release/, its tsv_data/ folder, or a folder
holding lra_release/). A row is five tab-separated columns, no header:

    label <TAB> id1 <TAB> id2 <TAB> text1 <TAB> text2

The label is written 0/1 or 0.0/1.0. A text is either plain or a Python bytes
literal (`b'...'` or `b"..."`, escapes such as \\n and \\xe2 inside). Choice: a
literal is decoded to its bytes, with `codecs.escape_decode` on the part between the
quotes (never `eval`), so a document is the paper's text, not its Python
representation; an escape Python does not know (`\\q`) makes the row malformed. The
LRA code tokenised the column as stored (a literal with its `b'` and escapes).

Sizes smoke and cpu subsample each split (`subsets`); each split is read whole first.
"""

from __future__ import annotations

import codecs
import logging
import warnings
from pathlib import Path

import numpy as np

from lra import data
from lra.data import bytes_tokenizer, subsets
from lra.errors import LRAError

log = logging.getLogger(__name__)

NUM_CLASSES = 2
SOURCES = ("release",)
FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
COLUMNS = ("label", "id1", "id2", "text1", "text2")
_LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}

Pairs = tuple[list[int], list[bytes], list[bytes]]


def variant(config) -> str:
    d = config.data
    counts = (d.num_train, d.num_val, d.num_test)
    if not any(counts):
        return f"len{d.max_len}"
    return f"len{d.max_len}-seed{d.seed}-n{'.'.join(map(str, counts))}"


@data.task("retrieval", column="Retrieval", vocab_size=bytes_tokenizer.VOCAB_SIZE, dual=True,
           order=2)
def prepare(config, source: str, path: str | None):
    max_len = config.data.max_len
    if not isinstance(max_len, int) or max_len < 1:
        raise LRAError(f"config.data.max_len={max_len!r}: expected a positive number of bytes")
    folder = _locate(config, path)
    counts = subsets.requested_counts(config)
    splits = {}
    for split, name in FILES.items():
        labels, docs1, docs2 = read_pairs(folder / name, max_len)
        rows = subsets.subsample(len(labels), counts[split], config.data.seed, split)
        inputs, lengths = bytes_tokenizer.encode([docs1[i] for i in rows], max_len)
        inputs2, lengths2 = bytes_tokenizer.encode([docs2[i] for i in rows], max_len)
        splits[split] = {"inputs": inputs, "lengths": lengths, "inputs2": inputs2,
                         "lengths2": lengths2, "labels": np.array(labels, np.int32)[rows]}
    meta = {"vocab_size": bytes_tokenizer.VOCAB_SIZE, "num_classes": NUM_CLASSES,
            "max_len": max_len}
    return splits, meta


def _locate(config, path: str | None) -> Path:
    """The folder with the three TSV files: path, path/tsv_data or path/lra_release/tsv_data."""
    command = (f"lra data prepare retrieval --size {config.size} --source release "
               f"--path /path/to/lra_release")
    if not path:
        raise LRAError(
            f"retrieval: no AAN data given (--path and config.data.path are empty); unpack "
            f"lra_release.gz from the LRA repository and run: {command}"
        )
    root = Path(path).expanduser()
    for folder in (root, root / "tsv_data", root / "lra_release" / "tsv_data"):
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    raise LRAError(
        f"retrieval: no {', '.join(FILES.values())} in {root}, {root / 'tsv_data'} or "
        f"{root / 'lra_release' / 'tsv_data'}; unpack lra_release.gz and run: {command}"
    )


def read_pairs(file: Path, max_len: int) -> Pairs:
    """(labels, first documents, second documents) of one TSV file, documents cut to max_len."""
    labels, docs1, docs2 = [], [], []
    with open(file, "rb") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            try:
                label, text1, text2 = _parse_row(line)
            except ValueError as err:
                raise LRAError(
                    f"{file}:{line_number}: malformed row ({err}): {line[:80]!r}; expected "
                    f"{len(COLUMNS)} tab-separated columns {', '.join(COLUMNS)}"
                ) from err
            labels.append(label)
            docs1.append(text1[:max_len])
            docs2.append(text2[:max_len])
    if not labels:
        raise LRAError(f"{file}: no rows; unpack lra_release.gz again")
    log.info("read %d pairs from %s", len(labels), file)
    return labels, docs1, docs2


def _parse_row(line: bytes) -> tuple[int, bytes, bytes]:
    fields = line.split(b"\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{len(fields)} columns")
    label = _LABELS.get(fields[0].strip())
    if label is None:
        raise ValueError(f"label {fields[0][:10]!r} is not 0 or 1")
    return label, decode_text(fields[3]), decode_text(fields[4])


def decode_text(field: bytes) -> bytes:
    """The bytes of a text column: a `b'...'`/`b"..."` literal is unescaped, plain text kept."""
    if len(field) >= 3 and field[:1] == b"b" and field[1:2] in (b"'", b'"') \
            and field[-1:] == field[1:2]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Python warns on an unknown escape such as \\q
            try:
                return codecs.escape_decode(field[2:-1])[0]
            except (ValueError, Warning) as err:
                raise ValueError(f"bad bytes literal: {err}") from err
    return field
