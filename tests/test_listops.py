"""ListOps task data: generator, release-format reader and writer, evaluator, prepare()."""

import numpy as np
import pytest
from lra.configs import listops as listops_config

from lra import data
from lra.data import listops, store
from lra.errors import LRAError

SMALL = dict(min_length=10, max_length=60)


def _parse(expression):
    """A release-format expression as nested [op, children] lists (digits as ints),
    checking the parentheses are exactly the left-branching binarisation."""
    tokens = expression.split()
    pos = 0

    def node():
        nonlocal pos
        opens = 0
        while tokens[pos] == "(":
            opens += 1
            pos += 1
        token = tokens[pos]
        pos += 1
        if token in listops.DIGITS:
            assert opens == 0
            return int(token)
        assert token in listops.OPERATORS
        children = []
        while tokens[pos] != "]":
            children.append(node())
            assert tokens[pos] == ")"
            pos += 1
        assert tokens[pos:pos + 2] == ["]", ")"]
        pos += 2
        assert opens == len(children) + 1
        return [token, children]

    tree = node()
    assert pos == len(tokens)
    return tree


def _shape(tree, depth=1):
    """(depth, smallest arity, largest arity) of a parsed tree; the root has depth 1."""
    if isinstance(tree, int):
        return depth, 99, 0
    shapes = [_shape(child, depth + 1) for child in tree[1]]
    n = len(tree[1])
    return (max(s[0] for s in shapes), min([n] + [s[1] for s in shapes]),
            max([n] + [s[2] for s in shapes]))


def _config(**data_values):
    config = listops_config.get_config("size=smoke")
    config.data.update({"num_train": 40, "num_val": 10, "num_test": 10, **data_values})
    return config


def test_vocabulary_is_fixed():
    assert listops.VOCAB == ("<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
                             "[MIN", "[MAX", "[MED", "[SM", "]")
    assert listops.encode("( ( ( [MAX 2 ) 9 ) ] )").tolist() == [12, 3, 10, 15]
    assert listops.encode("[SM 0 [MED 1 ] ]").dtype == np.int32


def test_generator_is_reproducible_and_seeded():
    a = listops.generate_rows(20, seed=3, **SMALL)
    assert a == listops.generate_rows(20, seed=3, **SMALL)
    assert a != listops.generate_rows(20, seed=4, **SMALL)
    # pinned: the same rows on every machine and in every later version
    assert listops.generate_rows(2, seed=0, **SMALL) == [
        ("( ( ( ( ( ( ( ( ( ( [MIN 1 ) 5 ) 4 ) ( ( ( ( [MED 6 ) 9 ) 6 ) ] ) ) 6 ) 1 ) 5 ) 4 ) 9 "
         ") ] )", 1),
        ("( ( ( ( ( ( ( [SM ( ( ( [MED ( ( ( [SM 3 ) 2 ) ] ) ) 5 ) ] ) ) 3 ) 6 ) 3 ) 5 ) 3 ) ] )",
         5),
    ]


def test_splits_are_distinct_and_sized():
    splits = listops.generate_splits({"train": 60, "val": 20, "test": 20}, seed=0, **SMALL)
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 20, "test": 20}
    expressions = [e for rows in splits.values() for e, _ in rows]
    assert len(set(expressions)) == 100
    # lengths 4 and 5 with at most 3 arguments: 4400 trees, so 300 draws repeat some
    small = listops.generate_splits({"train": 200, "val": 50, "test": 50}, seed=0,
                                    min_length=3, max_length=6, max_args=3)
    assert len({e for rows in small.values() for e, _ in rows}) == 300


def test_lengths_are_strictly_inside_the_bounds():
    rows = listops.generate_rows(100, seed=1, **SMALL)
    lengths = [len(listops.encode(e)) for e, _ in rows]
    assert min(lengths) > 10 and max(lengths) < 60
    narrow = listops.generate_rows(20, min_length=10, max_length=12, seed=0)
    assert {len(listops.encode(e)) for e, _ in narrow} == {11}


def test_trees_respect_depth_arity_and_release_format():
    rows = listops.generate_rows(200, seed=2, min_length=10, max_length=200)
    shapes = [_shape(_parse(e)) for e, _ in rows]
    assert max(s[0] for s in shapes) <= listops.MAX_DEPTH
    assert min(s[1] for s in shapes) >= 2 and max(s[2] for s in shapes) <= listops.MAX_ARGS
    # depth 3 and 3 arguments allow at most 2 + 3 * (2 + 3) = 17 tokens
    limited = listops.generate_rows(100, seed=2, min_length=9, max_length=18, max_depth=3,
                                    max_args=3)
    assert all(9 < len(listops.encode(e)) < 18 for e, _ in limited)
    shapes = [_shape(_parse(e)) for e, _ in limited]
    assert max(s[0] for s in shapes) == 3  # reached, never exceeded
    assert {s[2] for s in shapes} <= {2, 3} and 3 in {s[2] for s in shapes}
    assert {op for e, _ in rows for op in listops.OPERATORS if op in e.split()} == set(
        listops.OPERATORS)


def test_node_probabilities_are_the_lra_generator_ones():
    # depth 3 bounds trees to 122 tokens, so no tree is rejected and roots are unbiased
    sampler = listops._TreeSampler(np.random.default_rng(0), 0, 1000, 3, 10, 0.25)
    roots = [_parse(sampler.sample()[0]) for _ in range(4000)]
    operators = [r for r in roots if not isinstance(r, int)]
    digits = np.bincount([r for r in roots if isinstance(r, int)], minlength=10)
    assert abs(len(operators) / len(roots) - 0.25) < 0.03
    assert np.abs(digits / digits.sum() - 0.1).max() < 0.03
    assert abs(np.mean([len(r[1]) for r in operators]) - 6) < 0.3
    assert {len(r[1]) for r in operators} == set(range(2, 11))
    shares = [sum(r[0] == op for r in operators) / len(operators) for op in listops.OPERATORS]
    assert max(abs(s - 0.25) for s in shares) < 0.06


def test_labels_equal_evaluate_with_and_without_parentheses():
    rows = listops.generate_rows(300, seed=5, **SMALL)
    for expression, label in rows:
        assert listops.evaluate(expression) == label
        bare = " ".join(t for t in expression.split() if t not in "()")
        assert listops.evaluate(bare) == label
    assert len({label for _, label in rows}) == 10


@pytest.mark.parametrize("expression, value", [
    ("[MED 4 7 ]", 5),  # int(np.median([4, 7])) = int(5.5)
    ("[MED 1 2 3 4 ]", 2),
    ("[MED 9 0 ]", 4),
    ("[MED 3 8 1 ]", 3),
    ("[SM 9 9 9 ]", 7),
    ("[SM 5 5 ]", 0),
    ("[MIN 4 2 7 ]", 2),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[SM [MAX 2 9 ] [MED 1 2 ] 3 ]", 3),
    ("7", 7),
])
def test_evaluate_hand_written(expression, value):
    assert listops.evaluate(expression) == value


def test_median_matches_numpy_on_even_and_odd_counts():
    rng = np.random.default_rng(0)
    for n in range(2, 11):
        for _ in range(20):
            args = rng.integers(0, 10, n).tolist()
            expression = "[MED " + " ".join(map(str, args)) + " ]"
            assert listops.evaluate(expression) == int(np.median(args))


def test_evaluate_nangia_bowman_parenthesised_format():
    # [MAX 2 9 [MIN 4 7 ] 0 ] binarised left-branching as in Nangia & Bowman's files
    expression = "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"
    assert listops.evaluate(expression) == 9
    assert _parse(expression) == ["[MAX", [2, 9, ["[MIN", [4, 7]], 0]]
    assert listops.evaluate("( ( ( [SM 6 ) ( ( ( [MED 1 ) 4 ) ] ) ) ] )") == 8


@pytest.mark.parametrize("expression", [
    "[MAX 2 9", "[MAX 2 9 ] ]", "( [MAX 2 9 ]", "[MAX 2 9 ] )", "[FIRST 2 9 ]", "[MIN ]",
    "2 3", "",
])
def test_evaluate_rejects_malformed(expression):
    with pytest.raises(LRAError):
        listops.evaluate(expression)


def test_tsv_round_trip_in_release_format(tmp_path):
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [SM 6 ) 5 ) ] )", 1)]
    path = tmp_path / "basic_test.tsv"
    listops.write_tsv(path, rows)
    assert path.read_bytes() == (b"Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n"
                                 b"( ( ( [SM 6 ) 5 ) ] )\t1\r\n")
    assert listops.read_tsv(path) == rows
    path.write_text("Source\tTarget\n( ( ( [MIN 2 ) 9 ) ] )\t2\n\n")  # LF ends, blank line
    assert listops.read_tsv(path) == [("( ( ( [MIN 2 ) 9 ) ] )", 2)]


@pytest.mark.parametrize("line, problem", [
    ("( ( ( [MAX 2 ) 9 ) ] )\t9\textra", "columns"),
    ("( ( ( [MAX 2 ) 9 ) ] )", "columns"),
    ("( ( ( [MAX 2 ) 9 ) ] )\t10", "label"),
    ("( ( ( [MAX 2 ) 9 ) ] )\tnine", "label"),
    ("( ( ( [FIRST 2 ) 9 ) ] )\t2", r"unknown token '\[FIRST'"),
])
def test_malformed_rows_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n{line}\n")
    with pytest.raises(LRAError, match=problem) as err:
        listops.read_tsv(path)
    assert f"{path}:3:" in str(err.value) and line[:20] in str(err.value)


def test_missing_header_or_file_is_reported(tmp_path):
    path = tmp_path / "basic_val.tsv"
    path.write_text("( ( ( [MAX 2 ) 9 ) ] )\t9\n")
    with pytest.raises(LRAError, match=f"{path}:1:.*header"):
        listops.read_tsv(path)
    with pytest.raises(LRAError, match="not found"):
        listops.read_tsv(tmp_path / "absent.tsv")


def test_prepare_generate_shapes_padding_and_labels():
    config = _config()
    splits, meta = listops.prepare(config, "generate", None)
    assert meta["vocab_size"] == 16 and meta["num_classes"] == 10 and meta["max_len"] == 64
    assert meta["generator"]["min_length"] == 10 and meta["generator"]["max_depth"] == 10
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays = splits[split]
        assert arrays["inputs"].shape == (n, 64) and arrays["inputs"].dtype == np.int32
        assert ((arrays["lengths"] > 10) & (arrays["lengths"] < 60)).all()
        for ids, length, label in zip(arrays["inputs"], arrays["lengths"], arrays["labels"],
                                      strict=True):
            assert (ids[length:] == 0).all() and (ids[:length] != 0).all()
            assert listops.evaluate(" ".join(listops.VOCAB[i] for i in ids[:length])) == label
        assert sum(meta["label_counts"][split]) == n
    again, _ = listops.prepare(config, "generate", None)
    assert (again["test"]["inputs"] == splits["test"]["inputs"]).all()


def test_prepare_truncates_to_max_len():
    splits, _ = listops.prepare(_config(max_len=20), "generate", None)
    full, _ = listops.prepare(_config(max_len=64), "generate", None)
    assert splits["train"]["inputs"].shape == (40, 20)
    assert (splits["train"]["lengths"] == np.minimum(full["train"]["lengths"], 20)).all()
    assert (splits["train"]["inputs"] == full["train"]["inputs"][:, :20]).all()


def test_prepare_release_reads_the_folder_or_its_listops_subfolder(tmp_path):
    folder = tmp_path / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    rows = {"train": [("( ( ( [MAX 2 ) 9 ) ] )", 9)], "val": [("( ( ( [SM 6 ) 5 ) ] )", 1)],
            "test": [("( ( ( ( [MED 1 ) 2 ) 3 ) ] )", 2), ("( ( ( [MIN 7 ) 3 ) ] )", 3)]}
    for split, split_rows in rows.items():
        listops.write_tsv(folder / f"basic_{split}.tsv", split_rows)
    config = _config(source="release")
    for path in (folder, tmp_path, tmp_path / "lra_release"):
        splits, meta = listops.prepare(config, "release", str(path))
        assert meta["path"] == str(folder)
        assert splits["test"]["labels"].tolist() == [2, 3]
        assert splits["test"]["lengths"].tolist() == [5, 4]
        assert splits["test"]["inputs"][1, :5].tolist() == [11, 8, 4, 15, 0]
    config = _config(source="release", num_train=0, num_test=1, seed=3)
    splits, _ = listops.prepare(config, "release", str(tmp_path))
    assert [len(splits[k]["labels"]) for k in ("train", "val", "test")] == [1, 1, 1]
    assert splits["test"]["labels"].tolist() in ([2], [3])
    with pytest.raises(LRAError, match="--path"):
        listops.prepare(config, "release", None)
    with pytest.raises(LRAError, match="basic_train.tsv"):
        listops.prepare(config, "release", str(tmp_path / "elsewhere"))


def test_variant_encodes_source_bounds_counts_and_seed():
    base = listops.variant(_config())
    others = [_config(min_length=11), _config(max_length=61), _config(num_train=41),
              _config(num_val=11), _config(num_test=11), _config(seed=1), _config(max_len=32)]
    names = {base, *(listops.variant(c) for c in others)}
    assert len(names) == 1 + len(others)
    assert listops.variant(_config(source="release", max_len=2000)) == (
        "release-n40.10.10-seed0-maxlen2000")
    assert listops.variant(_config(source="release", num_val=0)) != listops.variant(
        _config(source="release"))


def test_impossible_requests_raise(monkeypatch):
    with pytest.raises(LRAError, match="num_val=0"):
        listops.prepare(_config(num_val=0), "generate", None)
    with pytest.raises(LRAError, match="data.min_length"):
        listops.generate_rows(5, min_length=10, max_length=11, seed=0)
    monkeypatch.setattr(listops, "_MISS_LIMIT", 20_000)
    # with 2 arguments only length 4 fits 3 < length < 5: 4 operators x 100 digit pairs
    assert len(listops.generate_rows(400, min_length=3, max_length=5, seed=0, max_args=2)) == 400
    with pytest.raises(LRAError, match="only 400 distinct"):
        listops.generate_rows(401, min_length=3, max_length=5, seed=0, max_args=2)
    with pytest.raises(LRAError, match="only 0 distinct"):
        listops.generate_rows(1, min_length=3, max_length=50, seed=0, max_depth=1)


def test_store_round_trip_through_lra_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path))
    config = _config()
    path = data.open_dataset(config)
    assert path == tmp_path / "listops" / listops.variant(config)
    meta = store.read_meta(path)
    assert meta["source"] == "generate" and meta["counts"] == {"train": 40, "val": 10,
                                                                "test": 10}
    assert store.read_split(path, "val")["inputs"].shape == (10, 64)
