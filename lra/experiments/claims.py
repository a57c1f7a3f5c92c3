"""What the claim builders (scripts/claim_*.py) share: the test accuracies of a grid's runs,
their summary statistics, and the rule that says whether A beats B beyond the seed spread.

The rule: for "A should beat B", with d = mean(A) - mean(B), s the pooled std of the two
rows and t = d / (s sqrt(1/n_A + 1/n_B)), the pair is reproduced when t >= T_MIN (A leads
by twice its standard error), not reproduced when d <= 0 (A does not lead), undecided
otherwise or with fewer than 2 seeds a row."""

from __future__ import annotations

import math
import statistics
import subprocess
from pathlib import Path

from lra.experiments.report import Run, check_configs, collect

T_MIN = 2.0


def accuracies(runs: list[Path], size: str, tasks, models) -> dict[tuple[str, str], list[float]]:
    """{(task, model): [test accuracy % per finished seed]} of the runs under `runs` at `size`
    among `tasks` x `models` (refused, as by `lra report`, when two seeds of a cell differ in
    config)."""
    found = grid_runs(runs, size, tasks, models)
    check_configs(found)
    out: dict[tuple[str, str], list[float]] = {}
    for run in found:
        if run.accuracy is not None:
            out.setdefault(run.key[1:], []).append(100 * run.accuracy)
    return out


def grid_runs(runs: list[Path], size: str, tasks, models) -> list[Run]:
    return [run for run in collect(runs)[0]
            if run.key[0] == size and run.key[1] in tasks and run.key[2] in models]


def records(runs: list[Path], size: str, tasks, models) -> dict:
    """How many finished runs the grid's cells hold; which are recovered records (summary.json
    `recovered`: a value copied from an earlier committed table) and which reruns superseded
    one (`supersedes`, the value they replaced); see scripts/claims_record.py."""
    counted = [run for run in grid_runs(runs, size, tasks, models) if run.accuracy is not None]

    def name(run: Run) -> str:
        return f"{run.key[1]}/{run.key[2]}/seed{run.summary.get('seed')}"

    return {"runs": len(counted),
            "recovered": sorted(name(r) for r in counted if "recovered" in r.summary),
            "superseded": {name(r): 100 * r.summary["supersedes"]["test_acc"]
                           for r in counted if "supersedes" in r.summary}}


def records_line(rec: dict) -> str:
    line = f"{rec['runs']} runs"
    if rec["recovered"]:
        line += (f"; {len(rec['recovered'])} of them recovered records, test accuracies copied "
                 "from an earlier committed table after their run folders were lost (summary.json "
                 "`recovered`)")
    if rec["superseded"]:
        line += (f"; {len(rec['superseded'])} reruns superseded recovered values: "
                 + ", ".join(f"{k} was {v:.2f}" for k, v in sorted(rec["superseded"].items())))
    return line + "."


def stats(xs: list[float]) -> dict:
    return {"n": len(xs), "mean": statistics.mean(xs) if xs else None,
            "std": statistics.stdev(xs) if len(xs) > 1 else None, "values": xs}


def cell(s: dict) -> str:
    """'mean ± std (n=k)' of stats(), '—' when there is no run."""
    if not s["n"]:
        return "—"
    return f"{s['mean']:.2f} ± {s['std']:.2f} (n={s['n']})" if s["std"] is not None \
        else f"{s['mean']:.2f} (n=1)"


def compare(a: list[float], b: list[float]) -> dict:
    """One pair's verdict (A should beat B) under the module's rule."""
    if len(a) < 2 or len(b) < 2:
        return {"verdict": "undecided", "why": "fewer than 2 seeds"}
    d = statistics.mean(a) - statistics.mean(b)
    s = math.sqrt(((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
                  / (len(a) + len(b) - 2))
    se = s * math.sqrt(1 / len(a) + 1 / len(b))
    t = d / se if se > 0 else math.copysign(math.inf, d) if d else 0.0
    verdict = "reproduced" if t >= T_MIN else "not reproduced" if d <= 0 else "undecided"
    return {"verdict": verdict, "d": d, "pooled_std": s, "t": t}


def combine(verdicts: list[str]) -> str:
    """All pairs reproduced: reproduced; any not reproduced: not reproduced; else undecided."""
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "not reproduced" if "not reproduced" in verdicts else "undecided"


def pair_text(c: dict) -> str:
    if "d" not in c:
        return f"{c['a']} vs {c['b']}: {c['why']}"
    return f"{c['a']} − {c['b']} = {c['d']:+.2f} (pooled std {c['pooled_std']:.2f}, t {c['t']:.1f})"


def commit(where: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=where).stdout.strip() or "unknown"
