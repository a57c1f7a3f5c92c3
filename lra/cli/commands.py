"""What the CLI does, printed with rich: the one layer that prints (library modules return
data and log)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lra import attention, data
from lra.data import store
from lra.training import config

console = Console()


@contextlib.contextmanager
def progress_bar(label: str):
    """A rich bar fed by the trainer's progress callback (loss, accuracy, steps/s, and
    `stuck?` while the validation loss sits at chance)."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                   transient=False)
    def stats(m):
        return (f"loss {m['loss']:.3f}  acc {m['accuracy']:.3f}  {m['steps/s']:.1f} steps/s"
                + ("  stuck?" if m.get("stuck") else ""))

    if not console.is_terminal:  # logs and pipes: one plain line per log step
        yield lambda step, total, m: console.print(f"{label} {step}/{total}  {stats(m)}")
        return
    with bar:
        task = bar.add_task(label, total=None, stats="")
        yield lambda step, total, m: bar.update(task, completed=step, total=total, stats=stats(m))


def run_config(c, workdir: str | Path) -> dict:
    from lra.training import train as trainer

    if c.distributed:
        import jax

        jax.distributed.initialize()
    with progress_bar(f"{c.task}/{config.model_name(c)}") as update:
        return trainer.train(c, workdir, progress=update)


def train(spec: str, workdir: str, overrides: dict[str, str]) -> dict:
    c = config.load(spec, overrides)
    summary = run_config(c, workdir)
    console.print(summary_line(summary))
    return summary


def summary_line(s: dict) -> str:
    acc = "n/a" if s.get("test_acc") is None else f"{100 * s['test_acc']:.2f}%"
    return (f"{s['task']}/{s['model']} [{s['status']}] test acc {acc} "
            f"(best val step {s.get('best_step')}), {s.get('examples_per_second', 0):.0f} ex/s, "
            f"peak {s.get('peak_memory_bytes', 0) / 2**20:.1f} MiB "
            f"({s.get('peak_memory_method')})")


SLURM_FLAGS = ("partition", "gpus_per_task", "cpus_per_task", "time", "array_parallelism",
               "additional")


def sweep(args, overrides: dict[str, str]) -> int:
    from lra.errors import LRAError
    from lra.experiments import sweep as sweeps

    if args.status:
        return sweep_status(Path(args.status))
    if not args.workdir:
        raise LRAError("lra sweep needs --workdir DIR (or --status DIR to list a sweep's runs)")
    if args.reseed_stuck < 0:
        raise LRAError(f"--reseed-stuck {args.reseed_stuck}: expected a number of attempts >= 0")
    given = [f"--slurm.{k}" for k in SLURM_FLAGS if getattr(args, f"slurm_{k}") not in (None, [])]
    if args.launcher == "local" and given:
        raise LRAError(f"{given[0]} needs --launcher slurm")
    if args.launcher == "slurm" and (args.reseed_stuck or args.jobs != 1):
        raise LRAError(f"{'--reseed-stuck' if args.reseed_stuck else '--jobs'} runs with "
                       "--launcher local only")
    runs = (sweeps.from_file(args.from_file, overrides) if args.from_file else
            sweeps.grid(args.tasks, args.models, args.sizes, args.seeds, overrides))
    sweeps.check(runs)
    runs = sweeps.shard(runs, args.shard)
    workdir = Path(args.workdir)
    if args.dry_run:
        for run in runs:
            console.print(f"{run.name}  ({sweeps.status(workdir, run) or 'todo'})")
        console.print(f"{len(runs)} runs")
        return 0
    if args.launcher == "slurm":
        return sweep_slurm(args, runs, workdir)
    try:
        results = sweeps.execute(runs, workdir,
                                 lambda run, state: console.print(f"{run.name}: {state}"),
                                 reseed=args.reseed_stuck, jobs=args.jobs)
    except sweeps.Stopped as e:
        print(f"lra: {e}", file=sys.stderr)
        return sweeps.TERMINATED
    held = [f"{name} ({state})" for name, state in results.items() if state.startswith("held")]
    bad = [f"{name} ({state})" for name, state in results.items()
           if state != "ok" and not state.startswith("held")]
    console.print(f"{len(results) - len(bad) - len(held)}/{len(results)} runs ok"
                  + (f"; not ok: {', '.join(bad)}" if bad else "")
                  + (f"; held by another process: {', '.join(held)}" if held else ""))
    return 0 if not bad else 1


def sweep_slurm(args, runs, workdir: Path) -> int:
    from lra.experiments import launch

    launch.require()
    options = {k: getattr(args, f"slurm_{k}") for k in SLURM_FLAGS[:-1]
               if getattr(args, f"slurm_{k}") is not None}
    executor = launch.slurm_executor(workdir.absolute() / ".submitit" / "%j",
                                     extra=args.slurm_additional, **options)
    jobs, submitted = launch.submit(runs, workdir.absolute(), executor)
    for job, run in zip(jobs, submitted, strict=True):
        console.print(f"{run.name}: job {job.job_id}")
    console.print(f"submitted {len(submitted)} of {len(runs)} runs"
                  + (f" as job array {jobs[0].job_id.split('_')[0]}" if jobs else "")
                  + (" (the others are done or running)" if len(submitted) < len(runs) else "")
                  + f"; follow with: lra sweep --status {workdir}")
    return 0


def sweep_status(workdir: Path) -> int:
    from collections import Counter

    from lra.experiments import sweep as sweeps

    rows = sweeps.listing(workdir)
    table = Table("run", "state", "detail")
    for name, state, detail in rows:
        table.add_row(name, state, detail)
    console.print(table)
    counts = Counter(state for _, state, _ in rows)
    console.print(", ".join(f"{counts[s]} {s}" for s in ("done", "running", "failed", "missing")))
    return 0


def bench(args, overrides: dict[str, str]) -> dict:
    import shlex

    from lra.experiments import bench as benchmark
    from lra.training.workdir import write_json

    models = benchmark.model_names(args.models)

    def show(row):
        if row["status"] == "ok":
            console.print(f"{row['model']:>16} L={row['length']:<6} "
                          f"{1000 * row['step_seconds']:9.1f} ms/step  "
                          f"{row['peak_memory_bytes'] / 2**20:9.1f} MiB ({row['memory_method']})")
        else:
            console.print(f"{row['model']:>16} L={row['length']:<6} {row['status'].upper()}")

    command = shlex.join(
        ["lra", "bench", "--task", args.task, "--models", args.models, "--lengths", args.lengths,
         "--batch", str(args.batch), "--size", args.size, "--steps", str(args.steps),
         "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--out", args.out]
        + [f"--config.{k}={v}" for k, v in overrides.items()])
    save = lambda result: write_json(Path(args.out), {**result, "command": command})  # noqa: E731
    result = benchmark.run(args.task, models, benchmark.parse_lengths(args.lengths), args.batch,
                           args.size, args.steps, args.warmup, overrides, rounds=args.rounds,
                           report=show, checkpoint=save)  # after every row: a cut run keeps them
    result["command"] = command
    save(result)
    for key, what in (("scaling_exponents", "time"), ("memory_exponents", "peak memory")):
        exps = ", ".join(f"{m} {e:.2f}" for m, e in result[key].items() if e)
        console.print(f"scaling exponents ({what} ~ L^e): {exps}")
    paper = benchmark.paper_table(result)
    if paper:
        show_table(paper)
    console.print(f"wrote {args.out}")
    return result


def print_list() -> None:
    tasks = Table(title="Tasks")
    tasks.add_column("task")
    tasks.add_column("config")
    tasks.add_column("sizes")
    SIZES = config.sizes()
    for task in data.names():
        tasks.add_row(task, data.info(task).config, ", ".join(SIZES))
    console.print(tasks)
    methods = Table(title="Attention methods")
    for col in ("name", "paper", "complexity", "hyperparameters (paper defaults)"):
        methods.add_column(col)
    for name in attention.names():
        info = attention.info(name)
        hyper = ", ".join(f"{k}={v}" for k, v in info.defaults.items())
        methods.add_row(name, info.paper, info.complexity, hyper)
    console.print(methods)


def prepare(task: str, source: str | None, path: str | None, size: str,
            overrides: dict[str, str]) -> None:
    c = config.load(f"{task}:size={size}", overrides)
    start = time.perf_counter()
    out = data.prepare(c, source, path)
    meta = store.read_meta(out)
    console.print(f"prepared {task} ({meta['source']}) in {time.perf_counter() - start:.1f}s "
                  f"-> {out}: {meta['counts']}")


def data_info() -> None:
    root = store.data_dir()
    table = Table(title=f"Prepared data in {root}")
    for col in ("task", "variant", "source", "counts", "max_len", "size on disk"):
        table.add_column(col)
    for meta_file in sorted(root.glob("*/*/meta.json")):
        folder = meta_file.parent
        meta = store.read_meta(folder)
        size = sum(f.stat().st_size for f in folder.iterdir())
        counts = ", ".join(f"{k} {v}" for k, v in meta.get("counts", {}).items())
        table.add_row(folder.parent.name, folder.name, meta.get("source", "?"), counts,
                      str(meta.get("max_len", "?")), f"{size / 2**20:.1f} MiB")
    console.print(table if table.row_count else f"nothing prepared in {root}")


def data_verify() -> int:
    """Check every prepared set's sizes and checksums: one line each; 1 if any is damaged."""
    root = store.data_dir()
    folders = sorted(m.parent for m in root.glob("*/*/meta.json"))
    bad = 0
    for folder in folders:
        damaged = store.damage(folder, full=True)
        bad += damaged is not None
        print(f"{folder.parent.name}/{folder.name}: " + (f"damaged: {damaged}" if damaged else "ok"))
    if not folders:
        print(f"nothing prepared in {root}")
    return 1 if bad else 0


def show_table(table) -> None:
    """Print a report.Table (lra report, lra approx) and its notes."""
    shown = Table(title=table.title)
    for h in table.header:
        shown.add_column(h)
    for row in table.rows:
        shown.add_row(*row)
    console.print(shown)
    for note in table.notes:
        console.print(f"  {note}", style="dim", soft_wrap=True, highlight=False)


def report(args) -> None:
    from lra.experiments import report as reports

    rep, written = reports.main(args.runs, args.bench, args.out, plots=not args.no_plots,
                                expected=args.expected)
    for table in rep.tables:
        show_table(table)
    if not rep.tables:
        console.print("no tables: no finished runs and no bench results")
    for problem in rep.problems:
        console.print(f"[yellow]missing:[/yellow] {problem}", highlight=False, soft_wrap=True)
    where = args.out + (f" and {args.expected}" if args.expected else "")
    console.print(f"wrote {len(written)} files to {where}", soft_wrap=True)


def approx(args) -> None:
    from lra.experiments import approx as approximation

    tables, written = approximation.main(
        methods=args.methods, length=args.length, budget=args.budget,
        temperatures=args.temperatures, checkpoint=args.checkpoint, examples=args.examples,
        seed=args.seed, out=args.out, inputs=args.inputs, measure=args.measure, delta=args.delta)
    for table in tables:
        show_table(table)
    console.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True)


def evaluate(workdir: str, overrides: dict[str, str]) -> dict:
    from lra.experiments import evaluate as evaluation

    result = evaluation.evaluate(workdir, overrides)
    table = Table(title=f"{result['task']} ({result['size']}): trained with "
                  f"{result['trained_with']}, evaluated with {result['evaluated_with']}")
    for col in ("", "val acc %", "test acc %"):
        table.add_column(col)
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}"
    table.add_row(f"trained ({result['trained_with']})", pct(result["trained_best_val_acc"]),
                  pct(result["trained_test_acc"]))
    table.add_row(f"swapped in ({result['evaluated_with']})", pct(result["val_accuracy"]),
                  pct(result["test_accuracy"]))
    console.print(table)
    console.print(f"wrote {Path(workdir) / ('eval_' + result['evaluated_with'] + '.json')}",
                  soft_wrap=True)
    return result


def demo(workdir: str, methods: list[str], steps: int, overrides: dict[str, str]) -> None:
    from lra.cli import demo as demos

    result = demos.run(workdir, methods, steps, overrides, run_config)
    table = Table(title=f"ListOps (generated, size=cpu), {result['wall_seconds']:.0f} s")
    for col in ("model", "test acc %", "best val acc %", "steps", "examples/s", "peak MiB"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(r["model"], f"{100 * r['test_acc']:.1f}", f"{100 * r['best_val_acc']:.1f}",
                      str(r["steps"]), f"{r['examples_per_second']:.0f}",
                      f"{r['peak_memory_bytes'] / 2**20:.1f}")
    table.add_row("majority class", f"{100 * result['majority_class_acc']:.1f}", "", "", "", "")
    console.print(table)
