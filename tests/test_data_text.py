"""Text (IMDb) data: the release archive and folder readers, splits, tokens and errors."""

import io
import os
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from lra.configs import text as text_config

from lra import data
from lra.data import store, text
from lra.errors import LRAError

# {(split, label name): [file contents]}; whitespace around a review is not part of it
REVIEWS = {
    ("train", "pos"): [b"  Great film.\n", b"Loved it " * 3, "Caf\u00e9 scene, superb".encode()]
    + [f"good {i}".encode() for i in range(7)],
    ("train", "neg"): [b"Dull.", b"x" * 50, b"<br /><br />Awful acting\r\n"]
    + [f"bad {i}".encode() for i in range(7)],
    ("test", "pos"): [b"Wonderful", b"A classic", b"Bravo"],
    ("test", "neg"): [b"Terrible", b"Boring plot", b"Meh"],
}
UNSUP = [b"unlabelled one", b"unlabelled two"]


def expected_label(review: bytes) -> int:
    for (_, name), rows in REVIEWS.items():
        if review in [r.strip() for r in rows]:
            return text.LABELS[name]
    raise AssertionError(f"unknown review {review!r}")


def write_folder(root: Path) -> Path:
    top = root / "aclImdb"
    for (split, name), rows in REVIEWS.items():
        (top / split / name).mkdir(parents=True)
        for i, review in enumerate(rows):
            (top / split / name / f"{i}_{7 if name == 'pos' else 2}.txt").write_bytes(review)
    (top / "train" / "unsup").mkdir()
    for i, review in enumerate(UNSUP):
        (top / "train" / "unsup" / f"{i}_0.txt").write_bytes(review)
    (top / "imdb.vocab").write_text("the\nfilm\n")
    (top / "train" / "urls_pos.txt").write_text("http://example.org\n")
    return top


def write_archive(root: Path) -> Path:
    top = write_folder(root / "unpacked")
    archive = root / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname="aclImdb")
    return archive


@pytest.fixture
def archive(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    monkeypatch.delenv(text.ARCHIVE_ENV, raising=False)
    return write_archive(tmp_path)


def smoke_config(**data_values):
    c = text_config.get_config("size=smoke")
    c.data.update({"max_len": 16, "num_train": 0, "num_val": 0, "num_test": 0, **data_values})
    return c


def rows(split: dict) -> list[tuple[bytes, int]]:
    """(review bytes, label) of each row, decoded from the tokens."""
    out = []
    columns = (split["inputs"], split["lengths"], split["labels"])
    for tokens, length, label in zip(*columns, strict=True):
        out.append(((tokens[:length] - 1).astype(np.uint8).tobytes(), int(label)))
    return out


def test_archive_counts_labels_tokens_and_padding(archive):
    splits, meta = text.prepare(smoke_config(), "archive", str(archive))
    assert meta == {**meta, "vocab_size": 257, "num_classes": 2, "max_len": 16}
    assert {k: len(v["labels"]) for k, v in splits.items()} == {"train": 18, "val": 2, "test": 6}
    all_reviews = {r.strip() for rows_ in REVIEWS.values() for r in rows_}
    for split in splits.values():
        assert split["inputs"].shape[1] == 16 and split["inputs"].dtype == np.int32
        decoded = zip(rows(split), split["inputs"], split["lengths"], strict=True)
        for (prefix, label), tokens, length in decoded:
            full = next(r for r in all_reviews
                        if r.startswith(prefix) and len(prefix) == min(len(r), 16))
            assert label == expected_label(full)
            assert length == min(len(full), 16)
            assert np.all(tokens[length:] == 0) and np.all(tokens[:length] >= 1)
    assert sorted(splits["test"]["labels"].tolist()) == [0, 0, 0, 1, 1, 1]
    assert (np.concatenate([splits["train"]["labels"], splits["val"]["labels"]]).sum() == 10)


def test_unsup_and_whitespace_are_dropped(archive):
    splits, _ = text.prepare(smoke_config(max_len=64), "archive", str(archive))
    seen = [r for split in splits.values() for r, _ in rows(split)]
    assert not any(r.startswith(b"unlabelled") for r in seen)
    assert b"Great film." in seen and b"<br /><br />Awful acting" in seen
    assert "Caf\u00e9 scene, superb".encode() in seen  # multi-byte UTF-8 kept as bytes


def test_folder_archive_and_parent_folder_give_the_same_data(archive, tmp_path):
    from_archive, _ = text.prepare(smoke_config(), "archive", str(archive))
    for where in (tmp_path / "unpacked" / "aclImdb", tmp_path / "unpacked", tmp_path):
        from_folder, _ = text.prepare(smoke_config(), "archive", str(where))
        for split in from_archive:
            for field in from_archive[split]:
                np.testing.assert_array_equal(from_archive[split][field], from_folder[split][field])


def test_validation_is_a_seeded_part_of_train_never_test(archive):
    first, _ = text.prepare(smoke_config(max_len=64), "archive", str(archive))
    again, _ = text.prepare(smoke_config(max_len=64), "archive", str(archive))
    other, _ = text.prepare(smoke_config(max_len=64, seed=1), "archive", str(archive))
    val, train, test = (set(rows(first[s])) for s in ("val", "train", "test"))
    assert val and not val & train and not val & test
    assert val | train == {(r.strip(), text.LABELS[n]) for (s, n), rr in REVIEWS.items()
                           for r in rr if s == "train"}
    np.testing.assert_array_equal(first["val"]["inputs"], again["val"]["inputs"])
    assert set(rows(other["val"])) != val


def test_val_from_test_is_the_original_protocol(archive):
    splits, meta = text.prepare(smoke_config(val_from_test=True), "archive", str(archive))
    assert len(splits["train"]["labels"]) == 20
    np.testing.assert_array_equal(splits["val"]["inputs"], splits["test"]["inputs"])
    assert "test" in meta["validation"]


def test_subsampling_is_seeded_and_a_subset(archive):
    full, _ = text.prepare(smoke_config(max_len=64), "archive", str(archive))
    small, _ = text.prepare(smoke_config(max_len=64, num_train=5, num_val=1, num_test=3),
                            "archive", str(archive))
    assert [len(small[s]["labels"]) for s in ("train", "val", "test")] == [5, 1, 3]
    for split in small:
        assert set(rows(small[split])) <= set(rows(full[split]))


def test_prepare_writes_the_store_and_open_dataset_finds_it(archive):
    c = smoke_config()
    c.data.path = str(archive)
    path = data.prepare(c)
    assert data.open_dataset(c) == path
    meta = store.read_meta(path)
    assert meta["counts"] == {"train": 18, "val": 2, "test": 6} and meta["source"] == "archive"
    assert store.read_split(path, "val")["inputs"].shape == (2, 16)


def test_archive_from_environment_variable(archive, monkeypatch):
    monkeypatch.setenv(text.ARCHIVE_ENV, str(archive))
    splits, _ = text.prepare(smoke_config(), "archive", None)
    assert len(splits["test"]["labels"]) == 6


def fake_tfds(fail: bool = False) -> types.ModuleType:
    """A stand-in for tensorflow_datasets whose imdb_reviews is the fixture, shuffled."""
    module = types.ModuleType("tensorflow_datasets")

    def load(name, split, batch_size, data_dir, download):
        assert (name, batch_size, download) == ("imdb_reviews", -1, False)
        if fail:
            raise FileNotFoundError("dataset imdb_reviews not found\nmore detail")
        items = [(r.strip(), text.LABELS[n]) for (s, n), rr in REVIEWS.items() for r in rr
                 if s == split]
        order = np.random.default_rng(1).permutation(len(items))
        return {"text": np.array([items[i][0] for i in order], object),
                "label": np.array([items[i][1] for i in order], np.int64)}

    module.load = load
    module.as_numpy = lambda tree: tree
    return module


def test_tfds_source_gives_the_archive_splits(archive, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds())
    from_tfds, _ = text.prepare(smoke_config(), "tfds", None)
    from_archive, _ = text.prepare(smoke_config(), "archive", str(archive))
    for split in from_archive:
        np.testing.assert_array_equal(from_tfds[split]["inputs"], from_archive[split]["inputs"])
        np.testing.assert_array_equal(from_tfds[split]["labels"], from_archive[split]["labels"])


def test_tfds_missing_or_unbuilt_is_a_one_line_error(archive, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(LRAError, match=r"tensorflow-datasets.*pip install"):
        text.prepare(smoke_config(), "tfds", None)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(fail=True))
    with pytest.raises(LRAError, match=r"tfds build imdb_reviews --data_dir /d") as err:
        text.prepare(smoke_config(), "tfds", "/d")
    assert "\n" not in str(err.value)


def test_missing_data_names_task_place_and_command(tmp_path, monkeypatch):
    monkeypatch.delenv(text.ARCHIVE_ENV, raising=False)
    with pytest.raises(LRAError, match=r"text: no IMDb data at .*nowhere.*lra data prepare text "
                                       r"--size smoke --source archive --path"):
        text.prepare(smoke_config(), "archive", str(tmp_path / "nowhere"))
    with pytest.raises(LRAError, match=r"LRA_IMDB_ARCHIVE.*lra data prepare text"):
        text.prepare(smoke_config(), "archive", None)


def test_corrupt_archives_name_the_file(archive, tmp_path):
    not_gzip = tmp_path / "bad.tar.gz"
    not_gzip.write_bytes(b"this is not gzip data" * 10)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    for bad in (not_gzip, truncated):
        with pytest.raises(LRAError, match=rf"{bad}: not a readable gzip tar archive"):
            text.prepare(smoke_config(), "archive", str(bad))
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(LRAError, match=r"other.tar.gz: no train reviews"):
        text.prepare(smoke_config(), "archive", str(other))


def test_bad_config_values_name_the_key(archive):
    with pytest.raises(LRAError, match=r"config.data.max_len"):
        text.prepare(smoke_config(max_len=0), "archive", str(archive))
    with pytest.raises(LRAError, match=r"config.data.val_fraction"):
        text.prepare(smoke_config(val_fraction=1.0), "archive", str(archive))
    with pytest.raises(LRAError, match=r"config.data.num_test"):
        text.prepare(smoke_config(num_test=-1), "archive", str(archive))


def test_configs_per_size():
    configs = {s: text_config.get_config(f"size={s}") for s in ("smoke", "cpu", "nystrom", "lra")}
    assert {s: c.data.max_len for s, c in configs.items()} == {
        "smoke": 128, "cpu": 512, "nystrom": 4000, "lra": 1000}
    lra = configs["lra"]
    assert (lra.model.num_layers, lra.model.emb_dim, lra.model.mlp_dim, lra.model.num_heads) == (
        4, 256, 1024, 4)
    assert (lra.train.steps, lra.train.warmup_steps, lra.train.lr) == (20_000, 8000, 0.05)
    assert len({text.variant(c) for c in configs.values()}) == 4
    assert all(c.data.source == "archive" and not c.data.val_from_test for c in configs.values())


REAL_ARCHIVE = os.environ.get(text.ARCHIVE_ENV, "")


@pytest.mark.slow
@pytest.mark.skipif(not Path(REAL_ARCHIVE).is_file(), reason="$LRA_IMDB_ARCHIVE not set")
def test_real_archive_counts():
    splits, _ = text.prepare(smoke_config(max_len=8), "archive", REAL_ARCHIVE)
    assert {k: len(v["labels"]) for k, v in splits.items()} == {
        "train": 22_500, "val": 2500, "test": 25_000}
    assert splits["train"]["labels"].sum() + splits["val"]["labels"].sum() == 12_500
    assert splits["test"]["labels"].sum() == 12_500
    assert np.all(splits["test"]["lengths"] == 8)
