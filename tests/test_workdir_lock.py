"""One writer per workdir (.lock, dead locks taken over, sweeps skip held runs), SIGTERM
(checkpoint at the current step, exit 143, exact resume) and Ctrl-C (exit 130, resume)."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_train import ROOT, lra_cmd, metrics

from lra.errors import LRAError
from lra.experiments import sweep
from lra.training import config, train, workdir

ARGS = ["train", "--config", "configs/listops.py:size=smoke"]


def wait_for(path: Path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def write_lock(run: Path, pid, host=None):
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                           "since": "2026-12-07T12:00:00Z"}))


def test_second_train_on_a_held_workdir_exits_2_naming_the_holder(tmp_path):
    cmd, env = lra_cmd(*ARGS, "--config.train.steps=400", "--config.train.eval_every=200",
                       "--workdir", str(tmp_path / "run"))
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
    wait_for(tmp_path / "run/.lock", first)
    second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert first.wait() == 0, (tmp_path / "first.log").read_text()
    assert second.returncode == 2
    [line] = second.stderr.strip().splitlines()
    assert re.fullmatch(
        f"lra: error: {re.escape(str(tmp_path / 'run'))} is in use by pid {first.pid} on this "
        r"host since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; wait for it or stop it \(a lock left by a "
        r"dead process on this host is taken over automatically\)", line), line
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "ok"
    assert not (tmp_path / "run/.lock").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    write_lock(tmp_path / "run", dead.pid)
    s = train.train(config.load("listops:size=smoke", {"train.steps": "10"}), tmp_path / "run")
    assert s["status"] == "ok"
    assert "taking over a lock left by a dead process" in caplog.text
    assert not (tmp_path / "run/.lock").exists()


def test_lock_of_another_host_is_respected_and_released_locks_are_deleted(tmp_path):
    write_lock(tmp_path / "run", 1234, host="elsewhere")
    with pytest.raises(LRAError, match="pid 1234 on host elsewhere since .* one from another "
                                       "host is not: delete its .lock"):
        with workdir.lock(tmp_path / "run"):
            pass
    with workdir.lock(tmp_path / "free"):
        held = json.loads((tmp_path / "free/.lock").read_text())
        assert held["host"] == socket.gethostname() and held["pid"] > 0
    assert not (tmp_path / "free").exists()  # nothing written: the workdir is removed again


def test_sweep_skips_and_reports_a_held_run(tmp_path):
    run = sweep.Run("listops", "softmax", "smoke", 0)
    write_lock(tmp_path / run.name, os.getpid())  # this process: alive
    seen = []
    results = sweep.execute([run], tmp_path, lambda r, state: seen.append((r.name, state)))
    pid = os.getpid()
    assert results == {run.name: f"held by pid {pid}"}
    assert seen == [(run.name, f"held by pid {pid}")]
    assert not (tmp_path / run.name / "train.log").exists()
    assert (tmp_path / run.name / ".lock").exists()


STOPPED = [*ARGS, "--config.train.steps=150", "--config.train.eval_every=50",
           "--config.train.log_every=50"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run that a stopped and resumed one must equal."""
    workdir = tmp_path_factory.mktemp("straight")
    cmd, env = lra_cmd(*STOPPED, "--workdir", str(workdir))
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    return workdir


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_saves_exits_in_one_line_and_resumes_exactly(tmp_path, straight, sig,
                                                                     code):
    cmd, env = lra_cmd(*STOPPED, "--workdir", str(tmp_path / "run"))
    with (tmp_path / "stderr.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(tmp_path / "run/metrics.jsonl", proc)
    proc.send_signal(sig)
    assert proc.wait() == code
    step = max(int(p.name) for p in (tmp_path / "run/checkpoints/latest").iterdir()
               if p.name.isdigit())
    assert 50 <= step < 150
    assert (tmp_path / "stderr.log").read_text() == (
        f"lra: terminated at step {step}; rerun the same command to resume\n"
        if sig == signal.SIGTERM else "lra: interrupted\n")
    assert not (tmp_path / "run/.lock").exists()
    assert not (tmp_path / "run/summary.json").exists()

    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    assert metrics(tmp_path / "run") == metrics(straight)
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "ok"


def test_sigterm_between_logs_keeps_the_unlogged_train_metrics(tmp_path, monkeypatch):
    """SIGTERM at step 73 of a 50-step log interval: the checkpoint at 74 carries the train
    metrics of steps 50..73, so the resumed run's step-100 row equals the uninterrupted one."""
    c = config.load("listops:size=smoke", {"train.steps": "100", "train.eval_every": "50",
                                           "train.log_every": "50"})
    train.train(c, tmp_path / "straight")
    batch = train.pipeline.train_batch

    def term_at_73(arrays, step, *args):
        if step == 73:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch(arrays, step, *args)

    monkeypatch.setattr(train.pipeline, "train_batch", term_at_73)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(workdir.Terminated, match="terminated at step 74; rerun"):
        train.train(c, tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) == handler  # train() restores the previous handler
    monkeypatch.undo()
    assert [r["step"] for r in metrics(tmp_path / "run")] == [50]
    train.train(c, tmp_path / "run")
    assert metrics(tmp_path / "run") == metrics(tmp_path / "straight")
