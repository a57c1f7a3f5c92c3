"""Runs that never learn are caught and counted: the chance figures of the prepared data, the
summary's `learned` flag, and `train.stuck_evals` stopping a run whose validation loss sits at
chance (status `stuck`, a finished run for the rerun and the sweep)."""

import json
import math
import sys
import types

import numpy as np
import pytest

from lra import data
from lra.data import store
from lra.experiments import sweep
from lra.training import config, train
from lra.training.workdir import learned

# A tiny two-class task: majority of 1s over 2s (learnable) or random labels (never learnable).
TASK = '''
import numpy as np

from lra import data
from lra.configs import common

NUM_CLASSES, SOURCES, VOCAB_SIZE = 2, ("generate",), 3
SIZES = {"smoke": dict(
    data=dict(max_len=15, num_train=512, num_val=128, num_test=128),
    model=dict(num_layers=1, emb_dim=16, mlp_dim=32, num_heads=2, pooling="mean"),
    train=dict(batch_size=16, steps=60, lr=3e-3, schedule="constant", warmup_steps=0,
               eval_every=10, log_every=10),
)}


def get_config(arg=None):
    return common.finish(common.base_config(NAME, arg), SIZES)


def variant(config):
    return "v"


@data.task(NAME, column=NAME, vocab_size=VOCAB_SIZE, config=__name__)
def prepare(config, source, path):
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("train", "val", "test"):
        n, length = config.data[f"num_{split}"], config.data.max_len
        inputs = rng.integers(1, 3, (n, length))
        labels = ((inputs == 1).sum(1) > (inputs == 2).sum(1) if LEARNABLE
                  else rng.integers(0, 2, n))
        splits[split] = {"inputs": inputs, "lengths": np.full(n, length), "labels": labels}
    return splits, {"vocab_size": VOCAB_SIZE, "num_classes": NUM_CLASSES, "max_len": length}
'''


@pytest.fixture
def task(monkeypatch, tmp_path):
    """register(name, learnable): the task above in a copy of the registry, data in tmp_path."""
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    data.names()  # discover the built-in tasks before copying the registry
    monkeypatch.setattr(data, "_REGISTRY", dict(data._REGISTRY))

    def register(name: str, learnable: bool) -> str:
        module = types.ModuleType(f"test_stuck_{name}")
        module.NAME, module.LEARNABLE = name, learnable
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(TASK, module.__dict__)
        return name

    return register


def direct(labels) -> tuple[float, float]:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(p.max()), float(-(p * np.log(p)).sum())


def test_chance_of_prepared_data_is_that_of_its_train_labels(task, tmp_path):
    listops = config.load("listops:size=smoke")
    path = data.prepare(listops)
    meta = store.read_meta(path)
    labels = np.asarray(store.read_split(path, "train")["labels"])
    assert (meta["chance_accuracy"], meta["chance_loss"]) == pytest.approx(direct(labels))
    assert meta["chance_loss"] < math.log(10) - 0.01  # ListOps' classes are not balanced

    balanced = store.chance(np.array([0, 1] * 50))
    assert balanced == pytest.approx({"chance_accuracy": 0.5, "chance_loss": math.log(2)})

    # data prepared before meta.json held them: computed when a run opens it
    c = config.load(f"{task('noise', learnable=False)}:size=smoke")
    path = data.prepare(c)
    old = {k: v for k, v in store.read_meta(path).items() if not k.startswith("chance_")}
    (path / "meta.json").write_text(json.dumps(old))
    meta, _ = train.load_splits(c)
    assert (meta["chance_accuracy"], meta["chance_loss"]) == pytest.approx(
        direct(np.asarray(store.read_split(path, "train")["labels"])))


def test_random_labels_are_flagged_and_stop_stuck(task, tmp_path, monkeypatch):
    c = config.load(f"{task('noise', learnable=False)}:size=smoke",
                    {"train.stuck_evals": "2", "train.eval_every": "5", "train.log_every": "5"})
    run = sweep.Run("noise", "softmax", "smoke", 0)
    workdir = tmp_path / run.name
    seen = []
    summary = train.train(c, workdir, lambda step, total, m: seen.append(m["stuck"]))
    assert summary["status"] == "stuck" and summary["steps"] < c.train.steps
    assert summary["learned"] is False and "chance" in summary["learned_reason"]
    assert summary["chance_loss"] == pytest.approx(math.log(2), abs=0.01)
    assert summary["test_acc"] is not None and True in seen
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == summary["steps"] and len(rows) >= 2
    assert {"best", "latest"} <= {p.name for p in (workdir / "checkpoints").iterdir()}

    # finished: a rerun returns the summary, the sweep skips it
    assert train.train(c, workdir, lambda *_: pytest.fail("trained again")) == summary
    monkeypatch.setattr(sweep.subprocess, "run", lambda *_, **__: pytest.fail("swept again"))
    assert sweep.execute([run], tmp_path) == {run.name: "stuck"}


def test_a_run_that_learns_is_not_flagged(task, tmp_path):
    c = config.load(f"{task('majority', learnable=True)}:size=smoke", {"train.stuck_evals": "2"})
    summary = train.train(c, tmp_path / "run")
    assert summary["status"] == "ok" and summary["steps"] == c.train.steps
    assert summary["learned"] is True and "learned_reason" not in summary
    assert summary["best_val_acc"] > summary["chance_accuracy"] + 0.1


def test_learned_reason():
    assert learned(0.503, 0.5, 0.01) == {
        "learned": False, "learned_reason": "best val 50.3% is within 1.0 points of chance 50.0% "
                                            "(majority class of the training labels)"}
    assert learned(0.52, 0.5, 0.01) == {"learned": True}
    assert learned(None, 0.5, 0.01)["learned"] is False


def test_the_progress_line_shows_stuck(capsys):
    from lra.cli import commands

    with commands.progress_bar("noise/softmax") as update:
        update(5, 60, {"loss": 0.69, "accuracy": 0.5, "steps/s": 9.0, "stuck": False})
        update(10, 60, {"loss": 0.69, "accuracy": 0.5, "steps/s": 9.0, "stuck": True})
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "stuck?" not in first and second.endswith("stuck?")
