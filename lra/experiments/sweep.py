"""Task x model x size x seed grids, one process per run, resumable and shardable.

Run directories are `<workdir>/<task>/<size>/<model>/seed<k>`; each run's output goes
to `train.log` there, and a run that dies early gets a summary naming its last line.
A rerun skips runs
whose summary says ok, diverged or oom, and resumes the others from their latest
checkpoint (the trainer does that). A config file may define the grid itself
through a `sweep()` function returning dicts with task, model, size, seed and
optional overrides.
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
from lra.training.workdir import read_json, write_json

log = logging.getLogger(__name__)

FINISHED = ("ok", "diverged", "oom")


@dataclasses.dataclass(frozen=True)
class Run:
    task: str
    model: str
    size: str
    seed: int
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.task}/{self.size}/{self.model}/seed{self.seed}"

    def command(self, workdir: Path) -> list[str]:
        args = [sys.executable, "-m", "lra.cli", "train",
                "--config", f"{self.task}:model={self.model},size={self.size}",
                f"--config.seed={self.seed}", "--workdir", str(workdir / self.name)]
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


def status(workdir: Path, run: Run) -> str | None:
    path = workdir / run.name / "summary.json"
    return read_json(path).get("status") if path.exists() else None


def execute(runs: Iterable[Run], workdir: Path, report=lambda run, state: None) -> dict[str, str]:
    """Run each run in its own process; a crash or OOM is recorded and the sweep goes on."""
    results = {}
    for run in runs:
        done = status(workdir, run)
        if done in FINISHED:
            report(run, f"skip ({done})")
            results[run.name] = done
            continue
        report(run, "start")
        log_path = workdir / run.name / "train.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            proc = subprocess.run(run.command(workdir), stdout=log,
                                  stderr=subprocess.STDOUT)
        state = status(workdir, run)
        if state is None:  # died before writing a summary (e.g. killed by the OOM killer)
            last = (log_path.read_text(errors="replace").strip().splitlines() or [""])[-1]
            state = "oom" if is_oom(last, proc.returncode) else "failed"
            write_json(workdir / run.name / "summary.json", {
                "task": run.task, "model": run.model, "size": run.size, "seed": run.seed,
                "status": state, "error": last[:500], "log": str(log_path)})
        results[run.name] = state
        report(run, state)
    return results


def run(tasks: str, models: str, sizes: str, seeds: str, workdir: str | Path,
        overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Validate the grid, then run (or skip, if finished) each run; {run name: status}."""
    runs = grid(tasks, models, sizes, seeds, overrides)
    check(runs)
    return execute(runs, Path(workdir))
