"""Sweeps: the grid, sharding, one process per run, and resume after the sweep is killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lra.errors import LRAError
from lra.experiments import sweep

ROOT = Path(__file__).resolve().parents[1]


def test_grid_and_shards_cover_every_run_once():
    runs = sweep.grid("listops", "all", "smoke,cpu", "0,1,2")
    assert len(runs) == 2 * 3 * len(sweep.attention.names())
    shards = [sweep.shard(runs, f"{i}/4") for i in range(4)]
    assert sorted(r.name for s in shards for r in s) == sorted(r.name for r in runs)
    assert len({r.name for r in runs}) == len(runs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks="nope", models="softmax", sizes="cpu", seeds="0"), "unknown task"),
    (dict(tasks="listops", models="nope", sizes="cpu", seeds="0"), "unknown model"),
    (dict(tasks="listops", models="softmax", sizes="xl", seeds="0"), "unknown size"),
    (dict(tasks="listops", models="softmax", sizes="cpu", seeds="a"), "--seeds"),
])
def test_bad_grid_is_a_clear_error(kwargs, message):
    with pytest.raises(LRAError, match=message):
        sweep.grid(**kwargs)


def test_bad_shard_is_a_clear_error():
    with pytest.raises(LRAError, match="i/n"):
        sweep.shard([], "3/2")


def test_sweep_from_a_config_file(tmp_path):
    f = tmp_path / "my_sweep.py"
    f.write_text("def sweep():\n    return [dict(task='listops', model='softmax', size='smoke',"
                 " seed=s, overrides={'train.steps': 5}) for s in (0, 1)]\n")
    runs = sweep.from_file(str(f))
    assert [r.seed for r in runs] == [0, 1] and runs[0].overrides == (("train.steps", "5"),)


def test_killed_sweep_resumes_and_skips_finished_runs(tmp_path):
    work = tmp_path / "S"
    cmd = [sys.executable, "-m", "lra.cli", "sweep", "--tasks", "listops", "--models", "softmax",
           "--sizes", "smoke", "--seeds", "0,1", "--workdir", str(work),
           "--config.train.steps=200", "--config.train.eval_every=50"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = work / "listops/smoke/softmax/seed0/summary.json"
    second = work / "listops/smoke/softmax/seed1"
    deadline = time.time() + 300
    while time.time() < deadline and not (first.exists() and second.exists()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (second / "summary.json").exists()
    stamp = first.stat().st_mtime_ns

    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "seed0: skip (ok)" in out.stdout and "2/2 runs ok" in out.stdout
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((second / "summary.json").read_text())["status"] == "ok"


def test_a_failing_run_is_recorded_with_its_log_and_the_sweep_goes_on(tmp_path):
    bad = sweep.Run("listops", "softmax", "smoke", 0, (("train.lr", "not-a-number"),))
    results = sweep.execute([bad], tmp_path)
    summary = json.loads((tmp_path / bad.name / "summary.json").read_text())
    assert results == {bad.name: "failed"} and summary["status"] == "failed"
    assert "train.lr" in summary["error"] and "train.lr" in (tmp_path / bad.name / "train.log").read_text()


@pytest.mark.parametrize("script, state", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "oom"),  # the OOM killer
    ("raise SystemExit('RESOURCE_EXHAUSTED: failed to allocate 8 GiB')", "oom"),
    ("raise SystemExit('some other crash')", "failed"),
])
def test_a_run_that_dies_without_a_summary_is_classified(tmp_path, monkeypatch, script, state):
    monkeypatch.setattr(sweep.Run, "command", lambda self, workdir: [sys.executable, "-c", script])
    run = sweep.Run("listops", "softmax", "smoke", 0)
    assert sweep.execute([run], tmp_path) == {run.name: state}
    assert json.loads((tmp_path / run.name / "summary.json").read_text())["status"] == state
