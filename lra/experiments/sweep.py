"""Task x model x size x seed grids, one process per run, resumable and shardable.

Run directories are `<workdir>/<task>/<size>/<model>/seed<k>`; each run's output goes
to `train.log` there, and a run that dies early gets a summary naming its last line.
A rerun skips runs
whose summary says ok, diverged or oom, and resumes the others from their latest
checkpoint (the trainer does that); a run whose workdir another live process holds is
skipped as `held by pid N`. A config file may define the grid itself
through a `sweep()` function returning dicts with task, model, size, seed and
optional overrides.

With `reseed` (`--reseed-stuck N`), after the grid each run that did not learn (status
stuck, or learned false) is rerun with a fresh seed, up to N attempts, until one learns:
attempt i of `seed<k>` is `seed<k>-retry<i>`, trained with seed k + RESEED * i, and its
summary gets `reseed_of` (the first run's name) and `attempt`. Every attempt stays in the
workdir (the report counts each as a seed of its cell); a rerun skips finished attempts.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from lra import attention, data
from lra.errors import LRAError, is_oom
from lra.training import config
from lra.training.workdir import holder, read_json, write_json

log = logging.getLogger(__name__)

RESEED = 1000  # attempt i of seed k trains with seed k + RESEED * i

FINISHED = ("ok", "diverged", "oom", "stuck")


@dataclasses.dataclass(frozen=True)
class Run:
    task: str
    model: str
    size: str
    seed: int
    overrides: tuple[tuple[str, str], ...] = ()
    attempt: int = 0  # reseed attempt; 0 is the grid's run

    @property
    def name(self) -> str:
        first = f"{self.task}/{self.size}/{self.model}/seed{self.seed}"
        return first + (f"-retry{self.attempt}" if self.attempt else "")

    @property
    def train_seed(self) -> int:
        return self.seed + RESEED * self.attempt

    def command(self, workdir: Path) -> list[str]:
        args = [sys.executable, "-m", "lra.cli", "train",
                "--config", f"{self.task}:model={self.model},size={self.size}",
                f"--config.seed={self.train_seed}", "--workdir", str(workdir / self.name)]
        return args + [f"--config.{k}={v}" for k, v in self.overrides]


def _names(text: str, valid: list[str], what: str) -> list[str]:
    items = valid if text == "all" else [x for x in text.split(",") if x]
    bad = [x for x in items if x not in valid]
    if bad or not items:
        raise LRAError(f"unknown {what} {bad[0] if bad else text!r}; valid: {', '.join(valid)}")
    return items


def grid(tasks: str, models: str, sizes: str, seeds: str,
         overrides: dict[str, str] | None = None) -> list[Run]:
    SIZES = config.sizes()
    try:
        seed_list = [int(s) for s in seeds.split(",") if s]
    except ValueError:
        raise LRAError(f"--seeds {seeds!r}: expected integers like 0,1,2") from None
    extra = tuple(sorted((overrides or {}).items()))
    return [Run(t, m, s, k, extra) for t, s, m, k in itertools.product(
        _names(tasks, data.names(), "task"), _names(sizes, list(SIZES), "size"),
        _names(models, attention.names(), "model"), seed_list)]


def from_file(path: str) -> list[Run]:
    module = config.load_file(Path(path))
    if not hasattr(module, "sweep"):
        raise LRAError(f"{path} defines no sweep() function")
    return [Run(r["task"], r["model"], r["size"], int(r.get("seed", 0)),
                tuple(sorted((k, str(v)) for k, v in r.get("overrides", {}).items())))
            for r in module.sweep()]


def check(runs: Iterable[Run]) -> None:
    """Validate every run's config (all shards') before the first run starts."""
    for run in runs:
        try:
            config.load(f"{run.task}:model={run.model},size={run.size}",
                        {"seed": str(run.seed), **dict(run.overrides)})
        except LRAError as e:
            raise LRAError(f"{run.name}: {e}") from None


def shard(runs: list[Run], spec: str | None) -> list[Run]:
    """'i/n' keeps runs i, i+n, i+2n, ... (0-based), for SLURM arrays or several machines."""
    if not spec:
        return runs
    try:
        i, n = (int(x) for x in spec.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise LRAError(f"--shard {spec!r}: expected i/n with 0 <= i < n") from None
    return runs[i::n]


def summary(workdir: Path, run: Run) -> dict | None:
    path = workdir / run.name / "summary.json"
    return read_json(path) if path.exists() else None


def status(workdir: Path, run: Run) -> str | None:
    return (summary(workdir, run) or {}).get("status")


def not_learned(workdir: Path, run: Run) -> bool:
    """The run finished without learning: status stuck, or learned false."""
    s = summary(workdir, run) or {}
    return s.get("status") == "stuck" or s.get("learned") is False


def execute(runs: Iterable[Run], workdir: Path, report=lambda run, state: None,
            reseed: int = 0) -> dict[str, str]:
    """Run each run in its own process; a crash or OOM is recorded and the sweep goes on.
    Then rerun each run that did not learn with a fresh seed, up to `reseed` attempts."""
    runs = list(runs)
    results = {run.name: execute_one(run, workdir, report) for run in runs}
    for run in runs:
        last = run
        for attempt in range(1, reseed + 1):
            if not not_learned(workdir, last):
                break
            last = dataclasses.replace(run, attempt=attempt)
            results[last.name] = execute_one(last, workdir, report)
    return results


def execute_one(run: Run, workdir: Path, report) -> str:
    """Run `run` in its own process, or skip it if finished; its status. A reseed attempt's
    summary gets `reseed_of` and `attempt` (also when an earlier sweep was killed first)."""
    state, lock = status(workdir, run), holder(workdir / run.name)
    if state in FINISHED:
        report(run, f"skip ({state})")
    elif lock is not None:
        state = f"held by pid {lock['pid']}"
        report(run, state)
        return state
    else:
        report(run, "start")
        state = launch(run, workdir)
        report(run, state)
    done = summary(workdir, run)
    if run.attempt and done is not None and "reseed_of" not in done:
        done.update(reseed_of=dataclasses.replace(run, attempt=0).name, attempt=run.attempt)
        write_json(workdir / run.name / "summary.json", done)
    return state


def launch(run: Run, workdir: Path) -> str:
    """One training process, its output in train.log; a run that dies before writing a summary
    gets one (oom or failed, with the log's last line)."""
    log_path = workdir / run.name / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        proc = subprocess.run(run.command(workdir), stdout=log, stderr=subprocess.STDOUT)
    lock = holder(workdir / run.name)
    if proc.returncode == 2 and lock is not None:  # taken by another process since we looked
        return f"held by pid {lock['pid']}"
    state = status(workdir, run)
    if state is None:  # died before writing a summary (e.g. killed by the OOM killer)
        last = (log_path.read_text(errors="replace").strip().splitlines() or [""])[-1]
        state = "oom" if is_oom(last, proc.returncode) else "failed"
        write_json(workdir / run.name / "summary.json", {
            "task": run.task, "model": run.model, "size": run.size, "seed": run.train_seed,
            "status": state, "error": last[:500], "log": str(log_path)})
    return state


def run(tasks: str, models: str, sizes: str, seeds: str, workdir: str | Path,
        overrides: dict[str, str] | None = None, reseed_stuck: int = 0) -> dict[str, str]:
    """Validate the grid, then run (or skip, if finished) each run, and reseed the runs that
    did not learn up to `reseed_stuck` times; {run name: status}."""
    runs = grid(tasks, models, sizes, seeds, overrides)
    check(runs)
    return execute(runs, Path(workdir), reseed=reseed_stuck)
