"""`lra sweep --launcher slurm` through submitit, without a cluster: submitit's local executor
runs a smoke grid in subprocesses (and survives a simulated preemption), a fake `sbatch`
captures the job-array script, and `--status` reads the run folders."""

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from lra import cli
from lra.errors import LRAError
from lra.experiments import launch, sweep
from lra.training.workdir import write_json

submitit = pytest.importorskip("submitit")

STEPS = {"train.steps": "200", "train.eval_every": "50"}


def final(workdir: Path) -> tuple[list[dict], dict]:
    rows = [{k: v for k, v in json.loads(line).items() if k != "elapsed_seconds"}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    s = json.loads((workdir / "summary.json").read_text())
    return rows, {k: s[k] for k in ("status", "steps", "best_val_acc", "best_step", "test_acc")}


def local_executor(folder: Path):
    executor = submitit.LocalExecutor(folder=str(folder / "%j"))
    executor.update_parameters(timeout_min=10)  # submitit's own timeout signal stays out of the way
    return executor


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A two-run smoke grid run to the end by submitit's local executor."""
    work = tmp_path_factory.mktemp("grid")
    runs = sweep.grid("listops", "softmax", "smoke", "0,1", STEPS)
    jobs, submitted = launch.submit(runs, work, local_executor(work / ".submitit"))
    assert submitted == runs
    assert [job.result() for job in jobs] == ["ok", "ok"]
    return work, runs


def test_local_executor_runs_a_two_run_grid_and_a_rerun_submits_nothing(grid_run, tmp_path):
    work, runs = grid_run
    for run in runs:
        assert final(work / run.name)[1]["status"] == "ok"
        assert "test acc" in (work / run.name / "train.log").read_text()  # the child wrote it
    assert json.loads((work / "sweep.json").read_text())["runs"] == [r.name for r in runs]
    assert launch.submit(runs, work, local_executor(tmp_path)) == ([], [])
    assert [state for _, state, _ in sweep.listing(work)] == ["done", "done"]


def test_preempted_task_checkpoints_requeues_and_ends_like_an_uninterrupted_run(grid_run, tmp_path):
    work, runs = grid_run
    run = runs[0]
    jobs, _ = launch.submit([run], tmp_path, local_executor(tmp_path / ".submitit"))
    folder = tmp_path / run.name
    deadline = time.time() + 60
    while not ((folder / "metrics.jsonl").exists() and (folder / ".lock").exists()):
        assert time.time() < deadline and jobs[0].state == "RUNNING", "the run did not start"
        time.sleep(0.05)
    child = json.loads((folder / ".lock").read_text())["pid"]
    worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    # SLURM signals every process of the job step before the time limit: the child ignores it,
    # the submitit worker checkpoints (SIGTERM to the child) and requeues
    os.kill(child, submitit.JobEnvironment._usr_sig())
    os.kill(worker, submitit.JobEnvironment._usr_sig())
    assert jobs[0].result() == "ok"  # requeued by submitit, resumed from the checkpoint
    log = (folder / "train.log").read_text()
    assert "terminated at step" in log and "resumed" not in log.split("terminated at step")[0]
    stopped = int(log.split("terminated at step ")[1].split(";")[0])
    assert 50 <= stopped < 200
    assert final(folder) == final(work / run.name)


def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`sbatch` that keeps the script it is given and `srun` that submitit looks for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_COPY"\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_COPY", str(tmp_path / "script.sh"))
    return tmp_path / "script.sh"


def test_sbatch_script_holds_the_array_the_resources_and_the_command(tmp_path, monkeypatch):
    script = fake_slurm(tmp_path, monkeypatch)
    work = tmp_path / "S"
    args = ["sweep", "--launcher", "slurm", "--tasks", "listops", "--models", "softmax",
            "--sizes", "smoke", "--seeds", "0,1,2", "--workdir", str(work),
            "--slurm.partition", "gpu", "--slurm.gpus_per_task", "2", "--slurm.time", "01:30:00",
            "--slurm.array_parallelism", "2", "--slurm.additional", "qos=high",
            "--slurm.additional", "account=lab", "--config.train.steps=7"]
    assert cli.main(args) == 0
    text = script.read_text()
    for flag in ("--array=0-2%2", "--partition=gpu", "--gpus-per-task=2", "--time=90",
                 "--qos=high", "--account=lab", "--signal=USR2@90", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}\n" in text
    assert "srun --unbuffered" in text and "-u -m submitit.core._submit" in text
    assert sys.executable in text and str(work.absolute() / ".submitit") in text
    commands = [submitit.helpers.DelayedSubmission.load(
        work / ".submitit" / f"4242_{i}" / f"4242_{i}_submitted.pkl").function.run.command(work)
        for i in range(3)]
    for seed, command in enumerate(commands):
        assert command[1:] == ["-m", "lra.cli", "train", "--config",
                               "listops:model=softmax,size=smoke", f"--config.seed={seed}",
                               "--workdir", str(work / f"listops/smoke/softmax/seed{seed}"),
                               "--config.train.steps=7"]

    # a rerun submits only what is neither done nor running
    write_json(work / "listops/smoke/softmax/seed0/summary.json", {"status": "ok"})
    write_json(work / "listops/smoke/softmax/seed1/.lock",
               {"host": "node7", "pid": 1, "since": "2026-01-01T00:00:00Z"})
    script.unlink()
    assert cli.main(args) == 0
    text = script.read_text()  # one run left: submitit makes it a plain job
    assert "--array" not in text and "#SBATCH --partition=gpu\n" in text
    assert submitit.helpers.DelayedSubmission.load(
        work / ".submitit" / "4242" / "4242_submitted.pkl").function.run.seed == 2


def test_status_lists_done_running_failed_missing(tmp_path, capsys):
    names = [f"listops/smoke/softmax/seed{k}" for k in range(6)]
    write_json(tmp_path / "sweep.json", {"runs": names[:5]})
    write_json(tmp_path / names[0] / "summary.json", {"status": "ok"})
    write_json(tmp_path / names[1] / "summary.json", {"status": "failed", "error": "boom"})
    write_json(tmp_path / names[2] / ".lock",
               {"host": socket.gethostname(), "pid": os.getpid(), "since": "now"})
    (tmp_path / names[3] / "checkpoints" / "latest" / "60").mkdir(parents=True)
    (tmp_path / names[3] / "config.json").write_text("{}")
    # names[4]: nothing yet; names[5]: not in sweep.json, found by its summary (a reseed attempt)
    write_json(tmp_path / names[5] / "summary.json", {"status": "stuck"})
    (tmp_path / ".submitit" / "1_0").mkdir(parents=True)
    (tmp_path / ".submitit" / "1_0" / "config.json").write_text("{}")  # not a run
    rows = sweep.listing(tmp_path)
    assert [(n, s) for n, s, _ in rows] == list(zip(names, [
        "done", "failed", "running", "missing", "missing", "done"], strict=True))
    assert rows[1][2] == "failed: boom" and rows[3][2] == "checkpoint at step 60"
    assert str(os.getpid()) in rows[2][2]
    assert cli.main(["sweep", "--status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 done, 1 running, 1 failed, 2 missing" in out


def test_missing_submitit_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    work = tmp_path / "S"
    assert cli.main(["sweep", "--launcher", "slurm", "--sizes", "smoke", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("lra: error: --launcher slurm needs submitit: "
                   "pip install 'lra-harness[cluster]'")
    assert not work.exists()


@pytest.mark.parametrize("args, message", [
    (["--slurm.partition", "gpu"], "--slurm.partition needs --launcher slurm"),
    (["--launcher", "slurm", "--slurm.time", "1:30"], "--slurm.time '1:30'"),
    (["--launcher", "slurm", "--slurm.additional", "qos"], "--slurm.additional 'qos'"),
    (["--launcher", "slurm", "--reseed-stuck", "2"], "--reseed-stuck"),
])
def test_bad_launcher_flags_are_one_line_errors(tmp_path, monkeypatch, capsys, args, message):
    fake_slurm(tmp_path, monkeypatch)
    assert cli.main(["sweep", "--sizes", "smoke", "--workdir", str(tmp_path / "S"), *args]) == 2
    assert message in capsys.readouterr().err


def test_slurm_time_formats():
    assert [launch.minutes(t) for t in ("90", "01:30:00", "1-00:00:30", "0:00:10")] == [90, 90, 1441, 1]
    with pytest.raises(LRAError):
        launch.minutes("soon")
