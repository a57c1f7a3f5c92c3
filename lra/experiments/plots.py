"""PNG figures of `lra report` and `lra approx` (matplotlib: the `plot` extra, imported lazily).

- bubble chart, as AdaMRA Figure 1 (and LRA Figure 3): x = training examples/s, y = LRA
  average accuracy, bubble area proportional to peak memory;
- step time and peak memory against sequence length, log-log, from bench.json;
- training curves: validation accuracy against step, one line per run (metrics.jsonl);
- approximation error against softmax temperature, one line per method.

Every figure is saved atomically (temporary file + rename).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

from lra.atomic import atomic_path
from lra.training.workdir import read_metrics

MIB = 2**20


def style(i: int) -> dict:
    """Line style of the i-th series: the ten default colours, then dashed, then dotted."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3]}


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def bubble(rows: list[dict], title: str, path: Path) -> Path:
    """rows: model, examples_per_second, avg_accuracy (%), peak_memory_bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    biggest = max(r["peak_memory_bytes"] for r in rows)
    for i, r in enumerate(rows):
        area = 2000 * r["peak_memory_bytes"] / biggest
        ax.scatter(r["examples_per_second"], r["avg_accuracy"], s=area, alpha=0.5,
                   color=style(i)["color"])
        ax.annotate(r["model"], (r["examples_per_second"], r["avg_accuracy"]),
                    ha="center", va="center", fontsize=8)
    ax.set_xlabel("training speed (examples/s)")
    ax.set_ylabel("LRA average accuracy (%)")
    ax.set_title(f"{title}\n(bubble area: peak memory)", fontsize=10)
    ax.margins(0.15)
    return _save(fig, path)


def scaling(group, path_time: Path, path_memory: Path) -> list[Path]:
    """Step time and peak memory against length, log-log, one line per model."""
    plt = _pyplot()
    out = []
    for key, label, scale, path in (("step_seconds", "step time (s)", 1.0, path_time),
                                    ("peak_memory_bytes", "peak memory (MiB)", MIB, path_memory)):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for i, model in enumerate(group.models):
            points = [(n, group.rows[(model, n)][key] / scale) for n in group.lengths
                      if group.rows.get((model, n), {}).get("status") == "ok"]
            if points:
                ax.plot([n for n, _ in points], [y for _, y in points], marker="o", label=model,
                        **style(i))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.set_title(f"{group.task}, size={group.size}, batch {group.batch}", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        out.append(_save(fig, path))
    return out


def curves(series: dict[str, list[dict]], title: str, path: Path) -> Path:
    """Validation accuracy against step: {label: metrics.jsonl rows}, one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (label, rows) in enumerate(series.items()):
        ax.plot([r["step"] for r in rows], [100 * r["val_accuracy"] for r in rows], label=label,
                **style(i))
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def errors(table: dict[str, dict[float, float]], title: str, path: Path,
           ylabel: str = "relative error ||O' - O||_F / ||O||_F") -> Path:
    """Relative error against temperature, log-log: {method: {temperature: error}}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (method, points) in enumerate(table.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=method, **style(i))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("softmax temperature T (logits q·k / (sqrt(d) T))")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def report_figures(report, out: Path) -> list[Path]:
    """Every figure of an `lra report`: bubbles, scaling, training curves."""
    paths = []
    titles = {t.name: t.title for t in report.tables}
    for name, rows in report.smat.items():
        paths.append(bubble(rows, titles[name], out / f"bubble_{name[len('smat_'):]}.png"))
    for group in report.groups:
        paths += scaling(group, out / f"time_vs_length_{group.name}.png",
                         out / f"memory_vs_length_{group.name}.png")
    by_task = defaultdict(dict)
    for run in sorted(report.runs, key=lambda r: (r.key, r.summary.get("seed", 0))):
        rows = [r for r in read_metrics(run.path) if "val_accuracy" in r]
        if rows:
            by_task[run.key[:2]][f"{run.key[2]} seed{run.summary.get('seed', '?')}"] = rows
    for (size, task), series in sorted(by_task.items()):
        paths.append(curves(series, f"{task}, size={size}", out / f"curves_{task}_{size}.png"))
    return paths
