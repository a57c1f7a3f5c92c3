"""Claim: AdaMRA's ablations (Zhang et al. 2021, Tables 4-5): multi-resolution beats single
resolution, learned routing beats random routing, and phi = ReLU beats ELU+1.

The grid is configs/claims_adamra.py (11 models x Text, ListOps x seeds 0, 1, 2 at
size=cpu; its softmax runs are the top-k claim's, so one workdir serves both):

    python scripts/claims_record.py --restore --runs runs/claims --to results/cpu/claims/records
    lra sweep --from configs/claims_adamra.py --workdir runs/claims --jobs 2
    python scripts/claims_record.py --runs runs/claims --to results/cpu/claims/records
    python scripts/claim_adamra_ablations.py --runs results/cpu/claims/records --out results/cpu/claims

(`--jobs 2` trains two runs at once, one per core; a rerun resumes; the record keeps the
finished runs' summaries in git, so the grid can grow over many checkouts.) Each row
is the test accuracy (%) of the best-validation checkpoint, mean ± std (ddof=1) over seeds,
of the finished runs (as `lra report` counts them), with the paper's Text figure beside it.

Each conclusion compares pairs of rows (A should beat B) per task under the t-rule of
lra/experiments/claims.py; a conclusion is reproduced when all its pairs are, not
reproduced when any is not, undecided otherwise.

Writes OUT/adamra_ablations.json (every accuracy, the verdicts, command, commit, date,
seeds), OUT/adamra_ablations.md (the table) and OUT/adamra_ablations.png (bars, std error
bars, the paper's Text figures as markers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from lra.experiments.claims import (
    T_MIN,
    accuracies,
    cell,
    combine,
    commit,
    compare,
    pair_text,
    records,
    records_line,
    stats,
)
from lra.training.config import load_file

GRID = Path(__file__).resolve().parents[1] / "configs" / "claims_adamra.py"
# (claim, pairs (A, B): A should beat B). Table 4's single-resolution models 9 and 10 are
# compared with model 3, which has their 3 heads; the routing with both gates.
CONCLUSIONS = (
    ("multi-resolution beats single-resolution (Table 4: model 3 vs models 9, 10)",
     (("adamra", "adamra-r2x3"), ("adamra", "adamra-r4x3"))),
    ("learned routing beats random (Table 5: Rand vs AdaMRA, with either gate)",
     (("adamra-mask", "adamra-rand"), ("adamra", "adamra-rand"))),
    ("ReLU beats ELU+1 as the feature map (Table 5)", (("adamra", "adamra-elu"),)),
)


def conclusions(acc: dict, tasks) -> list[dict]:
    out = []
    for claim, pairs in CONCLUSIONS:
        per_task = {}
        for task in tasks:
            checks = [{"a": a, "b": b, **compare(acc.get((task, a), []), acc.get((task, b), []))}
                      for a, b in pairs]
            per_task[task] = {"verdict": combine([c["verdict"] for c in checks]), "pairs": checks}
        out.append({"claim": claim, "tasks": per_task})
    return out


def markdown(grid, acc: dict, concl: list[dict], meta: dict) -> list[str]:
    tasks = grid.TASKS
    lines = [f"### AdaMRA's ablations (Zhang et al. 2021, Tables 4-5), size={meta['size']}", "",
             "| table | paper row | model | paper Text | "
             + " | ".join(f"{t} (harness)" for t in tasks) + " |",
             "|---|---|---|---|" + "---|" * len(tasks)]
    for table, row, model, paper in grid.ROWS:
        cells = [cell(stats(acc.get((t, model), []))) for t in tasks]
        lines.append(f"| {table} | {row} | `{model}` | {'—' if paper is None else paper} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Harness: test accuracy (%) of the best-validation checkpoint, mean ± std "
              f"(ddof=1) over the finished seeds of {', '.join(map(str, grid.SEEDS))}, learned or not "
              "(n: how many). Paper: its Text column "
              "(IMDb at 4K bytes, the Nystromformer protocol), a different scale.", "",
              "Conclusions, per task. Rule: for A should beat B, d = mean(A) − mean(B), "
              f"t = d / (pooled std · sqrt(1/n_A + 1/n_B)); reproduced when t ≥ {T_MIN:g}, not "
              "reproduced when d ≤ 0, undecided otherwise (or under 2 seeds); a conclusion is "
              "reproduced when all its pairs are, not reproduced when any is not.", ""]
    for c in concl:
        said = "; ".join(f"{task}: **{v['verdict']}** ("
                         + ", ".join(pair_text(p) for p in v["pairs"]) + ")"
                         for task, v in c["tasks"].items())
        lines.append(f"- {c['claim']}: {said}.")
    lines += ["", f"Command: `{meta['command']}` on runs from `lra sweep --from "
              f"configs/claims_adamra.py`, commit {meta['commit']}, {meta['date']}. "
              + records_line(meta["records"])]
    return lines


def plot(grid, acc: dict, size: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{model} ({'control' if table == 'control' else table[-1] + ': ' + row.split(':')[0]})"
              for table, row, model, _ in grid.ROWS]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(grid.TASKS)
    for i, task in enumerate(grid.TASKS):
        s = [stats(acc.get((task, model), [])) for _, _, model, _ in grid.ROWS]
        xs = [j + (i - (len(grid.TASKS) - 1) / 2) * width for j in range(len(grid.ROWS))]
        ax.bar(xs, [x["mean"] or 0 for x in s], width, yerr=[x["std"] or 0 for x in s],
               capsize=3, label=f"{task} (harness)")
    paper = [(j, p) for j, (_, _, _, p) in enumerate(grid.ROWS) if p is not None]
    ax.plot([j for j, _ in paper], [p for _, p in paper], "k*", label="paper Text")
    ax.set_xticks(range(len(grid.ROWS)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"AdaMRA ablations (Tables 4-5), size={size}; bars: mean ± std over seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(runs: Path, out: Path, command: str, size: str | None = None) -> dict:
    """Write the table, JSON and plot of the runs under `runs` (at `size`, by default the
    grid's) to `out`; returns the JSON."""
    grid = load_file(GRID)
    size = size or grid.SIZE
    acc = accuracies([runs], size, grid.TASKS, grid.MODELS)
    if not acc:
        raise SystemExit(f"no finished size={size} runs of configs/claims_adamra.py under {runs}")
    concl = conclusions(acc, grid.TASKS)
    meta = {"claim": "AdaMRA ablations (Zhang et al. 2021, Tables 4-5)", "command": command,
            "commit": commit(GRID.parent), "date": datetime.date.today().isoformat(), "size": size,
            "seeds": list(grid.SEEDS), "records": records([runs], size, grid.TASKS, grid.MODELS),
            "rule": {"t_min": T_MIN},
            "rows": [{"table": table, "paper_row": row, "model": model, "paper_text": paper,
                      **{task: stats(acc.get((task, model), [])) for task in grid.TASKS}}
                     for table, row, model, paper in grid.ROWS],
            "conclusions": concl}
    out.mkdir(parents=True, exist_ok=True)
    (out / "adamra_ablations.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "adamra_ablations.md").write_text("\n".join(markdown(grid, acc, concl, meta)) + "\n")
    plot(grid, acc, size, out / "adamra_ablations.png")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("results/cpu/claims/records"),
                   help="the record tree scripts/claims_record.py keeps")
    p.add_argument("--out", type=Path, default=Path("results/cpu/claims"))
    p.add_argument("--size", default=None, help="the runs' size (default the grid's, cpu)")
    args = p.parse_args()
    build(args.runs, args.out, " ".join(["python", *sys.argv]), args.size)
    print((args.out / "adamra_ablations.md").read_text())


if __name__ == "__main__":
    main()
