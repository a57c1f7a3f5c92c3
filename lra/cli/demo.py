"""`lra demo` (`make demo`): generated ListOps at size=cpu, a few methods, a result table."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lra import attention, data
from lra.data import store
from lra.training import config
from lra.training.workdir import write_json

DEMO_METHODS = ("softmax", "topk", "adamra")


def majority_baseline(c) -> float:
    labels = np.asarray(store.read_split(data.open_dataset(c), "test")["labels"])
    return float(np.bincount(labels).max() / len(labels))


def markdown(rows: list[dict], majority: float, seconds: float) -> str:
    lines = ["| model | test acc | best val acc | steps | examples/s | peak MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['test_acc']:.1f} | {100 * r['best_val_acc']:.1f} "
                     f"| {r['steps']} | {r['examples_per_second']:.0f} "
                     f"| {r['peak_memory_bytes'] / 2**20:.1f} |")
    lines.append(f"| majority class | {100 * majority:.1f} | | | | |")
    return "\n".join(lines) + f"\n\nListOps (generated, size=cpu); wall time {seconds:.0f} s.\n"


def run(workdir: str, methods: list[str], steps: int, overrides: dict[str, str],
        train: Callable[[object, Path], dict]) -> dict:
    """Train each method with `train(config, workdir)` and write results.json / results.md;
    returns their content (rows, majority_class_acc, wall_seconds)."""
    start = time.perf_counter()
    methods = methods or [m for m in DEMO_METHODS if m in attention.names()]
    if steps:
        overrides = {**overrides, "train.steps": str(steps)}
    rows = []
    for method in methods:
        c = config.load(f"listops:model={method},size=cpu", overrides)
        rows.append(train(c, Path(workdir) / method))
    majority = majority_baseline(c)
    seconds = time.perf_counter() - start
    result = {"rows": rows, "majority_class_acc": majority, "wall_seconds": seconds}
    write_json(Path(workdir) / "results.json", result)
    (Path(workdir) / "results.md").write_text(markdown(rows, majority, seconds))
    return result
