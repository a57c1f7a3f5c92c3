"""A damaged newest `latest` checkpoint falls back to the one before; none sound is one LRAError."""

import json
from pathlib import Path

import pytest

from lra.errors import LRAError
from lra.training import config, train

OVERRIDES = {"train.steps": "20", "train.eval_every": "10", "train.log_every": "10"}


def empty_checkpoint(workdir: Path, step: int) -> None:
    """Truncate every file of `latest` checkpoint `step` to 0 bytes."""
    folder = workdir / "checkpoints" / "latest" / str(step)
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files
    for f in files:
        f.write_bytes(b"")


def rerun(c, workdir: Path) -> dict:
    (workdir / "summary.json").unlink()  # not finished: train resumes from `latest`
    return train.train(c, workdir)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    c = config.load("listops:size=smoke", OVERRIDES)
    straight = train.train(c, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "latest"
    assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [10, 20]
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    empty_checkpoint(tmp_path / "run", 20)
    again = rerun(c, tmp_path / "run")
    assert "checkpoint 20" in caplog.text and "earlier checkpoint 10" in caplog.text
    assert any(f.stat().st_size for f in (latest / "20").rglob("*") if f.is_file())  # saved again
    for key in ("status", "steps", "best_val_acc", "best_step", "test_acc"):
        assert again[key] == straight[key], key
    strip = [{k: v for k, v in json.loads(r).items() if k != "elapsed_seconds"}
             for r in metrics.splitlines()]
    assert strip == [{k: v for k, v in json.loads(r).items() if k != "elapsed_seconds"}
                     for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_no_sound_checkpoint_is_one_line_error(tmp_path):
    c = config.load("listops:size=smoke", OVERRIDES)
    train.train(c, tmp_path / "run")
    for step in (10, 20):
        empty_checkpoint(tmp_path / "run", step)
    with pytest.raises(LRAError) as e:
        rerun(c, tmp_path / "run")
    run = tmp_path / "run"
    assert str(e.value) == (f"checkpoint 20 in {run} is damaged and no earlier one is sound; "
                            f"delete {run / 'checkpoints'} to restart from step 0")
