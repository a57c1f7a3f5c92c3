"""Keep the claims' runs: copy each finished run's summary.json and config.json from a sweep's
workdir into the committed record tree, where the claim builders read them.

    python scripts/claims_record.py --runs runs/claims --to results/cpu/claims/records

A workdir (checkpoints and all) is not committed and does not outlive its checkout; the record
does, so a grid can grow over many sessions. A record already there is kept when the run says
the same and refused when it does not. A recovered record (a summary.json with `recovered`: a
test accuracy copied from a committed table after its run folder was lost) is superseded by a
run of its seed whatever the run scored, and the record keeps the old value under
`supersedes`: a rerun repeats a run exactly only on the same CPU thread count and library
versions (summary.json's `cpu_threads`, `*_version`), which the lost runs did not record.
Everything is checked before anything is written; a refusal is one line and exit status 2.

    python scripts/claims_record.py --restore --runs runs/claims --to results/cpu/claims/records

goes the other way, for a new checkout: each record that the workdir lacks is copied into it,
so that `lra sweep` skips the runs the record already holds (a restored folder has no
checkpoints, so `lra eval` cannot read it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lra.atomic import atomic_path
from lra.experiments.report import COUNTED

FILES = ("summary.json", "config.json")


class Refused(Exception):
    pass


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Refused(f"{path}: unreadable ({e})") from None


def without_supersedes(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "supersedes"}


def plan(runs: Path, to: Path) -> tuple[list[tuple[Path, Path, dict | None]], list[str]]:
    """(run folder, record folder, the recovered record it supersedes or None) for every
    finished run under `runs` that the record lacks or holds only as recovered, and one line
    per run for the log."""
    copies, log = [], []
    for summary_path in sorted(runs.rglob("summary.json")):
        folder = summary_path.parent
        summary = read(summary_path)
        if summary.get("status") not in COUNTED or not (folder / "config.json").is_file():
            continue
        dest = to / folder.relative_to(runs)
        if not (dest / "summary.json").exists():
            copies.append((folder, dest, None))
            log.append(f"{dest}: recorded (test_acc {summary.get('test_acc')})")
            continue
        kept = read(dest / "summary.json")
        if "recovered" in kept:
            copies.append((folder, dest, {"test_acc": kept.get("test_acc"), **kept["recovered"]}))
            log.append(f"{dest}: recovered test_acc {kept.get('test_acc')} superseded by the "
                       f"run's {summary.get('test_acc')}")
        elif any(without_supersedes(read(folder / f)) != without_supersedes(read(dest / f))
                 for f in FILES if (dest / f).exists()):
            raise Refused(f"{folder}: differs from its record {dest}; delete the record to "
                          "record this run instead")
    return copies, log


def restore(to: Path, runs: Path) -> list[str]:
    """Copy each record that `runs` has no folder for into it; one line per record copied."""
    log = []
    for summary_path in sorted(to.rglob("summary.json")):
        dest = runs / summary_path.parent.relative_to(to)
        if dest.exists():  # finished, or under way: the sweep resumes it
            continue
        with atomic_path(dest, directory=True) as tmp:
            for name in FILES:
                if (summary_path.parent / name).is_file():
                    shutil.copyfile(summary_path.parent / name, tmp / name)
        log.append(f"{dest}: restored from the record")
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/claims"), help="a sweep's workdir")
    p.add_argument("--to", type=Path, default=Path("results/cpu/claims/records"),
                   help="the committed record tree")
    p.add_argument("--restore", action="store_true",
                   help="copy the records the workdir lacks into it instead")
    args = p.parse_args(argv)
    if args.restore:
        if not args.to.is_dir():
            print(f"claims_record: --to {args.to}: no such folder", file=sys.stderr)
            return 2
        print("\n".join(restore(args.to, args.runs)) or f"{args.runs}: holds every record")
        return 0
    try:
        if not args.runs.is_dir():
            raise Refused(f"--runs {args.runs}: no such folder; pass a `lra sweep --workdir`")
        copies, log = plan(args.runs, args.to)
    except Refused as e:
        print(f"claims_record: {e}", file=sys.stderr)
        return 2
    for folder, dest, superseded in copies:
        with atomic_path(dest, directory=True) as tmp:  # a record is whole or absent
            shutil.copyfile(folder / "config.json", tmp / "config.json")
            summary = read(folder / "summary.json")
            if superseded:
                summary["supersedes"] = superseded
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(log) or f"{args.to}: nothing new under {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
