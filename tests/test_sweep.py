"""Sweeps: the grid, sharding, one process per run, and resume after the sweep is killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lra import cli
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
    # the command line's --config.* apply to every run, over the file's own
    runs = sweep.from_file(str(f), {"train.steps": "7", "train.lr": "0.01"})
    assert runs[1].overrides == (("train.lr", "0.01"), ("train.steps", "7"))
    assert "--config.train.lr=0.01" in runs[1].command(tmp_path)


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


def test_a_run_killed_by_sigterm_before_its_handler_is_resumable_not_failed(tmp_path, monkeypatch):
    script = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"  # the default action: death
    monkeypatch.setattr(sweep.Run, "command", lambda self, workdir: [sys.executable, "-c", script])
    run = sweep.Run("listops", "softmax", "smoke", 0)
    assert sweep.execute([run], tmp_path) == {run.name: "terminated"}
    assert not (tmp_path / run.name / "summary.json").exists()


def fake_training(stuck):
    """A `lra train` stand-in (Run.command) whose run is stuck at chance when `stuck(run)`."""
    def command(self, workdir):
        summary = {"task": self.task, "model": self.model, "size": self.size,
                   "seed": self.train_seed, "status": "stuck" if stuck(self) else "ok",
                   "test_acc": 0.1 if stuck(self) else 0.6, "chance_accuracy": 0.1,
                   "learned": not stuck(self)}
        path = workdir / self.name / "summary.json"
        return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(path)!r}).write_text("
                f"{json.dumps(summary)!r})"]
    return command


BASE = "listops/smoke/softmax/seed"


def test_reseed_stuck_reruns_only_the_stuck_seed_and_keeps_every_attempt(tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(sweep.Run, "command",
                        fake_training(lambda run: run.seed == 1 and run.attempt == 0))
    args = ["sweep", "--tasks", "listops", "--models", "softmax", "--sizes", "smoke", "--seeds",
            "0,1,2", "--workdir", str(tmp_path), "--reseed-stuck", "1"]
    assert cli.main(args) == 1  # seed1 stays stuck in the record
    out = capsys.readouterr().out
    started = [line.split(":")[0] for line in out.splitlines() if line.endswith(": start")]
    assert started == [f"{BASE}0", f"{BASE}1", f"{BASE}2", f"{BASE}1-retry1"]
    first = json.loads((tmp_path / f"{BASE}1/summary.json").read_text())
    retry = json.loads((tmp_path / f"{BASE}1-retry1/summary.json").read_text())
    assert first["status"] == "stuck" and "reseed_of" not in first
    assert retry["status"] == "ok" and retry["seed"] == 1001
    assert (retry["reseed_of"], retry["attempt"]) == (f"{BASE}1", 1)
    assert f"3/4 runs ok; not ok: {BASE}1 (stuck)" in out

    assert cli.main(args) == 1  # a second invocation launches nothing
    out = capsys.readouterr().out
    assert ": start" not in out and f"{BASE}1-retry1: skip (ok)" in out
    assert cli.main(args[:-1] + ["-1"]) == 2
    assert "--reseed-stuck -1" in capsys.readouterr().err


def test_reseeds_stop_after_n_attempts_and_a_later_sweep_adds_only_missing_ones(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(sweep.Run, "command", fake_training(lambda run: run.seed == 1))
    runs = sweep.grid("listops", "softmax", "smoke", "0,1")
    started = []

    def execute(reseed):
        started.clear()
        sweep.execute(runs, tmp_path, lambda run, state: state == "start" and started.append(
            run.name.rsplit("/", 1)[1]), reseed=reseed)
        return list(started)

    assert execute(2) == ["seed0", "seed1", "seed1-retry1", "seed1-retry2"]
    assert execute(3) == ["seed1-retry3"]
    assert execute(1) == []
    seeds = [json.loads(p.read_text())["seed"] for p in sorted(tmp_path.rglob("summary.json"))]
    assert seeds == [0, 1, 1001, 2001, 3001]


def test_core_groups_split_the_cores_disjointly():
    assert sweep.core_groups(2, [0, 1, 2, 3, 4]) == [[0, 2, 4], [1, 3]]
    assert sweep.core_groups(1, [3, 5]) == [[3, 5]]
    for jobs in (0, 3):
        with pytest.raises(LRAError, match=f"--jobs {jobs}: expected 1 to 2"):
            sweep.core_groups(jobs, [0, 1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
def test_jobs_train_runs_at_once_each_on_its_own_cores(tmp_path, monkeypatch):
    def command(self, workdir):
        path = workdir / self.name / "summary.json"
        return [sys.executable, "-c", "import json, os, pathlib, time; start = time.time(); "
                "time.sleep(1.5); pathlib.Path(" + repr(str(path)) + ").write_text(json.dumps("
                "{'status': 'ok', 'start': start, 'end': time.time(), "
                "'cores': sorted(os.sched_getaffinity(0))}))"]

    monkeypatch.setattr(sweep.Run, "command", command)
    runs = sweep.grid("listops", "softmax", "smoke", "0,1")
    assert sweep.execute(runs, tmp_path, jobs=2) == {run.name: "ok" for run in runs}
    a, b = (json.loads((tmp_path / run.name / "summary.json").read_text()) for run in runs)
    assert a["start"] < b["end"] and b["start"] < a["end"]  # they overlapped
    groups = sweep.core_groups(2)
    assert sorted([a["cores"], b["cores"]]) == sorted(groups)


def test_bad_jobs_is_one_line_before_anything_is_written(tmp_path, capsys):
    args = ["sweep", "--models", "softmax", "--sizes", "smoke", "--workdir", str(tmp_path / "w")]
    assert cli.main([*args, "--jobs", "0"]) == 2
    assert capsys.readouterr().err.startswith("lra: error: --jobs 0: expected 1 to ")
    assert not (tmp_path / "w").exists()


# A `lra train` stand-in that runs until SIGTERM, then "checkpoints" and exits 143 like the trainer.
UNTIL_SIGTERM = """
import os, pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    (folder / "terminated").write_text("")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(folder / "pid.tmp").write_text(str(os.getpid()))
(folder / "pid.tmp").rename(folder / "pid")
time.sleep(120)
"""

# A sweep of three such runs, one at a time, through the `lra sweep` command.
SWEEP_UNTIL_SIGTERM = """
import sys
from lra.cli import main
from lra.experiments import sweep
sweep.Run.command = lambda self, workdir: [sys.executable, "-c", {child!r}, str(workdir / self.name)]
sys.exit(main(["sweep", "--models", "softmax", "--sizes", "smoke", "--seeds", "0,1,2",
               "--workdir", {workdir!r}]))
"""


def test_sigterm_to_a_sweep_stops_its_running_child_and_starts_no_more(tmp_path):
    work = tmp_path / "S"
    first, pid = work / "listops/smoke/softmax/seed0", work / "listops/smoke/softmax/seed0/pid"
    script = SWEEP_UNTIL_SIGTERM.format(child=UNTIL_SIGTERM, workdir=str(work))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (pid.exists() and pid.read_text()):
            time.sleep(0.05)
        child = int(pid.read_text())
        proc.send_signal(signal.SIGTERM)  # to the sweep alone, as a scheduler or `kill` does
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, out + err
    assert (first / "terminated").exists() and not (first / "summary.json").exists()
    with pytest.raises(ProcessLookupError):  # no orphan left training
        os.kill(child, 0)
    assert not (work / "listops/smoke/softmax/seed1").exists()
    assert "seed0: terminated" in out and "seed1: not started" in out and "seed2: not started" in out
    assert err == ("lra: sweep stopped by SIGTERM (1 runs finished or saved, 2 not started); "
                   "rerun the same command to resume\n")
