"""The trainer end to end on generated ListOps (size=smoke): summary, resume, divergence, devices."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lra.data import store
from lra.errors import LRAError
from lra.training import config, train

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"elapsed_seconds"}


def lra_cmd(*args, env=None):
    env = {**os.environ, **(env or {})}
    return [sys.executable, "-m", "lra.cli", *args], env


def metrics(workdir):
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_smoke_run_writes_summary_metrics_and_checkpoints(tmp_path):
    c = config.load("listops:size=smoke")
    s = train.train(c, tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == c.train.steps
    for key in ("task", "model", "size", "seed", "params", "best_val_acc", "test_acc", "steps",
                "train_seconds", "examples_per_second", "peak_memory_bytes",
                "peak_memory_method", "device", "jax_version", "flax_version", "optax_version",
                "cpu_threads", "git_commit"):
        assert key in s, key
    assert s["cpu_threads"] == len(os.sched_getaffinity(0))
    assert s["peak_memory_method"] == "xla_memory_analysis" and s["peak_memory_bytes"] > 0
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20]
    best = max(rows, key=lambda r: r["val_accuracy"])
    assert s["best_val_acc"] == best["val_accuracy"] and s["test_acc"] == best["test_accuracy"]
    assert any((tmp_path / "run/checkpoints/best").iterdir())
    again = train.train(c, tmp_path / "run")  # finished: skipped, same summary
    assert again == json.loads((tmp_path / "run/summary.json").read_text())


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ["train", "--config", "configs/listops.py:size=smoke", "--config.train.steps=120",
            "--config.train.eval_every=20", "--config.train.log_every=10"]
    cmd, env = lra_cmd(*args, "--workdir", str(tmp_path / "straight"))
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)

    cmd, env = lra_cmd(*args, "--workdir", str(tmp_path / "killed"))
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed/checkpoints/latest"
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            p.name.isdigit() and int(p.name) >= 40 for p in (latest.iterdir() if latest.exists() else [])):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed/summary.json").exists(), "the run finished before the kill"
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)

    assert metrics(tmp_path / "killed") == metrics(tmp_path / "straight")
    a = json.loads((tmp_path / "killed/summary.json").read_text())
    b = json.loads((tmp_path / "straight/summary.json").read_text())
    for key in ("best_val_acc", "test_acc", "best_step", "steps", "status"):
        assert a[key] == b[key], key


def test_non_finite_loss_is_recorded_as_diverged(tmp_path):
    c = config.load("listops:size=smoke", {"train.lr": "1e30", "train.steps": "40",
                                           "train.log_every": "5"})
    s = train.train(c, tmp_path / "run")
    assert s["status"] == "diverged" and s["steps"] < 40
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "diverged"


def test_two_devices_match_one_device(tmp_path):
    losses = {}
    for n in (1, 2):
        work = tmp_path / f"d{n}"
        cmd, env = lra_cmd("train", "--config", "configs/listops.py:size=smoke",
                           f"--config.train.num_devices={n}", "--config.model.dropout=0",
                           "--config.model.attention_dropout=0", "--workdir", str(work),
                           env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
        assert json.loads((work / "summary.json").read_text())["device"].endswith(f"x{n}")
        losses[n] = [r["train_loss"] for r in metrics(work)] + [r["val_loss"] for r in metrics(work)]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)


def test_resume_with_a_different_config_is_refused(tmp_path):
    train.train(config.load("listops:size=smoke", {"train.steps": "10"}), tmp_path / "run")
    with pytest.raises(LRAError, match="different config"):
        train.train(config.load("listops:size=smoke", {"train.lr": "0.5"}), tmp_path / "run")


def test_label_out_of_range_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    c = config.load("listops:size=smoke")
    from lra import data

    path = data.open_dataset(c)
    data.open_dataset(c)  # checksums verified: an edit of the same size now goes unnoticed
    labels = np.array(np.load(path / "train.labels.npy"))
    labels[3] = 12
    np.save(path / "train.labels.npy", labels)
    with pytest.raises(LRAError, match="row 3 has label 12"):
        train.train(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert store.is_prepared(path)


def test_rsqrt_schedule_matches_lra_formula():
    from lra.training import optim

    t = config.load("listops:size=lra").train
    lr = optim.schedule(t)
    assert np.isclose(lr(500), 0.05 * 0.5 / np.sqrt(1000))
    assert np.isclose(lr(4000), 0.05 / np.sqrt(4000))


def test_stateful_attention_trains_and_updates_its_state(tmp_path):
    """Routing's k-means centroids are non-Param state updated inside the jitted train step."""
    c = config.load("listops:model=routing,size=smoke", {"train.steps": "4", "train.eval_every": "4"})
    meta, splits = train.load_splits(c)
    trainer = train.Trainer(c, meta, train.device_mesh(c))
    before = [np.asarray(x) for x in jax.tree.leaves(trainer.state["rest"])]
    trainer.step(train.pipeline.train_batch(splits["train"], 0, c.train.batch_size, 0), 0)
    after = [np.asarray(x) for x in jax.tree.leaves(trainer.state["rest"])]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
