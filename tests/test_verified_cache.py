"""Prepared datasets record each file's size and sha256: damage is found on open (and by
`lra data verify`); generated data is rebuilt, real data stops with the prepare command."""

import json
import logging

import numpy as np
import pytest

from lra import data
from lra.cli import main
from lra.data import store
from lra.errors import LRAError
from lra.training import config


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def arrays(path):
    return {f.name: np.load(f) for f in sorted(path.glob("*.npy"))}


def truncate(f, keep=100):
    f.write_bytes(f.read_bytes()[:keep])


def flip_last_byte(f):
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))


def test_generated_set_is_verified_once_and_rebuilt_when_damaged(data_dir, caplog):
    c = config.load("listops:size=smoke")
    path = data.open_dataset(c)
    files = store.read_meta(path)["files"]
    assert files["train.inputs.npy"]["bytes"] == (path / "train.inputs.npy").stat().st_size
    before = arrays(path)
    assert data.open_dataset(c) == path and (path / "verified").is_file()

    flip_last_byte(path / "test.labels.npy")  # same size: only a checksum finds it
    assert data.open_dataset(c) == path  # verified: sizes only
    assert store.damage(path, full=True) == "test.labels.npy: sha256 differs from meta.json"

    truncate(path / "train.inputs.npy")
    with caplog.at_level(logging.WARNING):
        assert data.open_dataset(c) == path
    assert f"prepared listops data at {path} is damaged (train.inputs.npy: 100 bytes" in caplog.text
    after = arrays(path)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def write_release_set(c):
    """A tiny prepared set as if from the LRA release (not regenerable)."""
    rng = np.random.default_rng(0)
    split = {"inputs": rng.integers(1, 10, (4, 8)), "lengths": np.full(4, 8),
             "labels": np.arange(4) % 2}
    meta = {"task": "listops", "source": "release", "vocab_size": 10, "num_classes": 10,
            "max_len": 8, **store.chance(split["labels"])}
    return store.write_dataset(data.dataset_path(c), {s: split for s in store.SPLITS}, meta)


def test_damaged_real_data_stops_with_the_prepare_command(data_dir, tmp_path, capsys):
    c = config.load("listops:size=smoke", {"data.source": "release"})
    path = write_release_set(c)
    assert data.open_dataset(c) == path
    (path / "val.lengths.npy").write_bytes(b"")
    with pytest.raises(LRAError) as e:
        data.open_dataset(c)
    assert str(e.value) == (
        f"prepared listops data at {path} is damaged (val.lengths.npy: 0 bytes, meta.json "
        f"records {store.read_meta(path)['files']['val.lengths.npy']['bytes']}); rebuild it: "
        "lra data prepare listops --source release --path <PATH> --size smoke")
    assert main(["train", "--config", "listops:size=smoke", "--config.data.source=release",
                 "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rebuild it: lra data prepare listops --source release" in err


def test_unreadable_array_and_old_cache(data_dir):
    c = config.load("listops:size=smoke", {"data.source": "release"})
    path = write_release_set(c)
    meta = store.read_meta(path)
    del meta["files"]  # written before sizes were recorded: accepted
    (path / "meta.json").write_text(json.dumps(meta))
    assert store.damage(path, full=True) is None
    truncate(path / "train.labels.npy", keep=140)  # header kept, data cut: still found
    assert store.damage(path).startswith("train.labels.npy: unreadable array")


def test_data_verify_reports_ok_then_damaged(data_dir, capsys):
    c = config.load("listops:size=smoke", {"data.source": "release"})
    path = write_release_set(c)
    assert main(["data", "verify"]) == 0
    assert capsys.readouterr().out == f"listops/{path.name}: ok\n"
    flip_last_byte(path / "train.inputs.npy")
    assert main(["data", "verify"]) == 1
    assert capsys.readouterr().out == (f"listops/{path.name}: damaged: train.inputs.npy: "
                                       "sha256 differs from meta.json\n")
