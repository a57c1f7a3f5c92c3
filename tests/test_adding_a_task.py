"""docs/adding-a-task.md, step by step: the task module from the page registers, trains at
size=smoke (as a plugin and as a config file), sweeps, and gets its own report column.

The module is written to a temporary folder and run in subprocesses, so the registry of
this test process (shared with the other tests of its worker) never holds it.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import doc_blocks
import pytest

from lra import cli, data

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding-a-task.md"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    (code,) = [body for info, body in doc_blocks.blocks(DOC, "python") if "majority.py" in info]
    out = tmp_path_factory.mktemp("task")
    (out / "majority.py").write_text(code)
    return out


def lra(args, folder, tmp_path, plugin=True):
    env = {**os.environ, "LRA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    if plugin:
        env.update(PYTHONPATH=str(folder), LRA_PLUGINS="majority")
    out = subprocess.run([sys.executable, "-m", "lra.cli", *args], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_task_registers_trains_sweeps_and_reports(folder, tmp_path):
    listed = lra(["list"], folder, tmp_path)
    assert re.search(r"majority\s*│\s*majority", listed)

    sweep = tmp_path / "sweep"
    lra(["sweep", "--tasks", "majority", "--models", "softmax,local", "--sizes", "smoke",
         "--seeds", "0", "--workdir", str(sweep)], folder, tmp_path)
    summary = json.loads((sweep / "majority/smoke/softmax/seed0/summary.json").read_text())
    assert summary["status"] == "ok" and summary["task"] == "majority" and summary["steps"] == 60
    # a positive control: counting 1s against 2s is learnable in 60 steps
    assert summary["best_val_acc"] > 0.6

    lra(["report", str(sweep), "--out", str(tmp_path / "report")], folder, tmp_path)
    assert "| Majority |" in (tmp_path / "report" / "accuracy_smoke.md").read_text()
    header, *rows = (tmp_path / "report" / "accuracy_smoke.csv").read_text().splitlines()
    records = [dict(zip(header.split(","), row.split(","), strict=True)) for row in rows]
    assert sorted(r["model"] for r in records) == ["local", "softmax"]
    assert all(float(r["majority_mean"]) > 0 for r in records)


def test_a_config_file_path_is_enough(folder, tmp_path):
    lra(["train", "--config", f"{folder / 'majority.py'}:size=smoke", "--workdir", "run",
         "--config.train.steps=20"], folder, tmp_path, plugin=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["task"] == "majority"


def test_the_documented_commands_parse():
    lines = [line for info, body in doc_blocks.blocks(DOC, "bash") for line in body.splitlines()
             if line.startswith("lra ")]
    assert {shlex.split(line)[1] for line in lines} == {"list", "train", "sweep", "report"}
    for line in lines:
        rest, _ = cli.split_overrides(shlex.split(line.split("#")[0])[1:])
        cli.parser().parse_args(rest)


def test_no_example_task_is_left_registered():
    assert "majority" not in data.names()
