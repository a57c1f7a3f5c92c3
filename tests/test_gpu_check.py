"""scripts/gpu_check.sh --dry-run: the GPU check's every part, tiny and on CPU, end to end, so
that the script cannot rot between the rare GPU runs; and the paper column of `lra bench`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lra.experiments import bench

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["injected_fail", "injected_timeout", "device", "tests", "kernels", "bench_128", "tables"]


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out),
                           "--inject", "fail,timeout"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr   # 1: the injected parts failed
    return out, json.loads((out / "parts.json").read_text())


@pytest.mark.slow
def test_a_failing_part_is_recorded_and_the_others_still_run(check):
    _, manifest = check
    parts = {p["name"]: p for p in manifest["parts"]}
    assert list(parts) == PARTS
    assert parts["injected_fail"]["status"] == "failed"
    assert "injected failure" in parts["injected_fail"]["error_tail"][-1]
    assert parts["injected_timeout"]["status"] == "timeout"
    assert parts["injected_timeout"]["seconds"] < 10
    for name in PARTS[2:]:
        assert parts[name]["status"] == "ok", parts[name].get("error_tail")
        assert {"returncode", "seconds", "timeout", "command", "log"} <= parts[name].keys()
    counts = parts["tests"]["counts"]
    assert counts["source"] == "tests.xml" and counts["passed"] >= 1 and counts["failed"] == 0
    assert {"command", "commit", "started", "seconds", "dry_run", "deadline_seconds"} <= manifest.keys()
    assert manifest["dry_run"] and manifest["backend"] == "cpu" and manifest["pallas"] == "interpreted"
    assert manifest["device"] and manifest["jax"]


@pytest.mark.slow
def test_every_part_writes_its_files(check):
    out, _ = check
    kernels = json.loads((out / "kernels.json").read_text())
    assert kernels["meta"]["interpret"] is True and "peak_tflops" in kernels["meta"]
    impls = {(r["op"], r["impl"]) for r in kernels["results"]}
    assert {("flash", "pallas"), ("flash", "xla"), ("flash", "jax.nn-xla"), ("block_sparse", "pallas"),
            ("block_sparse", "jax.nn-xla"), ("linear", "pallas"), ("linear", "xla")} <= impls
    for row in kernels["results"]:
        assert row["status"] == "ok", row
        assert row["length"] == 128 and row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
        assert row["fwd_bwd_tflops"] > 0 and row["fwd_bwd_memory_bytes"] > 0
    assert "## block_sparse" in (out / "kernels.md").read_text()

    b = json.loads((out / "bench_128.json").read_text())
    assert b["task"] == "text" and b["command"].startswith("lra bench")
    [row] = b["results"]
    assert row["model"] == "softmax" and row["status"] == "ok" and row["step_seconds"] > 0
    assert b["device"] == row["device"]

    assert "| softmax |" in (out / "bench.md").read_text()
    assert "| Transformer | 1007 | 1.0× |" in (out / "bench.md").read_text()
    smat = json.loads((out / "smat.json").read_text())
    [rows] = smat.values()
    assert rows[0]["model"] == "softmax" and rows[0]["avg_accuracy"] == pytest.approx(46.05)
    assert "### SMAT" in (out / "smat.md").read_text()
    summary = (out / "summary.md").read_text()
    assert "| injected_fail | failed |" in summary and "### SMAT" in summary
    assert (out / "tests.xml").exists() and (out / "tests.log").exists()


def test_paper_table_puts_our_speed_ups_beside_the_papers():
    def row(model, seconds, memory, length=4096):
        return {"model": model, "length": length, "status": "ok", "step_seconds": seconds,
                "examples_per_second": 16 / seconds, "peak_memory_bytes": memory}

    result = {"task": "text", "size": "nystrom", "batch": 16, "device": "H100", "results": [
        row("softmax", 0.5, 4e9), row("linear", 0.05, 1e9), row("adamra-1/4..1/32", 0.1, 2e9),
        row("local", 0.1, 1e9), row("softmax", 0.1, 1e9, length=1024),
        {"model": "reformer", "length": 4096, "status": "oom"}]}
    table = bench.paper_table(result)
    cells = {r[0]: r for r in table.rows}
    assert list(cells) == ["softmax", "linear", "adamra-1/4..1/32", "local", "reformer"]
    assert cells["softmax"][1:] == ["500.0", "1.00×", "1.00×", "Transformer", "1007", "1.0×"]
    assert cells["linear"][1:] == ["50.0", "10.00×", "0.25×", "Linear Trans.", "69", "14.6×"]
    assert cells["adamra-1/4..1/32"][4:] == ["AdaMRA (Ours)", "98", "10.3×"]
    assert cells["local"][4:] == ["–", "", ""]
    assert cells["reformer"][1] == "OOM" and cells["reformer"][4] == "Reformer"
    assert bench.paper_table(result, 2048) is None


def test_bench_checkpoints_every_row_without_asking_jax_for_the_device(monkeypatch):
    """A bench part cut off by its timeout keeps its rows; the parent process never holds the
    GPU that its row processes measure."""
    def run_one(task, model, length, *args):
        if model == "softmax":
            return {"model": model, "length": length, "status": "oom"}
        return {"model": model, "length": length, "status": "ok", "step_seconds": 0.1,
                "examples_per_second": 20.0, "peak_memory_bytes": 100, "device": "H100",
                "backend": "gpu"}

    def no_device():
        raise AssertionError("the bench parent asked jax for its device")

    monkeypatch.setattr(bench, "run_one", run_one)
    monkeypatch.setattr(bench.jax, "devices", no_device)
    saved = []
    result = bench.run("text", ["softmax", "linear"], [64], batch=2, size="smoke",
                       checkpoint=saved.append)
    assert [len(s["results"]) for s in saved] == [1, 2]
    assert saved[0]["device"] == "?" and saved[1]["device"] == "H100"
    assert result["device"] == "H100" and result["backend"] == "gpu"


def test_dense_masked_block_sparse_is_the_block_sparse_attention(monkeypatch):
    """bench_kernels' dense-masked baseline for block_sparse computes the same attention as the
    op's reference (a ragged last block included), so the speed ratio compares like with like."""
    import importlib.util

    import jax.numpy as jnp
    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "scripts/bench_kernels.py")
    bench_kernels = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_kernels", bench_kernels)   # for its dataclass
    spec.loader.exec_module(bench_kernels)
    case = bench_kernels.make_case("block_sparse", 2, 200, 2, 16, jnp.float32, on_device=False)
    want = case.impls["xla"](*case.inputs)
    np.testing.assert_allclose(case.impls["jax.nn-xla"](*case.inputs), want, atol=1e-5)
