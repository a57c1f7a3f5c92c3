"""Task x model x size x seed grids, one process per run, resumable and shardable.

Run directories are `<workdir>/<task>/<size>/<model>/seed<k>`, where a model is a method or
a named variant of one (configs/models.py VARIANTS, e.g. `adamra-rand`; a name with '/' is
refused: it would nest folders); each run's output goes
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

With `jobs` (`--jobs N`) N runs train at once, each process pinned to its own share of
this process's CPU cores: on a CPU machine, how a sweep uses every core. A SIGTERM to the
sweep reaches its running children (each saves a checkpoint and ends `terminated`) and no
further run starts (`not started`), and `execute` raises `Stopped`: rerunning the command
resumes them all. Only a sweep run from the main thread installs that handler. Every launch
adds its runs' names to `<workdir>/sweep.json`; `listing` (`lra sweep --status`)
reads it and the run folders. `lra.experiments.launch` runs the same commands on SLURM.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from lra import attention, data
from lra.errors import LRAError, is_oom
from lra.training import config
from lra.training.workdir import LOCK, holder, read_json, write_json

log = logging.getLogger(__name__)

RESEED = 1000  # attempt i of seed k trains with seed k + RESEED * i

FINISHED = ("ok", "diverged", "oom", "stuck")
TERMINATED = 143  # lra train's exit status after a SIGTERM checkpoint
MANIFEST = "sweep.json"  # the names of the runs every launch of this workdir asked for


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
        attention.names() if models == "all" else
        _names(models, [*attention.names(), *config.presets().VARIANTS], "model"), seed_list)]


def from_file(path: str, overrides: dict[str, str] | None = None) -> list[Run]:
    """The runs of a file's sweep(); `overrides` (the command line's --config.*) apply to
    every run, over the file's own."""
    module = config.load_file(Path(path))
    if not hasattr(module, "sweep"):
        raise LRAError(f"{path} defines no sweep() function")
    return [Run(r["task"], r["model"], r["size"], int(r.get("seed", 0)),
                tuple(sorted({**{k: str(v) for k, v in r.get("overrides", {}).items()},
                              **(overrides or {})}.items())))
            for r in module.sweep()]


def check(runs: Iterable[Run]) -> None:
    """Validate every run's config (all shards') before the first run starts."""
    for run in runs:
        if "/" in run.model:
            raise LRAError(f"model {run.model!r}: a sweep names run folders by model, so its "
                           "name may not contain '/'; use a variant without '/' (configs/models.py)")
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


class Stopped(Exception):
    """The sweep got SIGTERM: its running runs saved a checkpoint, the rest did not start."""

    def __init__(self, results: dict[str, str]):
        waiting = sum(state == "not started" for state in results.values())
        super().__init__(f"sweep stopped by SIGTERM ({len(results) - waiting} runs finished or "
                         f"saved, {waiting} not started); rerun the same command to resume")
        self.results = results


def core_groups(jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """This process's CPU cores split into `jobs` disjoint groups, one per concurrent run."""
    if cores is None:
        cores = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else list(range(os.cpu_count() or 1)))
    if not 1 <= jobs <= len(cores):
        raise LRAError(f"--jobs {jobs}: expected 1 to {len(cores)}, the CPU cores this process "
                       "may use (one run per core group)")
    return [cores[i::jobs] for i in range(jobs)]


def execute(runs: Iterable[Run], workdir: Path, report=lambda run, state: None,
            reseed: int = 0, jobs: int = 1) -> dict[str, str]:
    """Run each run in its own process, `jobs` at a time (each pinned to its own group of
    CPU cores); a crash or OOM is recorded and the sweep goes on. Then rerun each run that
    did not learn with a fresh seed, up to `reseed` attempts."""
    runs = list(runs)
    groups = core_groups(jobs)
    record(workdir, runs)
    free: queue.Queue = queue.Queue()
    for group in groups:
        free.put(group)
    children: list[subprocess.Popen] = []
    stop = threading.Event()

    def terminate(signum=None, frame=None) -> None:  # SIGTERM: stop the children, start no more
        stop.set()
        for child in list(children):
            child.send_signal(signal.SIGTERM)  # a no-op once it has been waited for

    def started(proc: subprocess.Popen, group: list[int]) -> None:
        children.append(proc)
        if stop.is_set():  # SIGTERM came while it was starting
            proc.send_signal(signal.SIGTERM)
        elif jobs > 1 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, group)

    def pinned(run: Run) -> str:  # one run on a free core group (all cores when jobs == 1)
        group = free.get()
        try:
            return execute_one(run, workdir, report, lambda proc: started(proc, group), stop)
        finally:
            free.put(group)

    def reseeded(run: Run) -> dict[str, str]:
        out, last = {}, run
        for attempt in range(1, reseed + 1):
            if stop.is_set() or not not_learned(workdir, last):
                break
            last = dataclasses.replace(run, attempt=attempt)
            out[last.name] = pinned(last)
        return out

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            results = dict(zip([run.name for run in runs], pool.map(pinned, runs), strict=True))
            for attempts in pool.map(reseeded, runs):
                results.update(attempts)
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if stop.is_set():
        raise Stopped(results)
    return results


def execute_one(run: Run, workdir: Path, report, started=lambda proc: None,
                stop: threading.Event | None = None) -> str:
    """Run `run` in its own process, or skip it if finished (or "not started" once `stop` is
    set); its status. A reseed attempt's summary gets `reseed_of` and `attempt` (also when
    an earlier sweep was killed first)."""
    state, lock = status(workdir, run), holder(workdir / run.name)
    if state in FINISHED:
        report(run, f"skip ({state})")
    elif stop is not None and stop.is_set():
        report(run, "not started")
        return "not started"
    elif lock is not None:
        state = f"held by pid {lock['pid']}"
        report(run, state)
        return state
    else:
        report(run, "start")
        state = launch(run, workdir, started=started)
        report(run, state)
    done = summary(workdir, run)
    if run.attempt and done is not None and "reseed_of" not in done:
        done.update(reseed_of=dataclasses.replace(run, attempt=0).name, attempt=run.attempt)
        write_json(workdir / run.name / "summary.json", done)
    return state


def launch(run: Run, workdir: Path, started=lambda proc: None, **popen) -> str:
    """One training process, its output in train.log; a run that dies before writing a summary
    gets one (oom or failed, with the log's last line), except one stopped by SIGTERM (exit
    143 after saving its checkpoint, or killed before its handler was set): "terminated",
    resumed by the next launch. `started` gets the process once it runs; `popen` goes to
    subprocess.Popen."""
    log_path = workdir / run.name / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        proc = subprocess.Popen(run.command(workdir), stdout=log, stderr=subprocess.STDOUT, **popen)
        started(proc)
        proc.wait()
    lock = holder(workdir / run.name)
    if proc.returncode == 2 and lock is not None:  # taken by another process since we looked
        return f"held by pid {lock['pid']}"
    state = status(workdir, run)
    if state is None and proc.returncode in (TERMINATED, -signal.SIGTERM):
        return "terminated"
    if state is None:  # died before writing a summary (e.g. killed by the OOM killer)
        last = (log_path.read_text(errors="replace").strip().splitlines() or [""])[-1]
        state = "oom" if is_oom(last, proc.returncode) else "failed"
        write_json(workdir / run.name / "summary.json", {
            "task": run.task, "model": run.model, "size": run.size, "seed": run.train_seed,
            "status": state, "error": last[:500], "log": str(log_path)})
    return state


def record(workdir: Path, runs: Iterable[Run]) -> None:
    """Add the runs' names to `<workdir>/sweep.json`, so that --status can name the runs
    that have not started yet."""
    path = workdir / MANIFEST
    known = set(read_json(path)["runs"]) if path.exists() else set()
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"runs": sorted(known | {run.name for run in runs})})


def todo(runs: Iterable[Run], workdir: Path) -> list[Run]:
    """The runs that are neither finished nor held by a live process (what a launcher starts)."""
    return [run for run in runs
            if status(workdir, run) not in FINISHED and holder(workdir / run.name) is None]


def listing(workdir: Path) -> list[tuple[str, str, str]]:
    """(run, state, detail) of every run in the workdir's sweep.json or found in its folders,
    from the run folders alone: running (a live process or another host holds its .lock),
    done (summary status ok, diverged, oom or stuck), failed (any other summary), or missing
    (nothing yet, or a checkpoint without a summary: stopped, resumed by the next launch)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise LRAError(f"--status {workdir}: no such directory")
    manifest = workdir / MANIFEST
    names = set(read_json(manifest)["runs"]) if manifest.exists() else set()
    for marker in ("summary.json", "config.json", LOCK):
        names |= {p.parent.relative_to(workdir).as_posix() for p in workdir.rglob(marker)
                  if not p.relative_to(workdir).parts[0].startswith(".")}
    rows = []
    for name in sorted(names):
        folder = workdir / name
        lock, path = holder(folder), folder / "summary.json"
        done = read_json(path) if path.exists() else None
        if lock is not None:
            rows.append((name, "running", f"pid {lock['pid']} on {lock['host']} since {lock['since']}"))
        elif done is not None:
            state = done.get("status")
            rows.append((name, "done", state) if state in FINISHED
                        else (name, "failed", f"{state}: {done.get('error', '')}"[:200]))
        else:
            steps = [int(p.name) for p in (folder / "checkpoints" / "latest").glob("*")
                     if p.name.isdigit()]
            rows.append((name, "missing", f"checkpoint at step {max(steps)}" if steps else ""))
    return rows


def run(tasks: str, models: str, sizes: str, seeds: str, workdir: str | Path,
        overrides: dict[str, str] | None = None, reseed_stuck: int = 0,
        jobs: int = 1) -> dict[str, str]:
    """Validate the grid, then run (or skip, if finished) each run, `jobs` at a time, and
    reseed the runs that did not learn up to `reseed_stuck` times; {run name: status}."""
    runs = grid(tasks, models, sizes, seeds, overrides)
    check(runs)
    return execute(runs, Path(workdir), reseed=reseed_stuck, jobs=jobs)
