"""The one atomic writer: a file or folder appears whole or not at all."""

import os
import stat

import pytest

from lra import atomic
from lra.atomic import atomic_path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_file_appears_whole_with_mode_644(tmp_path):
    path = tmp_path / "sub" / "out.json"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".json"  # e.g. savefig reads it
        tmp.write_text("new")
        assert not path.exists()
    assert path.read_text() == "new" and _names(path.parent) == ["out.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and _names(tmp_path) == ["out.txt"]


def test_a_folder_replaces_the_old_one_or_is_dropped_on_failure(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "stale").write_text("x")
    with atomic_path(path, directory=True) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert _names(path) == ["meta.json"] and _names(tmp_path) == ["data"]
    with pytest.raises(RuntimeError), atomic_path(path, directory=True) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError
    assert _names(path) == ["meta.json"] and _names(tmp_path) == ["data"]


def test_a_folder_that_a_concurrent_writer_put_in_place_first_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "data"
    replace = os.replace

    def lose_the_race(src, dst):  # another process renames its folder into place first
        os.mkdir(dst)
        (dst / "theirs").write_text("x")
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", lose_the_race)
    with atomic.atomic_path(path, directory=True) as tmp:
        (tmp / "mine").write_text("x")
    assert _names(path) == ["theirs"] and _names(tmp_path) == ["data"]
