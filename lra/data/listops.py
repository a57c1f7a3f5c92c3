"""ListOps (Nangia & Bowman 2018, data description and Fig. 1) at LRA length (Tay et al.
2020, §2.2.1 "Long ListOps").

An expression is a tree of operators over digits 0-9; the label is its value (10 classes):

    MIN, MAX   the smallest / largest argument
    MED        the median, `int(np.median(args))` as in the LRA generator: for an even
               count the mean of the two middle values, truncated (4 and 7 give 5)
    SM         the sum modulo 10

Generator (the LRA one, google-research/long-range-arena lra_benchmarks/data/listops.py):
the root is at depth 1; a node at depth < `max_depth` (10) is an operator with probability
`operator_prob` (0.25), otherwise a uniform digit; a node at depth `max_depth` is always a
digit. An operator is uniform over the four above and takes 2..`max_args` (10) arguments,
uniformly. A tree is kept only if `min_length < length < max_length` (LRA: 500 and 2000),
where length counts operators, digits and closing brackets, i.e. `len(encode(expr))`.
Rows are deduplicated over all splits together, then split train / val / test in the
order they were drawn (LRA splits the iteration order of a Python set, which is not
reproducible across processes; the rows are i.i.d. either way). Randomness comes from
`numpy.random.default_rng(config.data.seed)` instead of Python's `random`.

Release format (what the LRA writer emits, `basic_{train,val,test}.tsv`): a header line
`Source<TAB>Target`, then one row per expression, `<expression><TAB><label>`, lines ended by
CRLF (Python's csv writer). The expression is the binarised tree of Nangia & Bowman's
files (left-branching within each list, their Fig. 1), space separated: an operator with
arguments a1..an is written
`( ... ( ( [OP a1 ) a2 ) ... an ) ] )`, e.g. `( ( ( [MAX 2 ) 9 ) ] )`.

Tokens: parentheses only binarise the tree and carry no information in prefix notation,
so `encode` drops them and keeps operators, digits and `]` (the model input length is
then exactly the generator's length). Choice: LRA's own pipeline tokenised with
tfds' alphanumeric tokenizer, which also dropped `]`, leaving the expression ambiguous;
the bracket is kept here, as in later reimplementations. No CLS token: the model adds it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from lra import data
from lra.data import subsets
from lra.data.store import SPLITS
from lra.errors import LRAError

log = logging.getLogger(__name__)

NUM_CLASSES = 10
SOURCES = ("generate", "release")

DIGITS = tuple(str(d) for d in range(10))
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
PARENS = ("(", ")")
PAD = "<pad>"
VOCAB = (PAD, *DIGITS, *OPERATORS, END)
"""Token id i is VOCAB[i]; 0 is padding. Fixed: ids are the same in every process."""

MAX_DEPTH = 10
MAX_ARGS = 10
OPERATOR_PROB = 0.25
HEADER = "Source\tTarget"

_IDS = {token: i for i, token in enumerate(VOCAB) if token != PAD}
_KNOWN = frozenset(_IDS) | frozenset(PARENS)
_ENCODE = {**_IDS, "(": -1, ")": -1}
_MISS_LIMIT = 1_000_000  # trees in a row without a new row: the bounds hold too few trees


def _median(args: list[int]) -> int:
    s = sorted(args)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


_APPLY: dict[str, Callable[[list[int]], int]] = {
    "[MIN": min,
    "[MAX": max,
    "[MED": _median,
    "[SM": lambda args: sum(args) % 10,
}


def evaluate(expression: str) -> int:
    """The value of a ListOps expression, in the release (parenthesised) form or without
    parentheses (`[MAX 2 9 [MIN 4 7 ] 0 ]`); any binarisation is accepted."""
    stack: list[tuple[str, list[int]]] = []
    result: list[int] = []
    parens = 0
    for token in expression.split():
        if token == "(":
            parens += 1
        elif token == ")":
            parens -= 1
            if parens < 0:
                raise LRAError(f"ListOps expression has an unmatched ')': {expression[:80]!r}")
        elif token in _APPLY:
            stack.append((token, []))
        elif token == END:
            if not stack or not stack[-1][1]:
                raise LRAError(f"ListOps expression has a misplaced ']': {expression[:80]!r}")
            op, args = stack.pop()
            (stack[-1][1] if stack else result).append(_APPLY[op](args))
        elif token in DIGITS:
            (stack[-1][1] if stack else result).append(int(token))
        else:
            raise LRAError(f"ListOps expression has an unknown token {token!r}; "
                           f"valid: {' '.join(sorted(_KNOWN))}")
    if stack or parens or len(result) != 1:
        raise LRAError(f"ListOps expression is incomplete or has several roots: "
                       f"{expression[:80]!r}")
    return result[0]


def encode(expression: str) -> np.ndarray:
    """int32 token ids of `expression` (parentheses dropped, no padding, no CLS)."""
    tokens = expression.split()
    try:
        ids = np.fromiter(map(_ENCODE.__getitem__, tokens), np.int32, len(tokens))
    except KeyError as err:
        raise LRAError(f"unknown ListOps token {err.args[0]!r}; "
                       f"valid: {' '.join(sorted(_KNOWN))}") from None
    return ids[ids >= 0]


class _TreeSampler:
    """Draws trees with the LRA generator's distribution from one stream of uniforms.

    Each random choice takes the next uniform u: operator iff u < operator_prob (only
    below `max_depth`), digit int(10 u), argument count 2 + int((max_args - 1) u),
    operator int(4 u). A tree is first only measured, stopping once it reaches
    `max_length`; an accepted tree is then built by replaying the same uniforms.
    """

    _CHUNK = 1 << 16

    def __init__(self, rng: np.random.Generator, min_length: int, max_length: int,
                 max_depth: int, max_args: int, operator_prob: float):
        self._rng = rng
        self._uniforms: list[float] = []
        self._pos = 0
        self._min_length = min_length
        self._max_length = max_length
        self._max_depth = max_depth
        self._max_args = max_args
        self._operator_prob = operator_prob

    def sample(self) -> tuple[str, int, int] | None:
        """(expression, label, length) of the next tree, or None if its length is out of
        bounds."""
        # A tree stopped at max_length has fewer than max_length nodes, 3 uniforms each.
        if len(self._uniforms) - self._pos < 3 * self._max_length + 3:
            tail = self._uniforms[self._pos:]
            self._uniforms = tail + self._rng.random(self._CHUNK + 3 * self._max_length).tolist()
            self._pos = 0
        start = self._pos
        length = self._measure()
        if length <= self._min_length:
            return None
        self._pos = start
        tokens, label = self._build()
        return " ".join(tokens), label, length

    def _measure(self) -> int:
        """The length of the tree at the stream position (0 once it reaches max_length)."""
        u, pos, p = self._uniforms, self._pos, self._operator_prob
        inner_depth, spread, limit = self._max_depth - 1, self._max_args - 1, self._max_length
        open_args: list[int] = []  # arguments still to draw, per open operator
        length = 0
        while True:
            if len(open_args) < inner_depth:
                pos += 1
                if u[pos - 1] < p:
                    open_args.append(2 + int(u[pos] * spread))
                    pos += 2
                    length += 2
                    if length >= limit:
                        break
                    continue
            pos += 1
            length += 1
            if length >= limit:
                break
            while open_args:
                open_args[-1] -= 1
                if open_args[-1]:
                    break
                open_args.pop()
            else:
                self._pos = pos
                return length
        self._pos = pos
        return 0

    def _build(self) -> tuple[list[str], int]:
        """Release-format tokens and value of the tree at the stream position."""
        u, pos, p = self._uniforms, self._pos, self._operator_prob
        inner_depth, spread = self._max_depth - 1, self._max_args - 1
        tokens: list[str] = []
        open_ops: list[tuple[str, list[int], int]] = []  # operator, values so far, arity
        while True:
            if len(open_ops) < inner_depth:
                pos += 1
                if u[pos - 1] < p:
                    arity = 2 + int(u[pos] * spread)
                    op = OPERATORS[int(u[pos + 1] * len(OPERATORS))]
                    pos += 2
                    tokens.extend(["("] * (arity + 1))
                    tokens.append(op)
                    open_ops.append((op, [], arity))
                    continue
            value = int(u[pos] * 10)
            pos += 1
            tokens.append(DIGITS[value])
            while open_ops:
                op, values, arity = open_ops[-1]
                values.append(value)
                tokens.append(")")
                if len(values) < arity:
                    break
                open_ops.pop()
                tokens.extend((END, ")"))
                value = _APPLY[op](values)
            else:
                self._pos = pos
                return tokens, value


def generate_rows(count: int, *, min_length: int, max_length: int, seed: int,
                  max_depth: int = MAX_DEPTH, max_args: int = MAX_ARGS,
                  operator_prob: float = OPERATOR_PROB) -> list[tuple[str, int]]:
    """`count` distinct (expression, label) rows with min_length < length < max_length."""
    if max(min_length + 1, 4) >= max_length:
        raise LRAError(f"ListOps lengths must satisfy min_length < length < max_length with "
                       f"length >= 4; got data.min_length={min_length}, "
                       f"data.max_length={max_length}: widen them")
    sampler = _TreeSampler(np.random.default_rng(seed), min_length, max_length, max_depth,
                           max_args, operator_prob)
    rows: dict[str, int] = {}
    misses = 0  # consecutive trees that added no row
    while len(rows) < count:
        drawn = sampler.sample()
        if drawn is None or drawn[0] in rows:
            misses += 1
            if misses >= _MISS_LIMIT:
                raise LRAError(f"only {len(rows)} distinct ListOps expressions found with "
                               f"{min_length} < length < {max_length} in {_MISS_LIMIT} "
                               f"further trees; widen data.min_length/data.max_length or "
                               f"lower the counts")
            continue
        expression, label, _ = drawn
        rows[expression] = label
        misses = 0
        if len(rows) % 10_000 == 0:
            log.info("generated %d / %d ListOps rows", len(rows), count)
    return list(rows.items())


def generate_splits(counts: dict[str, int], **generator) -> dict[str, list[tuple[str, int]]]:
    """{split: rows}, distinct across splits, split in order of `counts` from one stream.

    `generator` holds the keyword arguments of `generate_rows` except `count`."""
    rows = generate_rows(sum(counts.values()), **generator)
    out, start = {}, 0
    for split, n in counts.items():
        out[split] = rows[start:start + n]
        start += n
    return out


def write_tsv(path: str | Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write rows in the LRA release format (header, tab separated, CRLF line ends)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(HEADER + "\r\n")
        f.writelines(f"{expression}\t{label}\r\n" for expression, label in rows)


def _bad_row(path: Path, lineno: int, line: str, problem: str) -> LRAError:
    row = line if len(line) <= 80 else line[:77] + "..."
    return LRAError(f"{path}:{lineno}: {problem} in row {row!r}; fix or remove the row")


def read_tsv(path: str | Path) -> list[tuple[str, int]]:
    """Rows (expression, label) of a release-format file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise LRAError(f"ListOps file {path} not found; pass --path the folder holding "
                       f"basic_train.tsv, basic_val.tsv and basic_test.tsv")
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        if header != HEADER:
            raise _bad_row(path, 1, header, "expected the header 'Source<TAB>Target'")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise _bad_row(path, lineno, line, f"expected 2 tab-separated columns, "
                                                   f"got {len(fields)}")
            expression, label = fields
            unknown = set(expression.split()) - _KNOWN
            if unknown or not expression.strip():
                what = f"unknown token {sorted(unknown)[0]!r}" if unknown else "empty expression"
                raise _bad_row(path, lineno, line, what)
            label = label.strip()
            if label not in DIGITS:
                raise _bad_row(path, lineno, line, f"label {label!r} is not an integer 0..9")
            rows.append((expression, int(label)))
    return rows


def _release_dir(path: str | None) -> Path:
    """The folder holding basic_*.tsv: `path`, `path/listops-1000` or
    `path/lra_release/listops-1000`."""
    if not path:
        raise LRAError("ListOps --source release needs --path: the folder holding "
                       "basic_train.tsv (lra_release/listops-1000)")
    root = Path(path).expanduser()
    for folder in (root, root / "listops-1000", root / "lra_release" / "listops-1000"):
        if (folder / "basic_train.tsv").is_file():
            return folder
    raise LRAError(f"no basic_train.tsv in {root} or its listops-1000 subfolder; pass --path "
                   f"the folder holding basic_train.tsv, basic_val.tsv and basic_test.tsv")


def _encode_rows(rows: list[tuple[str, int]], max_len: int, name: str) -> dict[str, np.ndarray]:
    """0-padded int32 arrays, rows truncated to `max_len` tokens (logged)."""
    inputs = np.zeros((len(rows), max_len), np.int32)
    lengths = np.zeros(len(rows), np.int32)
    labels = np.zeros(len(rows), np.int32)
    truncated = 0
    for i, (expression, label) in enumerate(rows):
        ids = encode(expression)
        truncated += len(ids) > max_len
        ids = ids[:max_len]
        inputs[i, :len(ids)] = ids
        lengths[i] = len(ids)
        labels[i] = label
    if truncated:
        log.warning("%s: %d of %d rows truncated to data.max_len=%d tokens",
                    name, truncated, len(rows), max_len)
    return {"inputs": inputs, "lengths": lengths, "labels": labels}


def _read_release(folder: Path, config) -> dict[str, dict[str, np.ndarray]]:
    """Encoded splits of `folder`, each a seeded subsample of config.data.num_<split> rows
    (0 or more than the file holds = all of it), as in the other tasks' small sizes."""
    counts = subsets.requested_counts(config)
    splits = {}
    for split in SPLITS:
        path = folder / f"basic_{split}.tsv"
        rows = read_tsv(path)
        keep = subsets.subsample(len(rows), counts[split], config.data.seed, split)
        splits[split] = _encode_rows([rows[i] for i in keep], config.data.max_len, path.name)
    return splits


def variant(config) -> str:
    """Folder name of the prepared data: the source, counts, seed and max_len, and for
    generated data the length bounds too, so that different datasets never share a folder."""
    d = config.data
    if d.source == "release":
        return f"release-n{d.num_train}.{d.num_val}.{d.num_test}-seed{d.seed}-maxlen{d.max_len}"
    return (f"generate-len{d.min_length}-{d.max_length}-n{d.num_train}-{d.num_val}-"
            f"{d.num_test}-depth{MAX_DEPTH}-args{MAX_ARGS}-seed{d.seed}-maxlen{d.max_len}")


@data.task("listops", column="ListOps", vocab_size=len(VOCAB), order=0)
def prepare(config, source: str, path: str | None):
    """(splits, meta) from the release files, or generated and round-tripped through the
    release format (written to a temporary folder, read back with `read_tsv`)."""
    d = config.data
    meta = {"vocab": list(VOCAB), "vocab_size": len(VOCAB), "num_classes": NUM_CLASSES,
            "max_len": d.max_len, "format": "listops release TSV"}
    if source == "release":
        folder = _release_dir(path)
        splits = _read_release(folder, config)
        meta["path"] = str(folder)
    else:
        generator = dict(min_length=d.min_length, max_length=d.max_length, seed=d.seed,
                         max_depth=MAX_DEPTH, max_args=MAX_ARGS, operator_prob=OPERATOR_PROB)
        counts = subsets.requested_counts(config)
        for split, n in counts.items():
            if n == 0:
                raise LRAError(f"config.data.num_{split}=0: generated ListOps needs a count "
                               f">= 1 for every split")
        rows = generate_splits(counts, **generator)
        with tempfile.TemporaryDirectory(prefix="listops-") as tmp:
            for split, split_rows in rows.items():
                write_tsv(Path(tmp) / f"basic_{split}.tsv", split_rows)
            splits = _read_release(Path(tmp), config)
        meta["generator"] = generator
    meta["label_counts"] = {split: np.bincount(a["labels"], minlength=NUM_CLASSES).tolist()
                            for split, a in splits.items()}
    return splits, meta
