"""The `lra` command line: train, list, sweep, bench, report, approx, eval, demo, data."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lra.cli import cpu_malloc
from lra.errors import DiskFull, LRAError, is_disk_full
from lra.training.workdir import Terminated


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate `--config.KEY=VALUE` (or `--config.KEY VALUE`) from the other arguments."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config."):].partition("=")
            if not sep:
                if i + 1 >= len(argv):
                    raise LRAError(f"{arg} needs a value: {arg}=VALUE")
                value, i = argv[i + 1], i + 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lra", description="Long Range Arena harness")
    p.add_argument("--debug", action="store_true", help="show an error's traceback instead of "
                   "its one line (anywhere on the line; or set LRA_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train and evaluate one task x model",
                       epilog="override any config key with --config.KEY=VALUE")
    t.add_argument("--config", required=True, help="configs/TASK.py:model=NAME,size=SIZE")
    t.add_argument("--workdir", required=True)

    sub.add_parser("list", help="tasks, sizes and attention methods")

    sw = sub.add_parser("sweep", help="run a task x model x size x seed grid, one process each",
                        epilog="--config.KEY=VALUE overrides apply to every run")
    sw.add_argument("--tasks", default="listops")
    sw.add_argument("--models", default="softmax",
                    help="all (every method) | a,b,c of methods and variants (configs/models.py)")
    sw.add_argument("--sizes", default="cpu")
    sw.add_argument("--seeds", default="0")
    sw.add_argument("--from", dest="from_file", default=None,
                    help="a config file whose sweep() defines the grid")
    sw.add_argument("--workdir", default=None, help="where the runs go (required)")
    sw.add_argument("--status", default=None, metavar="WORKDIR",
                    help="list each run of WORKDIR as done / running / failed / missing and stop")
    sw.add_argument("--launcher", choices=["local", "slurm"], default="local",
                    help="local: one run after another here; slurm: one job array through "
                    "submitit, one task per run (pip install 'lra-harness[cluster]')")
    sw.add_argument("--slurm.partition", dest="slurm_partition", default=None)
    sw.add_argument("--slurm.gpus_per_task", dest="slurm_gpus_per_task", type=int, default=None,
                    help="default 1")
    sw.add_argument("--slurm.cpus_per_task", dest="slurm_cpus_per_task", type=int, default=None)
    sw.add_argument("--slurm.time", dest="slurm_time", default=None,
                    help="per run: minutes, HH:MM:SS or D-HH:MM:SS (default 60); a preempted or "
                    "timed-out run is requeued and resumes")
    sw.add_argument("--slurm.array_parallelism", dest="slurm_array_parallelism", type=int,
                    default=None, help="runs at once (default 256)")
    sw.add_argument("--slurm.additional", dest="slurm_additional", action="append", default=[],
                    metavar="KEY=VALUE", help="any other sbatch flag, e.g. qos=high (repeatable)")
    sw.add_argument("--shard", default=None, help="i/n: this machine's share of the grid")
    sw.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="train N runs at once, each pinned to its own share of the CPU cores "
                    "(local launcher; default 1)")
    sw.add_argument("--reseed-stuck", type=int, default=0, metavar="N",
                    help="rerun a run that did not learn (status stuck) with a fresh seed, up to "
                    "N attempts (seed<k>-retry<i>, seed k + 1000 i); every attempt is kept")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and stop")

    b = sub.add_parser("bench", help="speed and memory of a training step per method and length")
    b.add_argument("--task", default="text")
    b.add_argument("--models", default="all",
                   help="a,b,c of methods, variants (configs/models.py VARIANTS, e.g. "
                   "performer-32) and groups: all (every method), table2 (AdaMRA Table 2's rows)")
    b.add_argument("--lengths", default="1024,2048,4096")
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--size", default="nystrom", help="model size: nystrom = 2 layers, emb 64")
    b.add_argument("--steps", type=int, default=5, help="timed steps (median) after warm-up")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--rounds", type=int, default=1,
                   help="measure the whole grid this many times, interleaved; rows take the median")
    b.add_argument("--out", default="bench.json")

    d = sub.add_parser("demo", help="generated ListOps at size=cpu, a few methods, a table")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--models", default="")
    d.add_argument("--steps", type=int, default=0, help="override train.steps")

    r = sub.add_parser("report", help="accuracy, speed/memory and SMAT tables (md, csv, LaTeX) "
                       "and plots")
    r.add_argument("runs", nargs="*", help="run directories or trees of them (lra sweep --workdir)")
    r.add_argument("--bench", action="append", default=[], help="a bench.json (repeatable)")
    r.add_argument("--out", default="report", help="folder for the tables and plots")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--expected", default=None, metavar="FILE",
                   help="also write FILE: a markdown page of the expected-curves tables "
                   "(e.g. docs/expected.md)")

    a = sub.add_parser("approx", help="relative error of each method's attention output "
                       "(or matrix) against exact softmax")
    a.add_argument("--checkpoint", default=None,
                   help="a run's workdir: also use the q, k, v of its trained layers")
    a.add_argument("--methods", default="all", help="all | a,b,c")
    a.add_argument("--length", type=int, default=512, help="sequence length of random q, k, v")
    a.add_argument("--budget", type=int, default=64, help="keys or features per query")
    a.add_argument("--inputs", choices=["gaussian", "clustered"], default="gaussian",
                   help="synthetic q, k, v: i.i.d. Gaussian, or Scatterbrain's clustered "
                   "q = k (Chen et al. 2021, §3)")
    a.add_argument("--measure", choices=["output", "matrix"], default="output",
                   help="error of the attention output, or of the attention matrix")
    a.add_argument("--delta", type=float, default=0.5,
                   help="intra-cluster distance of --inputs clustered")
    a.add_argument("--temperatures", default=None,
                   help="softmax temperatures T (default 0.125,0.25,0.5,1,2; clustered: "
                   "0.03125,...,1, i.e. beta = 1/T = 32..1)")
    a.add_argument("--examples", type=int, default=2, help="validation examples (--checkpoint)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="approx")

    e = sub.add_parser("eval", help="evaluate a trained checkpoint with another attention "
                       "method swapped in", epilog="pick the method with "
                       "--config.model.attention=NAME; other --config.KEY=VALUE apply too")
    e.add_argument("--workdir", required=True, help="the trained run's workdir")

    data = sub.add_parser("data", help="prepare and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="prepare a task's data into $LRA_DATA_DIR")
    prep.add_argument("task")
    prep.add_argument("--source", default=None, help="release | archive | tfds | generate")
    prep.add_argument("--path", default=None, help="where the source data is")
    prep.add_argument("--size", default="cpu", help="config size (sets lengths and counts)")
    dsub.add_parser("info", help="what is prepared, where, sizes and counts")
    dsub.add_parser("verify", help="check every prepared set's sizes and checksums; "
                    "exit 1 if any is damaged")
    return p


def one_line(e: Exception) -> str:
    """An unexpected failure in one line: a full disk says what it was writing; anything
    else its type and first line."""
    if isinstance(e, DiskFull):
        return str(e)
    if is_disk_full(e):
        return f"no space left on device writing {getattr(e, 'filename', None) or 'a file'}"
    first = (str(e).splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first} (rerun with --debug for the traceback)"


def entry() -> int:
    """The `lra` program (`python -m lra.cli`): start again under cpu_malloc's environment
    where it differs (CPU speed, docs/architecture.md), then run the command line."""
    cpu_malloc.reexec()
    return main()


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error is one line on stderr: exit 2 for a user error, 1 for a
    failure, 143 after SIGTERM, 130 after Ctrl-C; `--debug` (anywhere on the line) or
    LRA_DEBUG=1 shows the traceback instead."""
    logging.basicConfig(level=os.environ.get("LRA_LOGLEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LRA_DEBUG", "0") not in ("", "0")
    try:
        rest, overrides = split_overrides([a for a in argv if a != "--debug"])
        args = parser().parse_args(rest)
        return COMMANDS[args.command](args, overrides)
    except Terminated as e:  # SIGTERM: 128 + 15, what schedulers expect
        print(f"lra: {e}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("lra: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        from lra.kernels.errors import KernelError  # not at the top: it imports jax

        user = isinstance(e, (LRAError, KernelError))
        print(f"lra: error: {e if user else one_line(e)}", file=sys.stderr)
        return 2 if user else 1


def cmd_train(args, overrides) -> int:
    from lra.cli import commands

    summary = commands.train(args.config, args.workdir, overrides)
    return 0 if summary["status"] == "ok" else 1


def cmd_list(args, overrides) -> int:
    from lra.cli import commands

    commands.print_list()
    return 0


def cmd_sweep(args, overrides) -> int:
    from lra.cli import commands

    return commands.sweep(args, overrides)


def cmd_bench(args, overrides) -> int:
    from lra.cli import commands

    commands.bench(args, overrides)
    return 0


def cmd_demo(args, overrides) -> int:
    from lra.cli import commands

    commands.demo(args.workdir, [m for m in args.models.split(",") if m], args.steps, overrides)
    return 0


def cmd_report(args, overrides) -> int:
    from lra.cli import commands

    if overrides:
        raise LRAError("lra report takes no --config overrides")
    commands.report(args)
    return 0


def cmd_approx(args, overrides) -> int:
    from lra.cli import commands

    if overrides:
        raise LRAError("lra approx takes no --config overrides")
    commands.approx(args)
    return 0


def cmd_eval(args, overrides) -> int:
    from lra.cli import commands

    commands.evaluate(args.workdir, overrides)
    return 0


def cmd_data(args, overrides) -> int:
    from lra.cli import commands

    if args.data_command == "prepare":
        commands.prepare(args.task, args.source, args.path, args.size, overrides)
    elif args.data_command == "verify":
        return commands.data_verify()
    else:
        commands.data_info()
    return 0


COMMANDS = {"train": cmd_train, "list": cmd_list, "sweep": cmd_sweep, "bench": cmd_bench,
            "demo": cmd_demo, "report": cmd_report, "approx": cmd_approx, "eval": cmd_eval,
            "data": cmd_data}
