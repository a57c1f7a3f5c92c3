"""Retrieval (AAN) data: the release TSV reader, both text forms, splits, tokens and errors."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lra.configs import retrieval as retrieval_config

from lra import data
from lra.data import retrieval, store
from lra.errors import LRAError


def literal(doc: bytes) -> bytes:
    """A document the way the release stores it: Python's repr of the bytes."""
    return repr(doc).encode("ascii")


# (label column, first document, second document, store the documents as literals?)
PAIRS = {
    "train": [
        (b"1", b"Attention is all you need.", b"Neural machine translation", True),
        (b"0", b"Tabs\tand\nnewlines\r\n", b"quote ' and \" and back\\slash", True),
        (b"1.0", "Unicode \u2019quote\u2019 \u00e9".encode(), b"plain second", True),
        (b"0.0", b"plain text first", b"plain text second", False),
        (b"1", b"x" * 40, b"", True),
        (b"0", b"only 'single' quotes", b"\x00\xff raw bytes", True),
    ],
    "val": [(b"1", b"val one", b"val two", True), (b"0", b"val three", b"val four", False)],
    "test": [(b"0", b"test a", b"test b", True), (b"1", b"test c", b"test d", True),
             (b"1", b"test e", b"test f", False)],
}


def write_release(root: Path, line_end: bytes = b"\n") -> Path:
    folder = root / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    for split, pairs in PAIRS.items():
        lines = []
        for i, (label, doc1, doc2, as_literal) in enumerate(pairs):
            texts = [literal(d) if as_literal else d for d in (doc1, doc2)]
            lines.append(b"\t".join([label, f"p{i}".encode(), f"q{i}".encode(), *texts]))
        (folder / retrieval.FILES[split]).write_bytes(line_end.join(lines) + line_end)
    return root / "lra_release"


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    return write_release(tmp_path)


def smoke_config(**data_values):
    c = retrieval_config.get_config("size=smoke")
    c.data.update({"max_len": 32, "num_train": 0, "num_val": 0, "num_test": 0, **data_values})
    return c


def decoded(inputs, lengths) -> list[bytes]:
    return [(row[:n] - 1).astype(np.uint8).tobytes() for row, n in zip(inputs, lengths,
                                                                        strict=True)]


def test_counts_labels_and_both_documents(release):
    splits, meta = retrieval.prepare(smoke_config(), "release", str(release))
    assert meta == {"vocab_size": 257, "num_classes": 2, "max_len": 32}
    for split, pairs in PAIRS.items():
        arrays = splits[split]
        assert set(arrays) == {"inputs", "lengths", "inputs2", "lengths2", "labels"}
        assert arrays["inputs"].shape == arrays["inputs2"].shape == (len(pairs), 32)
        assert arrays["labels"].tolist() == [int(float(p[0])) for p in pairs]
        assert decoded(arrays["inputs"], arrays["lengths"]) == [p[1][:32] for p in pairs]
        assert decoded(arrays["inputs2"], arrays["lengths2"]) == [p[2][:32] for p in pairs]
        for field in ("inputs", "inputs2"):
            lengths = arrays["lengths" if field == "inputs" else "lengths2"]
            for row, n in zip(arrays[field], lengths, strict=True):
                assert np.all(row[n:] == 0) and np.all(row[:n] >= 1)


def test_truncation_and_empty_documents(release):
    splits, _ = retrieval.prepare(smoke_config(max_len=8), "release", str(release))
    train = splits["train"]
    assert train["lengths"].tolist() == [min(len(p[1]), 8) for p in PAIRS["train"]]
    assert train["lengths2"][4] == 0 and np.all(train["inputs2"][4] == 0)
    assert train["inputs2"][5, 0] == 1  # byte 0x00 is token 1, never padding


@pytest.mark.parametrize("layout", ["lra_release", "tsv_data", "parent"])
def test_release_layouts(release, layout):
    where = {"lra_release": release, "tsv_data": release / "tsv_data",
             "parent": release.parent}[layout]
    splits, _ = retrieval.prepare(smoke_config(), "release", str(where))
    assert len(splits["val"]["labels"]) == 2


def test_crlf_lines_and_store_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    c = smoke_config()
    c.data.path = str(write_release(tmp_path, line_end=b"\r\n"))
    path = data.prepare(c)
    assert data.open_dataset(c) == path
    assert store.read_meta(path)["counts"] == {"train": 6, "val": 2, "test": 3}
    test = store.read_split(path, "test")
    assert decoded(test["inputs2"], test["lengths2"]) == [p[2] for p in PAIRS["test"]]


def test_subsampling_is_seeded_and_a_subset(release):
    config = smoke_config(num_train=3, num_test=2)
    first, _ = retrieval.prepare(config, "release", str(release))
    again, _ = retrieval.prepare(config, "release", str(release))
    assert [len(first[s]["labels"]) for s in ("train", "val", "test")] == [3, 2, 2]
    np.testing.assert_array_equal(first["train"]["inputs"], again["train"]["inputs"])
    docs = decoded(first["train"]["inputs"], first["train"]["lengths"])
    assert set(docs) <= {p[1][:32] for p in PAIRS["train"]}


@given(st.binary(max_size=64))
def test_a_bytes_literal_decodes_to_its_bytes(doc):
    assert retrieval.decode_text(literal(doc)) == doc


def test_decode_text_forms():
    assert retrieval.decode_text(b"plain text") == b"plain text"
    assert retrieval.decode_text(b"b'") == b"b'"
    assert retrieval.decode_text(b"b\"it's\"") == b"it's"
    assert retrieval.decode_text(rb"b'a\nb\xe2\x80\x99'") == b"a\nb\xe2\x80\x99"
    for bad in (rb"b'\x4'", b"b'trailing\\'", rb"b'\q'"):
        with pytest.raises(ValueError, match="bad bytes literal"):
            retrieval.decode_text(bad)


@pytest.mark.parametrize("row, reason", [
    (b"1\tp\tq\tonly four", "4 columns"),
    (b"2\tp\tq\tb'a'\tb'b'", "label"),
    (b"yes\tp\tq\tb'a'\tb'b'", "label"),
    (b"1\tp\tq\t" + rb"b'\x4'" + b"\tb'b'", "bad bytes literal"),
    (b"1\tp\tq\tb'a'\tb'b'\textra " + b"y" * 200, "6 columns"),
])
def test_malformed_rows_name_file_line_and_row(release, row, reason):
    file = release / "tsv_data" / retrieval.FILES["val"]
    file.write_bytes(file.read_bytes() + row + b"\n")
    with pytest.raises(LRAError) as err:
        retrieval.prepare(smoke_config(), "release", str(release))
    message = str(err.value)
    assert f"{file}:3: malformed row" in message and reason in message
    assert repr(row[:80]) in message
    assert "\n" not in message and len(message) < 400


def test_missing_data_names_place_and_command(tmp_path, release):
    with pytest.raises(LRAError, match=r"retrieval: no new_aan_pairs.*nowhere.*"
                                       r"lra data prepare retrieval --size smoke --source release"):
        retrieval.prepare(smoke_config(), "release", str(tmp_path / "nowhere"))
    with pytest.raises(LRAError, match=r"--path and config.data.path are empty.*lra data prepare"):
        retrieval.prepare(smoke_config(), "release", None)
    (release / "tsv_data" / retrieval.FILES["test"]).unlink()
    with pytest.raises(LRAError, match="retrieval: no new_aan_pairs"):
        retrieval.prepare(smoke_config(), "release", str(release))


def test_empty_file_is_an_error(release):
    (release / "tsv_data" / retrieval.FILES["test"]).write_bytes(b"\n")
    with pytest.raises(LRAError, match=r"new_aan_pairs.test.tsv: no rows"):
        retrieval.prepare(smoke_config(), "release", str(release))


def test_configs_per_size():
    configs = {s: retrieval_config.get_config(f"size={s}")
               for s in ("smoke", "cpu", "nystrom", "lra")}
    assert {s: c.data.max_len for s, c in configs.items()} == {
        "smoke": 128, "cpu": 1024, "nystrom": 4000, "lra": 4000}
    lra = configs["lra"]
    assert (lra.model.num_layers, lra.model.emb_dim, lra.model.mlp_dim, lra.model.num_heads) == (
        4, 128, 512, 4)
    assert (lra.train.steps, lra.train.batch_size, lra.train.lr) == (5000, 32, 0.05)
    assert len({retrieval.variant(c) for c in configs.values()}) == 3  # nystrom and lra share
    assert all(c.data.source == "release" for c in configs.values())
