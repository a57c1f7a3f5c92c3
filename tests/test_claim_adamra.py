"""Issue 19, claim 2: the sweep file of AdaMRA's ablations and its table builder
(scripts/claim_adamra_ablations.py), on fake run trees and on a smoke sweep."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lra import cli
from lra.experiments import claims, sweep

ROOT = Path(__file__).resolve().parents[1]
GRID = str(ROOT / "configs" / "claims_adamra.py")
spec = importlib.util.spec_from_file_location("claim_adamra_ablations",
                                              ROOT / "scripts" / "claim_adamra_ablations.py")
builder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(builder)

MODELS = ["adamra-r4-32", "adamra", "adamra-r4-8-16-32", "adamra-r2x3", "adamra-r4x3", "softmax",
          "adamra-rand", "adamra-softmax", "adamra-elu", "adamra-mask"]
# The paper's Text column (Zhang et al. 2021, Table 4 models 1, 3, 5, 9, 10; Table 5).
PAPER_TEXT = [66.8, 68.4, 68.2, 64.11, 63.38, 65.02, 64.64, 65.56, 66.33, 68.44, None]


def test_the_grid_is_every_model_task_and_seed_once_and_each_config_loads():
    runs = sweep.from_file(GRID)
    assert sorted(r.name for r in runs) == sorted(
        f"{t}/cpu/{m}/seed{s}" for t in ("text", "listops") for m in MODELS for s in (0, 1, 2))
    assert all(r.overrides == () for r in runs)
    sweep.check([r for r in runs if r.seed == 0 and r.task == "listops"])
    grid = builder.load_file(Path(GRID))
    assert [row[3] for row in grid.ROWS] == PAPER_TEXT


def fake_tree(root: Path, accuracy) -> None:
    """A run tree of the grid at size=cpu whose test accuracy is accuracy(task, model, seed)."""
    for task in ("text", "listops"):
        for model in MODELS:
            for seed in (0, 1, 2):
                folder = root / task / "cpu" / model / f"seed{seed}"
                folder.mkdir(parents=True)
                (folder / "summary.json").write_text(json.dumps(
                    {"task": task, "model": model, "size": "cpu", "seed": seed, "status": "ok",
                     "test_acc": accuracy(task, model, seed), "learned": True}))


def verdicts(meta: dict) -> list[dict[str, str]]:
    return [{t: v["verdict"] for t, v in c["tasks"].items()} for c in meta["conclusions"]]


def test_the_conclusions_can_be_reproduced_not_reproduced_or_undecided(tmp_path):
    noise = (0.0, 0.002, -0.002)
    score = {"adamra": 0.70, "adamra-mask": 0.69, "adamra-r2x3": 0.60, "adamra-r4x3": 0.61,
             "adamra-rand": 0.62, "adamra-elu": 0.65}
    # Text: the paper's orderings, well apart. ListOps: reversed (single resolution, random
    # routing and ELU+1 ahead).
    fake_tree(tmp_path / "runs", lambda task, model, seed: noise[seed] + (
        score.get(model, 0.5) if task == "text" else 1.2 - score.get(model, 0.5)))
    meta = builder.build(tmp_path / "runs", tmp_path / "out", "test")
    assert verdicts(meta) == [{"text": "reproduced", "listops": "not reproduced"}] * 3
    md = (tmp_path / "out" / "adamra_ablations.md").read_text()
    assert "| Table 5 | ReLU | `adamra` | 68.44 | 70.00 ± 0.20 (n=3) | 50.00 ± 0.20 (n=3) |" in md
    assert "| Table 4 | 10: (1/4, 1/4, 1/4) | `adamra-r4x3` | 63.38 |" in md
    assert "reproduced when t ≥ 2" in md and "**not reproduced**" in md
    saved = json.loads((tmp_path / "out" / "adamra_ablations.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["commit"] and saved["date"]
    assert (tmp_path / "out" / "adamra_ablations.png").stat().st_size > 0


def test_a_lead_within_the_seed_spread_is_undecided():
    # d = 0.5, pooled std 1, t = 0.61: undecided; d = 2, std 0.5: t = 4.9, reproduced
    assert claims.compare([70.5, 69.5, 71.5], [70, 69, 71])["verdict"] == "undecided"
    assert claims.compare([72, 71.5, 72.5], [70, 69.5, 70.5])["verdict"] == "reproduced"
    assert claims.compare([70, 71, 69], [70, 71, 69])["verdict"] == "not reproduced"
    assert claims.compare([70], [60, 61])["verdict"] == "undecided"
    assert claims.combine(["reproduced", "undecided"]) == "undecided"


@pytest.mark.slow
def test_a_smoke_sweep_of_a_variant_builds_the_table(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    assert cli.main(["sweep", "--tasks", "listops", "--models", "adamra-rand",
                     "--sizes", "smoke", "--seeds", "0", "--workdir", str(runs),
                     "--config.train.steps=1", "--config.train.eval_every=1"]) == 0
    summary = json.loads((runs / "listops/smoke/adamra-rand/seed0/summary.json").read_text())
    assert (summary["model"], summary["attention"]) == ("adamra-rand", "adamra")
    saved = json.loads((runs / "listops/smoke/adamra-rand/seed0/config.json").read_text())
    assert saved["model"]["attention_kwargs"] == {"router": "random", "gate": "mask"}
    monkeypatch.setattr(sys, "argv", ["claim", "--runs", str(runs), "--out", str(tmp_path / "o"),
                                      "--size", "smoke"])
    builder.main()
    md = (tmp_path / "o" / "adamra_ablations.md").read_text()
    assert "size=smoke" in md
    rows = {line.split("|")[3].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "(n=1)" in rows["`adamra-rand`"]
    assert "(n=1)" not in rows["`adamra`"]
