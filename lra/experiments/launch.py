"""A sweep on SLURM: one submitit job array, one array task per run.

Each array task runs the run's own `lra train` command (`Run.command`) as a child process,
as the local sweep does, so its output, summary and exact resume are the same. Preemption:
SLURM sends the job's preemption signal (submitit's `--signal=USR2@90`, before the time
limit) to the submitit worker, which calls `Task.checkpoint`: it forwards SIGTERM to the
child, which saves a checkpoint and exits 143; the worker then requeues the array task,
which reruns the same command and resumes from that checkpoint. The child ignores SIGUSR1
and SIGUSR2 itself, so only the worker's SIGTERM stops it. A SIGTERM from SLURM reaches
the child directly, with the same effect. Submitting the same sweep again submits only
the runs that are neither finished nor running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from lra.errors import LRAError
from lra.experiments import sweep

CHILD_IGNORES = (signal.SIGUSR1, signal.SIGUSR2)  # preemption signals meant for the worker


def require():
    """The submitit module, or an LRAError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise LRAError("--launcher slurm needs submitit: pip install 'lra-harness[cluster]'") from None
    return submitit


def _ignore_preemption_signals() -> None:
    for sig in CHILD_IGNORES:
        signal.signal(sig, signal.SIG_IGN)


class Task:
    """One array task: train `run` in its own process; checkpointable by submitit."""

    def __init__(self, run: sweep.Run, workdir: Path):
        self.run, self.workdir, self.child = run, Path(workdir), None

    def __getstate__(self):
        return {"run": self.run, "workdir": self.workdir, "child": None}

    def __call__(self) -> str:
        return sweep.launch(self.run, self.workdir, started=self._started,
                            preexec_fn=_ignore_preemption_signals)

    def _started(self, proc: subprocess.Popen) -> None:
        self.child = proc

    def checkpoint(self):
        """Called by submitit's signal handler: stop the child with SIGTERM (it saves a
        checkpoint), wait for it to exit, and return this task for the requeued job."""
        child = self.child
        if child is not None and child.returncode is None:
            child.send_signal(signal.SIGTERM)
            # wait without reaping: the interrupted Popen.wait in __call__ still owns the child
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        return require().helpers.DelayedSubmission(Task(self.run, self.workdir))


def minutes(text: str) -> int:
    """Minutes, HH:MM:SS or D-HH:MM:SS (as sbatch --time) -> whole minutes (at least 1)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)|(\d+)", text.strip())
    if not m:
        raise LRAError(f"--slurm.time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    if m.group(5):
        return max(int(m.group(5)), 1)
    days, hours, mins, secs = (int(g or 0) for g in m.groups()[:4])
    return max(days * 1440 + hours * 60 + mins + (secs > 0), 1)


def additional(items: list[str]) -> dict[str, str]:
    """['KEY=VALUE', ...] -> extra sbatch flags for submitit (`--KEY=VALUE` in the script)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise LRAError(f"--slurm.additional {item!r}: expected KEY=VALUE, e.g. qos=high "
                           "(an sbatch flag without its leading --)")
        out[key] = value
    return out


def slurm_executor(folder: Path, partition: str | None = None, gpus_per_task: int = 1,
                   time: str = "60", array_parallelism: int = 256, cpus_per_task: int | None = None,
                   extra: list[str] = ()):
    """A submitit SlurmExecutor for the sweep's array (one task, one GPU by default)."""
    if gpus_per_task < 0:
        raise LRAError(f"--slurm.gpus_per_task {gpus_per_task}: expected 0 or more")
    if array_parallelism < 1:
        raise LRAError(f"--slurm.array_parallelism {array_parallelism}: expected 1 or more")
    params = dict(time=minutes(time), array_parallelism=array_parallelism, ntasks_per_node=1,
                  job_name="lra-sweep", additional_parameters=additional(list(extra)))
    params.update({k: v for k, v in dict(partition=partition, cpus_per_task=cpus_per_task,
                                          gpus_per_task=gpus_per_task or None).items()
                   if v is not None})
    executor = require().SlurmExecutor(folder=str(folder))
    executor.update_parameters(**params)
    return executor


def submit(runs: list[sweep.Run], workdir: Path, executor) -> tuple[list, list[sweep.Run]]:
    """Submit every run that is neither finished nor running as one job array of `executor`;
    (submitit jobs, the runs they train)."""
    workdir = Path(workdir)
    sweep.record(workdir, runs)
    runs = sweep.todo(runs, workdir)
    if not runs:
        return [], []
    with executor.batch():
        jobs = [executor.submit(Task(run, workdir)) for run in runs]
    return jobs, runs
