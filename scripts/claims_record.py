"""Keep the claims' runs: copy each finished run's summary.json and config.json from a sweep's
workdir into the committed record tree, where the claim builders read them.

    python scripts/claims_record.py --runs runs/claims --to results/cpu/claims/records

A workdir (checkpoints and all) is not committed and does not outlive its checkout; the record
does, so a grid can grow over many sessions. A record already there is kept when the run says
the same (its config and result; timings and versions may differ) and refused when it does
not. A recovered record (a summary.json with `recovered`: a
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
from lra.experiments.report import COUNTED, files_below

FILES = ("summary.json", "config.json")
# what a run says about its result; timings, versions and thread counts may differ on a rerun
RESULT = ("task", "model", "size", "seed", "status", "steps", "best_step", "best_val_acc",
          "test_acc")


class Refused(Exception):
    pass


def read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Refused(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise Refused(f"{path}: not a JSON object")
    return data


def difference(run: Path, new: dict, record: Path, old: dict) -> str | None:
    """The first key in which a run (its folder and summary) differs from its record in config
    or result, or None."""
    if read(run / "config.json") != read(record / "config.json"):
        return "config.json"
    return next((f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in RESULT
                 if new.get(k) != old.get(k)), None)


def plan(runs: Path, to: Path) -> tuple[list[tuple[Path, dict, Path]], list[str]]:
    """(run folder, the summary to record, record folder) for every finished run under `runs`
    that the record lacks or holds only as recovered, and one line per run for the log."""
    copies, log = [], []
    for summary_path in files_below(runs, "summary.json"):
        folder = summary_path.parent
        summary = read(summary_path)
        if summary.get("status") not in COUNTED or not (folder / "config.json").is_file():
            continue
        dest = to / folder.relative_to(runs)
        if not (dest / "summary.json").exists():
            copies.append((folder, summary, dest))
            log.append(f"{dest}: recorded (test_acc {summary.get('test_acc')})")
            continue
        kept = read(dest / "summary.json")
        if "recovered" in kept:
            summary = {**summary, "supersedes": {"test_acc": kept.get("test_acc"),
                                                 **kept["recovered"]}}
            copies.append((folder, summary, dest))
            log.append(f"{dest}: recovered test_acc {kept.get('test_acc')} superseded by the "
                       f"run's {summary.get('test_acc')}")
        elif (why := difference(folder, summary, dest, kept)) is not None:
            raise Refused(f"{folder}: differs from its record {dest} ({why}; cpu_threads "
                          f"{kept.get('cpu_threads')} -> {summary.get('cpu_threads')}); delete "
                          "the record to record this run instead")
    return copies, log


def restore(to: Path, runs: Path) -> list[str]:
    """Copy each record that `runs` has no folder for into it; one line per record copied."""
    log = []
    for summary_path in files_below(to, "summary.json"):
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
    try:
        if args.restore:
            if not args.to.is_dir():
                raise Refused(f"--to {args.to}: no such folder")
            print("\n".join(restore(args.to, args.runs)) or f"{args.runs}: holds every record")
            return 0
        if not args.runs.is_dir():
            raise Refused(f"--runs {args.runs}: no such folder; pass a `lra sweep --workdir`")
        copies, log = plan(args.runs, args.to)
        for folder, summary, dest in copies:
            with atomic_path(dest, directory=True) as tmp:  # a record is whole or absent
                shutil.copyfile(folder / "config.json", tmp / "config.json")
                (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    except (Refused, OSError) as e:
        print(f"claims_record: {e}", file=sys.stderr)
        return 2
    print("\n".join(log) or f"{args.to}: nothing new under {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
