"""`lra report`: the papers' tables from run trees and bench.json files.

Tables, each written as markdown, CSV and LaTeX:

- accuracy, one per model size: LRA Table 1 (Tay et al. 2020): rows are models (the
  summary's `model`: a method, or a named variant of one such as `adamra-rand`), columns
  ListOps, Text, Retrieval, Image, Pathfinder, Path-X and Avg; a cell is the mean ± sample
  standard deviation (ddof=1) over seeds of the test accuracy (%) of the finished runs
  (status ok or stuck), learned or not, and, when any summary records learning, `(k/n)`:
  k of those n seeds learned; a cell with a seed that did not learn is marked † and gives
  the mean over its learned seeds (see `seed_rule`). Reseed attempts (`lra sweep
  --reseed-stuck`) are seeds of their cell. Avg is the mean over the tasks of the table
  other than Path-X (LRA Table 1 averages the five tasks without Path-X); it is given only
  for a model with all of them. Path-X reads FAIL, as in LRA, when no run finished or the
  mean is not above chance (50%) by more than CHANCE_MARGIN.
- speed and memory, one per bench group (task, size, batch, device): AdaMRA Table 2
  (Zhang et al. 2021) and LRA Table 2: at each length, training examples/s and peak
  memory as ratios to softmax; the softmax row holds the absolute values.
- expected curves, one per model size: per task x model, the validation accuracy (%) at 10,
  25, 50 and 100% of train.steps (the first evaluation at or after each milestone step) and
  the seconds per training step, mean ± std over seeds, with the device that ran them.
- SMAT (AdaMRA Eq. 10): with S, M and A the examples/s, the peak memory and the LRA
  average accuracy min-max normalised across the models of the table,
  SMAT = S + (1 - M) + A. Speed and memory are taken at the longest length at which every
  model of the table ran; when all models tie on a quantity, its normalised value is 0.5.

Mixed configurations: runs are separated by `size` into separate tables; two runs of the
same task x model x size whose configs differ in anything but the seed (and wandb or
device settings) are refused with an LRAError naming both run directories. Missing
cells (a task x model with no finished run), unfinished or failed runs and unreadable
files are listed, never fatal.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import shlex
import statistics
from collections import defaultdict
from pathlib import Path

from lra import data
from lra.atomic import atomic_path
from lra.errors import LRAError
from lra.training.workdir import flatten, learned, read_json, read_metrics

log = logging.getLogger(__name__)

CHANCE = 0.5  # Path-X is binary
CHANCE_MARGIN = 0.01  # Path-X below 51% mean test accuracy is FAIL
LEARNED_MARGIN = 0.01  # a summary without `learned`: best_val_acc this close to chance is not
COUNTED = ("ok", "stuck")  # the statuses whose runs count in a cell
IGNORED_CONFIG = ("seed", "wandb.", "distributed", "train.num_devices", "model.name")
MIB = 2**20
MILESTONES = (0.1, 0.25, 0.5, 1.0)  # fractions of train.steps in the expected-curves table


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.1f}" if nbytes < 100 * MIB else f"{nbytes / MIB:.0f}"


@dataclasses.dataclass
class Run:
    path: Path
    summary: dict
    config: dict  # flattened config.json; empty when the run has none

    @property
    def key(self) -> tuple[str, str, str]:
        s = self.summary
        return s.get("size", "?"), s.get("task", "?"), s.get("model", "?")

    @property
    def accuracy(self) -> float | None:
        """The test accuracy this run adds to its cell: a finished run's test_acc, or for a
        stuck run that has none, its chance_accuracy (what a model at chance scores)."""
        s = self.summary
        if s.get("status") not in COUNTED:
            return None
        value = s.get("test_acc")
        if value is None and s.get("status") == "stuck":
            value = s.get("chance_accuracy")
        return None if value is None else float(value)

    @property
    def learned(self) -> bool:
        """The summary's `learned`; for one written before it existed: not stuck and best_val_acc
        more than LEARNED_MARGIN above chance_accuracy, or either of them missing."""
        s = self.summary
        if "learned" in s:
            return bool(s["learned"])
        best, chance = s.get("best_val_acc"), s.get("chance_accuracy")
        return s.get("status") != "stuck" and (best is None or chance is None
                                               or learned(best, chance, LEARNED_MARGIN)["learned"])


@dataclasses.dataclass
class Table:
    name: str  # file stem
    title: str
    header: list[str]
    rows: list[list[str]]
    records: list[dict]  # the CSV: one dict of raw values per row
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class BenchGroup:
    task: str
    size: str
    batch: int
    device: str
    rows: dict[tuple[str, int], dict]  # (model, length) -> result row
    sources: list[str]

    @property
    def name(self) -> str:
        return f"{self.task}_{self.size}_b{self.batch}"

    @property
    def models(self) -> list[str]:
        return _ordered({m for m, _ in self.rows})

    @property
    def lengths(self) -> list[int]:
        return sorted({n for _, n in self.rows})


@dataclasses.dataclass
class Report:
    runs: list[Run]
    groups: list[BenchGroup]
    tables: list[Table]
    problems: list[str]
    smat: dict[str, list[dict]]  # table name -> SMAT rows (for the bubble chart)


def _ordered(models) -> list[str]:
    return sorted(models, key=lambda m: (m != "softmax", m))


# ---------------------------------------------------------------- reading

def files_below(root: Path, name: str) -> list[Path]:
    """The files called `name` under `root`, outside hidden folders (an atomic write under
    way, lra/atomic.py), sorted."""
    return [p for p in sorted(root.rglob(name))
            if not any(part.startswith(".") for part in p.relative_to(root).parts)]


def collect(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Every run (a folder with summary.json) under `paths`, and the problems met."""
    runs, problems = [], []
    for root in map(Path, paths):
        if not root.exists():
            raise LRAError(f"{root}: no such run directory; pass a `lra sweep --workdir` or "
                           "`lra train --workdir` folder")
        found = sorted({p.parent for name in ("summary.json", "config.json")
                        for p in files_below(root, name)})
        if not found:
            problems.append(f"{root}: no runs found (no summary.json below it)")
        for folder in found:
            if not (folder / "summary.json").exists():
                problems.append(f"{folder}: no summary.json (still running or killed; "
                                "rerun its command to resume)")
                continue
            try:
                summary = read_json(folder / "summary.json")
                cfg = folder / "config.json"
                config = flatten(read_json(cfg)) if cfg.exists() else {}
            except LRAError as e:
                problems.append(str(e))
                continue
            runs.append(Run(folder, summary, config))
    return runs, problems


def check_configs(runs: list[Run]) -> None:
    """Refuse two runs of one task x model x size whose configs differ beyond the seed."""
    first: dict[tuple, Run] = {}
    for run in runs:
        if not run.config:
            continue
        other = first.setdefault(run.key, run)
        keys = sorted(k for k in run.config.keys() | other.config.keys()
                      if not k.startswith(IGNORED_CONFIG)
                      and run.config.get(k) != other.config.get(k))
        if keys:
            k = keys[0]
            raise LRAError(
                f"{other.path} and {run.path} are both {'/'.join(run.key)} but their configs "
                f"differ in {k} ({other.config.get(k)!r} vs {run.config.get(k)!r}); "
                "report them in separate `lra report` calls")


def load_bench(paths: list[str | Path]) -> list[BenchGroup]:
    """bench.json files grouped by (task, size, batch, device)."""
    groups: dict[tuple, BenchGroup] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise LRAError(f"--bench {path}: no such file; write one with `lra bench --out`")
        data = read_json(path)
        try:
            key = (data["task"], data["size"], int(data["batch"]), data.get("device", "?"))
            results = data["results"]
        except (KeyError, TypeError, ValueError):
            raise LRAError(f"{path}: not a bench.json (needs task, size, batch and results); "
                           "write one with `lra bench`") from None
        group = groups.setdefault(key, BenchGroup(*key, rows={}, sources=[]))
        group.sources.append(str(path))
        for row in results:
            at = (row["model"], int(row["length"]))
            if at in group.rows:
                raise LRAError(f"{path}: {at[0]} at length {at[1]} is also in "
                               f"{', '.join(group.sources[:-1])}; pass one of the two")
            group.rows[at] = row
    return list(groups.values())


# ---------------------------------------------------------------- accuracy

def cells(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """(task, model) -> its finished runs (status ok or stuck, with an accuracy)."""
    out = defaultdict(list)
    for run in runs:
        if run.accuracy is not None:
            out[run.key[1:]].append(run)
    return out


def scores(runs: list[Run]) -> dict[tuple[str, str], list[float]]:
    """(task, model) -> test accuracies (fractions) of all its finished seeds, learned or not:
    the numbers of the table, its averages and SMAT."""
    return defaultdict(list, {k: [r.accuracy for r in v] for k, v in cells(runs).items()})


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def task_columns() -> dict[str, str]:
    """Task name -> column header, in table order (the task registry)."""
    return {t: data.info(t).column for t in data.names()}


def averaged(tasks) -> list[str]:
    """Those of `tasks` that count in the LRA average (not Path-X)."""
    return [t for t in tasks if data.info(t).in_average]


def pathx_failed(values: list[float]) -> bool:
    return not values or statistics.fmean(values) <= CHANCE + CHANCE_MARGIN


def averages(runs: list[Run]) -> tuple[dict[str, float], list[str]]:
    """Each model's LRA average (fraction) over the table's tasks other than Path-X."""
    acc = scores(runs)
    tasks = averaged(t for t in task_columns() if any(r.key[1] == t for r in runs))
    models = _ordered({r.key[2] for r in runs})
    avg = {m: statistics.fmean(statistics.fmean(acc[(t, m)]) for t in tasks)
           for m in models if tasks and all(acc.get((t, m)) for t in tasks)}
    return avg, tasks


def common_averages(runs: list[Run], models: list[str]) -> tuple[dict[str, float], list[str]]:
    """The mean accuracy of those of `models` with runs over the tasks (no Path-X) that all
    of them finished: SMAT's A when no two models have every task of the table."""
    acc = scores(runs)
    models = [m for m in models if any(acc.get((t, m)) for t in task_columns())]
    tasks = averaged(t for t in task_columns() if models and all(acc.get((t, m)) for m in models))
    avg = {m: statistics.fmean(statistics.fmean(acc[(t, m)]) for t in tasks)
           for m in models} if tasks else {}
    return avg, tasks


def seed_note(cell: list[Run]) -> str:
    """' (k/n)', or ' † (k/n learned: mean of the learned)' when a seed did not learn, and the
    number of reseed attempts among the n."""
    good = [r.accuracy for r in cell if r.learned]
    reseeds = sum("reseed_of" in r.summary for r in cell)
    text = f"{len(good)}/{len(cell)}"
    if len(good) < len(cell):
        text += f" learned: {100 * statistics.fmean(good):.2f}" if good else " learned"
    if reseeds:
        text += f"; {reseeds} reseed{'s' * (reseeds > 1)}"
    return (" †" if len(good) < len(cell) else "") + f" ({text})"


def seed_rule() -> list[str]:
    """The caption lines that say how seeds are counted."""
    return ["Seeds: every finished seed (status ok or stuck) counts in its cell's mean ± std, "
            "learned or not, and so in Avg and SMAT; a stuck run without a test accuracy "
            "scores its chance accuracy (majority class). Reseed attempts (lra sweep "
            "--reseed-stuck) are seeds of their cell, never dropped; '1 reseed' counts them.",
            "(k/n): k of the n seeds learned; † marks a cell with a seed that did not learn and "
            "gives the mean over the learned ones. A seed learned unless its summary says "
            "learned false or status stuck; a summary without `learned` (written before it "
            "existed) learned unless its best_val_acc is within "
            f"{100 * LEARNED_MARGIN:.0f} point of its chance_accuracy, and learned when it "
            "has no chance_accuracy either; counts are shown once any summary of the table "
            "records `learned` or a seed did not learn."]


def accuracy_table(runs: list[Run], size: str) -> Table:
    runs_of = cells(runs)
    avg, avg_tasks = averages(runs)
    columns = task_columns()
    counted = any("learned" in r.summary or not r.learned for r in runs)
    header = ["Model", *columns.values(), "Avg"]
    rows, records = [], []
    for model in _ordered({r.key[2] for r in runs}):
        row, record = [model], {"model": model}
        for task in columns:
            cell = runs_of.get((task, model), [])
            values = [r.accuracy for r in cell]
            good = [r.accuracy for r in cell if r.learned]
            mean, std = mean_std(values) if values else (None, None)
            tried = any(r.key[1:] == (task, model) for r in runs)
            if task == "pathx" and tried and pathx_failed(values):
                text = "FAIL"
            elif values:
                text = (f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1
                        else f"{100 * mean:.2f}")
            else:
                text = "–"
            row.append(text + (seed_note(cell) if cell and counted else ""))
            record.update({f"{task}_mean": _pct(mean), f"{task}_std": _pct(std),
                           f"{task}_seeds": len(values), f"{task}_learned": len(good),
                           f"{task}_mean_learned": _pct(statistics.fmean(good) if good else None),
                           f"{task}_reseeds": sum("reseed_of" in r.summary for r in cell)})
        row.append(f"{100 * avg[model]:.2f}" if model in avg else "–")
        record["avg"] = _pct(avg.get(model))
        rows.append(row)
        records.append(record)
    notes = [f"Test accuracy (%), mean ± std over seeds (runs with status ok or stuck), "
             f"size={size}.",
             "Avg: mean over " + (", ".join(columns[t] for t in avg_tasks) or "no task")
             + " (Path-X excluded, as in LRA Table 1); – where a model lacks one of them.",
             "Path-X FAIL: no finished run or mean test accuracy <= "
             f"{100 * (CHANCE + CHANCE_MARGIN):.0f}%.", *seed_rule()]
    return Table(f"accuracy_{size}", f"LRA accuracy (size={size})", header, rows, records, notes)


def _pct(x):
    return None if x is None else round(100 * x, 4)


def missing(runs: list[Run], size: str) -> list[str]:
    """Task x model cells of this size with no finished run, and the runs that did not finish."""
    out = []
    columns = task_columns()
    tasks = [t for t in columns if any(r.key[1] == t for r in runs)]
    models = _ordered({r.key[2] for r in runs})
    acc = scores(runs)
    for task in tasks:
        for model in models:
            if not acc.get((task, model)):
                out.append(f"{task}/{size}/{model}: no finished run (status ok or stuck)")
    for run in runs:
        status = run.summary.get("status", "?")
        if status not in COUNTED:
            error = run.summary.get("error")
            out.append(f"{run.path}: status {status}" + (f" ({error})" if error else ""))
        elif not run.learned:
            reason = run.summary.get("learned_reason")
            out.append(f"{run.path}: did not learn (status {status}"
                       + (f": {reason})" if reason else ")"))
    absent = [columns[t] for t in columns if t not in tasks]
    if absent:
        out.append(f"size={size}: no runs for {', '.join(absent)}")
    return out


# ---------------------------------------------------------------- expected curves

def milestones(run: Run) -> list[dict | None]:
    """For each of MILESTONES, the first evaluation row (metrics.jsonl) at or after that
    fraction of the configured train.steps (the summary's steps without a config), or None."""
    total = run.config.get("train.steps") or run.summary.get("steps") or 0
    rows = [r for r in read_metrics(run.path) if r.get("val_accuracy") is not None]
    return [next((r for r in rows if r["step"] >= f * total), None) for f in MILESTONES]


def step_seconds(run: Run) -> float | None:
    """train_seconds / steps of the summary, else elapsed_seconds / step of the last evaluation."""
    s = run.summary
    if s.get("train_seconds") and s.get("steps"):
        return s["train_seconds"] / s["steps"]
    rows = [r for r in read_metrics(run.path) if r.get("elapsed_seconds") and r.get("step")]
    return rows[-1]["elapsed_seconds"] / rows[-1]["step"] if rows else None


def spread(values: list[float | None], n: int, fmt: str) -> str:
    """'mean ± std' of the values present, '(k/n)' when only k of the n seeds have one."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    text = format(mean, fmt) + (f" ± {std:{fmt}}" if len(values) > 1 else "")
    return text + (f" ({len(values)}/{n})" if len(values) < n else "")


def expected_table(runs: list[Run], size: str) -> Table:
    """Validation accuracy at MILESTONES and seconds per step, per task x model of one size."""
    runs_of = cells(runs)
    labels = [f"{100 * f:g}%" for f in MILESTONES]
    header = ["Task", "Model", "Seeds", *(f"val % at {m}" for m in labels), "s/step", "Device"]
    rows, records = [], []
    for task in task_columns():
        for model in _ordered({m for t, m in runs_of if t == task}):
            cell = runs_of[(task, model)]
            n, good = len(cell), sum(r.learned for r in cell)
            picked = [milestones(r) for r in cell]
            seconds = [step_seconds(r) for r in cell]
            devices = ", ".join(sorted({str(r.summary.get("device", "?")) for r in cell}))
            row = [task, model, str(n) if good == n else f"{n} ({good} learned)"]
            record = {"task": task, "model": model, "seeds": n, "learned": good}
            for i, label in enumerate(labels):
                at = [p[i] for p in picked]
                accs = [None if r is None else 100 * r["val_accuracy"] for r in at]
                steps = sorted({r["step"] for r in at if r is not None})
                row.append(spread(accs, n, ".2f") + (f" @{'/'.join(map(str, steps))}" if steps
                                                    else ""))
                present = [a for a in accs if a is not None]
                mean, std = mean_std(present) if present else (None, None)
                key = f"val_{label[:-1]}"
                record.update({f"{key}_step": steps[-1] if steps else None,
                               f"{key}_mean": None if mean is None else round(mean, 4),
                               f"{key}_std": None if std is None else round(std, 4),
                               f"{key}_seeds": len(present)})
            row += [spread(seconds, n, ".3g"), devices]
            present = [s for s in seconds if s is not None]
            record.update(step_seconds=round(statistics.fmean(present), 6) if present else None,
                          device=devices)
            rows.append(row)
            records.append(record)
    notes = [f"Validation accuracy (%) of the runs of size={size} with status ok or stuck, mean ± "
             "std over seeds, at 10, 25, 50 and 100% of train.steps: the first evaluation at or "
             "after that step (@ gives its step; evaluations come every train.eval_every steps); "
             "n/a: no evaluation that late; (k/n): only k of the n seeds have one.",
             "s/step: train_seconds / steps of summary.json (else elapsed_seconds / step of the "
             "last evaluation), on the device that ran them; it scales with the machine."]
    return Table(f"expected_{size}", f"Expected curves (size={size})", header, rows, records, notes)


# ---------------------------------------------------------------- speed and memory

def _ok(row: dict | None) -> bool:
    return bool(row) and row.get("status") == "ok"


STATUS_CELLS = {"oom": "OOM", "failed": "FAIL", "timeout": "TIMEOUT"}


def speed_table(group: BenchGroup) -> Table:
    header = ["Model"] + [f"{h} {n}" for n in group.lengths for h in ("speed", "memory")]
    rows, records = [], []
    for model in group.models:
        cells = [model]
        for n in group.lengths:
            row, base = group.rows.get((model, n)), group.rows.get(("softmax", n))
            record = {"model": model, "length": n, "status": row["status"] if row else "missing"}
            if not _ok(row):
                cells += [STATUS_CELLS.get(record["status"], "–")] * 2
            else:
                eps, mem = row["examples_per_second"], row["peak_memory_bytes"]
                record.update(examples_per_second=eps, peak_memory_bytes=mem,
                              step_seconds=row["step_seconds"])
                if model == "softmax":
                    cells += [f"{eps:.1f} ex/s", f"{mib(mem)} MiB"]
                elif _ok(base):
                    speed = eps / base["examples_per_second"]
                    memory = mem / base["peak_memory_bytes"]
                    record.update(speed_ratio=round(speed, 4), memory_ratio=round(memory, 4))
                    cells += [f"{speed:.2f}×", f"{memory:.2f}×"]
                else:
                    cells += [f"{eps:.1f} ex/s", f"{mib(mem)} MiB"]
            records.append(record)
        rows.append(cells)
    method = sorted({r.get("memory_method") or "?" for r in group.rows.values() if _ok(r)})
    notes = [f"Training step of {group.task} at size={group.size}, batch {group.batch}, "
             f"on {group.device} ({', '.join(method) or 'no memory data'}).",
             "speed: examples/s as a ratio to softmax (higher is faster); memory: peak memory "
             "as a ratio to softmax (lower is smaller); the softmax row is absolute.",
             f"From {', '.join(group.sources)}."]
    gaps = [n for n in group.lengths if not _ok(group.rows.get(("softmax", n)))]
    if gaps:
        notes.append("No softmax result at length " + ", ".join(map(str, gaps))
                     + ": absolute values there.")
    return Table(f"speed_{group.name}", f"Speed and memory ({group.task}, size={group.size}, "
                 f"batch {group.batch})", header, rows, records, notes)


# ---------------------------------------------------------------- SMAT

def min_max(values: dict[str, float]) -> dict[str, float]:
    lo, hi = min(values.values()), max(values.values())
    return {k: 0.5 if hi == lo else (v - lo) / (hi - lo) for k, v in values.items()}


def smat_rows(avg: dict[str, float], group: BenchGroup) -> tuple[list[dict], int | None]:
    """AdaMRA Eq. 10 for the models with an LRA average and a bench result; (rows, length)."""
    models = [m for m in group.models if m in avg
              and any(_ok(group.rows.get((m, n))) for n in group.lengths)]
    common = [n for n in group.lengths if all(_ok(group.rows.get((m, n))) for m in models)]
    if not models or not common:
        return [], None
    length = max(common)
    speed = {m: group.rows[(m, length)]["examples_per_second"] for m in models}
    memory = {m: group.rows[(m, length)]["peak_memory_bytes"] for m in models}
    s, mem, a = min_max(speed), min_max(memory), min_max({m: avg[m] for m in models})
    rows = [{"model": m, "examples_per_second": speed[m], "peak_memory_bytes": memory[m],
             "avg_accuracy": round(100 * avg[m], 4), "S": round(s[m], 4), "M": round(mem[m], 4),
             "A": round(a[m], 4), "SMAT": round(s[m] + (1 - mem[m]) + a[m], 4)} for m in models]
    return sorted(rows, key=lambda r: -r["SMAT"]), length


def smat_table(name: str, avg: dict[str, float], acc_size: str, group: BenchGroup,
               tasks: list[str]) -> tuple[Table, list[dict]]:
    rows, length = smat_rows(avg, group)
    header = ["Model", "examples/s", "peak MiB", "LRA avg %", "S", "M", "A", "SMAT"]
    cells = [[r["model"], f"{r['examples_per_second']:.1f}", mib(r["peak_memory_bytes"]),
              f"{r['avg_accuracy']:.2f}", f"{r['S']:.3f}", f"{r['M']:.3f}", f"{r['A']:.3f}",
              f"{r['SMAT']:.3f}"] for r in rows]
    left_out = [m for m in group.models if m not in {r["model"] for r in rows}]
    notes = ["SMAT = S + (1 - M) + A (AdaMRA, Zhang et al. 2021, Eq. 10): examples/s S, peak "
             "memory M and LRA average accuracy A, each min-max normalised across these models.",
             f"Speed and memory: {group.task}, size={group.size}, batch {group.batch}, "
             f"length {length}; accuracy: size={acc_size}, mean over "
             f"{', '.join(data.info(t).column for t in tasks)}. Accuracies are the accuracy "
             "table's means, over every finished seed, learned or not."]
    if left_out:
        notes.append(f"Left out (no LRA average or no bench result): {', '.join(left_out)}.")
    table = Table(name, f"SMAT (accuracy size={acc_size}, "
                  f"{group.task} length {length})", header, cells, rows, notes)
    return table, rows


# ---------------------------------------------------------------- build and write

def build(run_paths: list[str | Path], bench_paths: list[str | Path]) -> Report:
    runs, problems = collect(run_paths)
    check_configs(runs)
    groups = load_bench(bench_paths)
    by_size = defaultdict(list)
    for run in runs:
        by_size[run.key[0]].append(run)
    tables, smat = [], {}
    for size in sorted(by_size):
        tables.append(accuracy_table(by_size[size], size))
        tables.append(expected_table(by_size[size], size))
        problems += missing(by_size[size], size)
    for group in groups:
        speed = speed_table(group)
        if any(t.name == speed.name for t in tables):  # same task/size/batch on another device
            speed.name += f"_{sum(t.name.startswith(speed.name) for t in tables)}"
        tables.append(speed)
        acc_size = group.size if group.size in by_size else (
            next(iter(by_size)) if len(by_size) == 1 else None)
        if acc_size is None:
            if by_size:
                problems.append(f"SMAT for {speed.name}: runs of several sizes "
                                f"({', '.join(sorted(by_size))}) and none is size={group.size}")
            continue
        avg, tasks = averages(by_size[acc_size])
        if sum(m in avg for m in group.models) < 2:  # compare on the tasks all of them ran
            avg, tasks = common_averages(by_size[acc_size], group.models)
        table, rows = smat_table(f"smat_{acc_size}_{speed.name[len('speed_'):]}", avg,
                                 acc_size, group, tasks)
        if rows:
            tables.append(table)
            smat[table.name] = rows
        else:
            problems.append(f"SMAT for {speed.name}: no model has both an LRA average "
                            f"(size={acc_size}) and a bench result at a common length")
    return Report(runs, groups, tables, problems, smat)


def markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.header) + " |",
             "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines + [""] + table.notes) + "\n"


def latex(table: Table) -> str:
    def tex(text: str) -> str:
        for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
                     ("#", "\\#"), ("±", "$\\pm$"), ("×", "$\\times$"), ("–", "--"),
                     ("†", "$\\dagger$")):
            text = text.replace(a, b)
        return text

    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{tex(table.title)}}}",
             "\\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}", "\\toprule",
             " & ".join(tex(h) for h in table.header) + " \\\\", "\\midrule"]
    lines += [" & ".join(tex(c) for c in row) + " \\\\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def csv_text(table: Table) -> str:
    fields = list(dict.fromkeys(k for r in table.records for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table.records)
    return out.getvalue()


def write_text(path: Path, text: str) -> Path:
    """Write atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write(report: Report, out: str | Path, plots: bool = True,
          command: str | None = None) -> list[Path]:
    """Every table as .md, .csv and .tex, the plots, and report.md with all of it (and the
    command that made it)."""
    out = Path(out)
    written, sections = [], []
    for table in report.tables:
        written.append(write_text(out / f"{table.name}.md", markdown(table)))
        written.append(write_text(out / f"{table.name}.csv", csv_text(table)))
        written.append(write_text(out / f"{table.name}.tex", latex(table)))
        sections.append(markdown(table))
    figures = []
    if plots:
        from lra.experiments import plots as figs

        if figs.available():
            figures = figs.report_figures(report, out)
        else:
            report.problems.append("plots skipped: matplotlib is not installed "
                                   "(pip install 'lra-harness[plot]')")
    written += figures
    body = ["# LRA report", ""] + ([f"Made by `{command}`.", ""] if command else []) + sections
    if figures:
        body += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    if report.problems:
        body += ["## Missing, unfinished or failed", ""]
        body += [f"- {p}" for p in report.problems] + [""]
    written.append(write_text(out / "report.md", "\n".join(body)))
    return written


def expected_page(report: Report, command: str) -> str:
    """docs/expected.md: the expected-curves tables with how they were made and how to read them."""
    tables = [markdown(t).replace("### ", "## ", 1) for t in report.tables
              if t.name.startswith("expected_")]
    intro = (f"Made by `{command}`. For each task and attention method (per model size): the "
             "validation accuracy the runs reached at 10, 25, 50 and 100% of their configured "
             "train.steps, mean ± std over the n seeds, and the seconds per training step on the "
             "device that ran them. To check a run of your own with the same config, compare the "
             "val_accuracy of its metrics.jsonl (one row per evaluation) at the step after @ "
             "with the cell: a run far below it at the same step is off track. Seconds per step "
             "depend on the machine (and on what else runs on it); use them for the order of "
             "magnitude, and your own first steps for the rest.")
    return "\n".join(["# Expected curves", "", intro, "", *tables])


def main(runs: list[str], bench: list[str], out: str, plots: bool = True,
         expected: str | None = None) -> tuple[Report, list[Path]]:
    """`lra report`: build and write the tables (and with `expected`, that markdown page);
    returns the report and the files written."""
    command = shlex.join(["lra", "report", *runs, *(a for b in bench for a in ("--bench", b)),
                         "--out", str(out)] + ([] if plots else ["--no-plots"])
                         + (["--expected", str(expected)] if expected else []))
    report = build(runs, bench)
    written = write(report, out, plots, command)
    if expected:
        written.append(write_text(Path(expected), expected_page(report, command)))
    return report, written
