"""The one GPU check of issue 18: every kernel and the paper's speed table in one short run.

    bash scripts/gpu_check.sh [--out DIR]          # on the GPU (the .sh installs what is missing)
    bash scripts/gpu_check.sh --dry-run            # on CPU: the same parts, tiny, interpreted

Parts, in order, each a subprocess with its own timeout, its log in <out>/<part>.log and its
status (ok / failed / timeout / terminated / skipped), seconds and error tail in
<out>/parts.json; a part that fails never stops the next (SIGTERM stops the part in flight,
skips the rest and still writes the summary):
  device     jax's backend, device and version (device.json)
  tests      pytest of the kernel tests and the Pallas conformance cases, the kernels native
             on a GPU ($LRA_PALLAS_INTERPRET unset; on CPU the tests interpret), float32
             matmuls at full precision (tests.xml)
  kernels    scripts/bench_kernels.py --isolate: flash, block_sparse, linear, topk against XLA
             and cuDNN, fwd and fwd+bwd, one process per op (kernels.json, kernels.md)
  bench_L    `lra bench` of the Text model, one per length, 4K first (bench_L.json)
  tables     the speed table beside AdaMRA Table 2's figures (bench.md) and SMAT, Eq. 10
             (smat.md, smat.json), from the bench and the committed accuracy table
Then summary.md: the manifest and the tables. Each part's time is a budget: what a part
leaves unused goes to the next, and no part runs past --deadline seconds from the start.

The run tool (the lent H100/H200; results/gpu/README.md): carry [".whl"] (the ml-collections
wheel), timeout_s 600, and as one line the command
    timeout 580 bash scripts/gpu_check.sh --out /tmp/gpu-check; tar czf $OUT/gpu-check.tgz -C /tmp
    gpu-check; cp /tmp/gpu-check/parts.json /tmp/gpu-check/summary.md $OUT/
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL_TESTS = ["tests/test_kernels_block_sparse.py", "tests/test_kernels_flash.py",
                "tests/test_kernels_linear.py", "tests/test_kernels_topk.py",
                "tests/test_attention_pallas.py"]
KERNEL_OPS = "flash,block_sparse,linear,linear_causal,flash_causal,topk"  # unmeasured ones first
ACCURACY = "results/cpu/report/accuracy_cpu.csv"
# (GPU default, --dry-run default) of each size and budget.
DEFAULTS = {
    "tests": (KERNEL_TESTS, ["tests/test_kernels_flash.py"]),
    "test_k": ("", "bfloat16"),
    "test_workers": (4, 0),
    "kernel_ops": (KERNEL_OPS, "flash,block_sparse,linear"),
    "kernel_lengths": ("1024,4096,16384", "128"),
    "kernel_tokens": (16384, 128),
    "kernel_heads": (8, 2),
    "kernel_iters": (5, 1),
    "bench_models": ("table2", "softmax"),
    "bench_lengths": ("4096,1024,2048", "128"),
    "bench_batch": (16, 2),
    "bench_size": ("nystrom", "smoke"),
    "bench_steps": (3, 1),
    "bench_warmup": (1, 0),
    "budget_device": (30, 60),
    "budget_tests": (120, 120),
    "budget_kernels": (150, 180),
    "budget_bench": (200, 120),
    "budget_tables": (30, 60),
    "deadline": (540, 900),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder (default results/gpu/check-<UTC date>)")
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("DRY_RUN") == "1",
                        help="CPU, tiny shapes, Pallas interpreted (also DRY_RUN=1)")
    parser.add_argument("--inject", default="", help="fail,timeout: add a part that fails or "
                        "times out, before the others (to check that they still run)")
    parser.add_argument("--parts", default="device,tests,kernels,bench,tables",
                        help="which parts to run, in their fixed order")
    parser.add_argument("--accuracy", default=ACCURACY, help="the accuracy table for SMAT "
                        "(an `lra report` accuracy_<size>.csv)")
    for key, (gpu, _) in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if key == "tests":
            parser.add_argument(flag, nargs="+", default=None)
        else:
            parser.add_argument(flag, type=type(gpu), default=None,
                                help=f"default {gpu} (seconds for budgets and the deadline)")
    args = parser.parse_args(argv)
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[args.dry_run])
    args.out = Path(args.out or ROOT / "results" / "gpu" /
                    f"check-{datetime.datetime.now(datetime.UTC):%Y-%m-%d}")
    return args


def part_commands(args) -> list[tuple[str, list[str], int]]:
    """(name, argv, budget seconds) of every part to run, in order."""
    py, out = sys.executable, args.out
    wanted = args.parts.split(",")
    parts = []
    for kind in filter(None, args.inject.split(",")):
        code = "raise SystemExit('injected failure')" if kind == "fail" else "import time; time.sleep(60)"
        parts.append((f"injected_{kind}", [py, "-c", code], 1))
    if "device" in wanted:
        parts.append(("device", [py, __file__, "device", str(out / "device.json")], args.budget_device))
    if "tests" in wanted:
        cmd = [py, "-m", "pytest", "-vv", "-p", "no:cacheprovider", f"--junitxml={out / 'tests.xml'}",
               *args.tests]
        cmd += ["-k", args.test_k] if args.test_k else []
        if args.test_workers and importlib.util.find_spec("xdist"):
            cmd += ["-n", str(args.test_workers)]
        parts.append(("tests", cmd, args.budget_tests))
    if "kernels" in wanted:
        cmd = [py, "scripts/bench_kernels.py", "--ops", args.kernel_ops, "--lengths",
               args.kernel_lengths, "--tokens", str(args.kernel_tokens), "--heads",
               str(args.kernel_heads), "--iters", str(args.kernel_iters), "--out", str(out),
               "--isolate", "--op-timeout", str(max(30, args.budget_kernels // 2))]
        parts.append(("kernels", cmd + (["--interpret"] if args.dry_run else []), args.budget_kernels))
    if "bench" in wanted:
        lengths = args.bench_lengths.split(",")
        # The first length (4K: the paper's column) gets half the time, the others share the rest.
        shares = [1.0] if len(lengths) == 1 else [0.5] + [0.5 / (len(lengths) - 1)] * (len(lengths) - 1)
        for length, share in zip(lengths, shares, strict=True):
            cmd = [py, "-m", "lra.cli", "bench", "--task", "text", "--size", args.bench_size,
                   "--models", args.bench_models, "--lengths", length, "--batch", str(args.bench_batch),
                   "--steps", str(args.bench_steps), "--warmup", str(args.bench_warmup),
                   "--out", str(out / f"bench_{length}.json")]
            parts.append((f"bench_{length}", cmd, round(args.budget_bench * share)))
    if "tables" in wanted:
        parts.append(("tables", [py, __file__, "tables", str(out), args.accuracy], args.budget_tables))
    return parts


# The tests compare float32 kernels with XLA at rtol 1e-4: on a GPU both would otherwise multiply
# in TF32 (Pallas' Triton dot and XLA's default precision), 1e-3 apart.
TEST_ENV = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}


def child_env(dry_run: bool) -> dict[str, str]:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")
    env.pop("LRA_PALLAS_INTERPRET", None)   # native kernels on a GPU; tests interpret on CPU
    if dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    return env


class Terminated(Exception):
    """SIGTERM reached this script (e.g. from `timeout`): the part in flight is stopped."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # one is enough: let the summary be written
    raise Terminated


def run_part(name: str, cmd: list[str], timeout: float, out: Path, env: dict) -> dict:
    """Run one part in its own process group (a timeout kills its children too)."""
    log = out / f"{name}.log"
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except (subprocess.TimeoutExpired, Terminated) as err:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            status = "timeout" if isinstance(err, subprocess.TimeoutExpired) else "terminated"
    record = {"name": name, "status": status, "returncode": rc,
              "seconds": round(time.monotonic() - start, 1), "timeout": round(timeout, 1),
              "command": shlex.join(cmd), "log": log.name}
    if status != "ok":
        record["error_tail"] = log.read_text(errors="replace").splitlines()[-20:]
    return record


def count_tests(out: Path) -> dict:
    """passed/failed/errors/skipped from tests.xml, or from the -v log when pytest was cut off."""
    xml = out / "tests.xml"
    if xml.exists():
        head = re.search(r"<testsuite [^>]*>", xml.read_text())
        if head:
            get = lambda key: int(re.search(rf'{key}="(\d+)"', head.group()).group(1))  # noqa: E731
            total, failed, errors, skipped = (get(k) for k in ("tests", "failures", "errors", "skipped"))
            return {"source": "tests.xml", "passed": total - failed - errors - skipped,
                    "failed": failed, "errors": errors, "skipped": skipped}
    log = (out / "tests.log").read_text(errors="replace") if (out / "tests.log").exists() else ""
    return {"source": "tests.log", **{k.lower(): len(re.findall(rf" {k}\b", log))
                                      for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}}


def git_commit() -> str:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        return commit + ("+uncommitted" if git("status", "--porcelain") else "")
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = child_env(args.dry_run)
    manifest = {"command": shlex.join([sys.executable, *sys.argv]), "dry_run": args.dry_run,
                "commit": git_commit(), "python": platform.python_version(),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "deadline_seconds": args.deadline, "parts": []}
    start, slack = time.monotonic(), 0.0
    signal.signal(signal.SIGTERM, _terminate)
    for name, cmd, budget in part_commands(args):
        left = args.deadline - (time.monotonic() - start)
        stopped = any(p["status"] == "terminated" for p in manifest["parts"])
        if left < 1 or stopped:
            manifest["parts"].append({"name": name, "status": "skipped", "seconds": 0,
                                      "command": shlex.join(cmd),
                                      "error_tail": ["SIGTERM" if stopped else "deadline reached"]})
            continue
        timeout = min(budget + slack, left)
        if name == "tests":   # a pytest cut off writes none: never count a stale one
            (args.out / "tests.xml").unlink(missing_ok=True)
        record = run_part(name, cmd, timeout, args.out, {**env, **TEST_ENV} if name == "tests" else env)
        slack = max(0.0, timeout - record["seconds"])
        if name == "device" and record["status"] == "ok":
            manifest.update(json.loads((args.out / "device.json").read_text()))
            manifest["pallas"] = "interpreted" if manifest["backend"] == "cpu" else "native"
        if name == "tests":
            record["counts"] = count_tests(args.out)
        manifest["parts"].append(record)
        print(f"{name}: {record['status']} in {record['seconds']} s", flush=True)
        write_json(args.out / "parts.json", manifest)
    manifest["seconds"] = round(time.monotonic() - start, 1)
    write_json(args.out / "parts.json", manifest)
    (args.out / "summary.md").write_text(summary(manifest, args.out))
    print(f"wrote {args.out}/parts.json and summary.md")
    return 0 if all(p["status"] == "ok" for p in manifest["parts"]) else 1


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def summary(manifest: dict, out: Path) -> str:
    """summary.md: what ran where, each part's status, then the tables the parts wrote."""
    lines = ["# GPU check" + (" (dry run)" if manifest["dry_run"] else ""), "",
             f"{manifest.get('device', '?')} ({manifest.get('backend', '?')}), jax "
             f"{manifest.get('jax', '?')}, commit {manifest['commit']}, {manifest['started']}, "
             f"{manifest['seconds']} s  ", f"Command: `{manifest['command']}`", "",
             "| part | status | seconds | note |", "|---|---|---|---|"]
    for p in manifest["parts"]:
        counts = p.get("counts", {})
        note = (", ".join(f"{v} {k}" for k, v in counts.items() if k != "source") if counts
                else (p.get("error_tail") or [""])[-1])
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']} | "
                     f"{str(note).replace('|', '/')[:200]} |")
    for name in ("bench.md", "smat.md", "kernels.md"):
        if (out / name).exists():
            lines.append(("\n" + (out / name).read_text()).replace("\n# ", "\n## "))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- parts run as subcommands

def device(path: str) -> None:
    import jax

    write_json(Path(path), {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                            "device_count": jax.device_count(), "jax": jax.__version__})


def csv_runs(path: Path):
    """An `lra report` accuracy CSV as one pseudo-run per (task, model) cell holding the
    cell's mean, so that the report's own averaging gives SMAT's A."""
    from lra.experiments import report

    size = path.stem.removeprefix("accuracy_")
    runs = []
    with open(path) as f:
        for row in csv.DictReader(f):
            for task in report.task_columns():
                if row.get(f"{task}_mean"):
                    summary = {"size": size, "task": task, "model": row["model"], "status": "ok",
                               "test_acc": float(row[f"{task}_mean"]) / 100}
                    runs.append(report.Run(path, summary, {}))
    return size, runs


def variant_runs(runs: list, models) -> list:
    """Copies of a method's accuracy runs under the name of each of `models` that is a bench
    variant of it (performer-32, adamra-1/2..1/16): the accuracy table has methods only."""
    from lra.experiments import report
    from lra.training import config

    copies = []
    for model in models:
        method = config.presets().variant(model)[0]
        if method != model:
            copies += [report.Run(r.path, {**r.summary, "model": model}, r.config)
                       for r in runs if r.summary["model"] == method]
    return copies


def tables(out: str, accuracy: str) -> None:
    """bench.md (speed table and paper comparison) and smat.md/.json from bench_*.json."""
    from lra.experiments import bench, report

    out = Path(out)
    files = sorted(out.glob("bench_*.json"))
    if not files:
        raise SystemExit(f"no bench_*.json in {out}: every bench part failed")
    groups = report.load_bench(files)
    g = max(groups, key=lambda g: len(g.rows))   # bench parts cut short early may say device "?"
    at = bench.PAPER_TABLE2["length"] if bench.PAPER_TABLE2["length"] in g.lengths else max(g.lengths)
    paper = bench.paper_table({"task": g.task, "size": g.size, "batch": g.batch, "device": g.device,
                               "results": list(g.rows.values())}, at)
    parts = [report.markdown(t) for t in [*map(report.speed_table, groups), paper]]
    (out / "bench.md").write_text("# lra bench\n\n" + "\n".join(parts))
    size, runs = csv_runs(Path(accuracy))
    smat = []
    for group in groups:
        variants = variant_runs(runs, group.models)
        avg, tasks = report.averages(runs + variants)
        if sum(m in avg for m in group.models) < 2:
            avg, tasks = report.common_averages(runs + variants, group.models)
        table, rows = report.smat_table(f"smat_{size}_{group.name}", avg, size, group, tasks)
        table.notes.append(f"Accuracy from {accuracy}.")
        if variants:
            table.notes.append("A bench variant takes its method's accuracy (trained at the method's "
                               "preset): " + ", ".join(sorted({r.summary["model"] for r in variants})) + ".")
        smat.append((table, rows))
    (out / "smat.md").write_text("# SMAT\n\n" + "\n".join(report.markdown(t) for t, _ in smat))
    write_json(out / "smat.json", {t.name: rows for t, rows in smat})


if __name__ == "__main__":
    if sys.argv[1:2] == ["device"]:
        device(sys.argv[2])
    elif sys.argv[1:2] == ["tables"]:
        tables(*sys.argv[2:4])
    else:
        sys.exit(main())
