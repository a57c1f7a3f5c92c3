"""lra bench: fresh-process measurements, recorded failures, the scaling fit."""

import json

import pytest

from lra import bench, cli
from lra.errors import LRAError


def test_bench_measures_and_records_failures(tmp_path):
    rows = []
    result = bench.run("listops", ["softmax"], [32, 64], batch=2, size="smoke", steps=2,
                       warmup=1, report=rows.append)
    assert [r["status"] for r in result["results"]] == ["ok", "ok"] and len(rows) == 2
    for r in result["results"]:
        assert r["step_seconds"] > 0 and r["peak_memory_bytes"] > 0
        assert r["memory_method"] == "xla_memory_analysis"
    assert result["scaling_exponents"]["softmax"] is not None
    failed = bench.run_one("listops", "softmax", 32, 2, "smoke", 1, 0, {"model.pooling": "bogus"}, 300)
    assert failed["status"] == "failed" and failed["error"]


def test_scaling_exponent_fits_a_power_law():
    rows = [{"length": n, "step_seconds": 3e-6 * n**2, "status": "ok"} for n in (512, 1024, 4096)]
    rows.append({"length": 8192, "status": "oom"})
    assert bench.scaling_exponent(rows) == pytest.approx(2.0)


def test_bad_lengths_and_models_are_clear_errors(capsys, tmp_path):
    with pytest.raises(LRAError, match="--lengths"):
        bench.parse_lengths("1k")
    assert cli.main(["bench", "--models", "nope", "--out", str(tmp_path / "b.json")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_cli_writes_bench_json(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--task", "listops", "--size", "smoke", "--models", "softmax",
                     "--lengths", "32", "--batch", "2", "--steps", "1", "--warmup", "0",
                     "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["command"].startswith("lra bench") and data["results"][0]["status"] == "ok"


def test_rounds_interleave_and_take_the_median(monkeypatch):
    calls = []
    times = iter([3.0, 1.0, 5.0, 1.0, 4.0, 1.0])  # softmax, linear, softmax, linear, ...

    def fake(task, model, length, *args):
        calls.append(model)
        return {"model": model, "length": length, "status": "ok", "step_seconds": next(times),
                "compile_seconds": 1.0, "examples_per_second": 1.0, "peak_memory_bytes": 8}

    monkeypatch.setattr(bench, "run_one", fake)
    result = bench.run("listops", ["softmax", "linear"], [32], batch=2, size="smoke", rounds=3)
    assert calls == ["softmax", "linear"] * 3
    soft, lin = result["results"]
    assert soft["step_seconds"] == 4.0 and soft["round_step_seconds"] == [3.0, 5.0, 4.0]
    assert soft["examples_per_second"] == 2 / 4.0  # batch / median step
    assert lin["step_seconds"] == 1.0 and result["rounds"] == 3
    assert "xla_flags" in result  # XLA:CPU fusion flags change step times: recorded
    with pytest.raises(LRAError, match="--rounds"):
        bench.run("listops", ["softmax"], [32], batch=2, size="smoke", rounds=0)


def test_a_failed_round_fails_the_row_and_is_not_retried(monkeypatch):
    calls = []

    def fake(task, model, length, *args):
        calls.append(model)
        return {"model": model, "length": length, "status": "oom"}

    monkeypatch.setattr(bench, "run_one", fake)
    result = bench.run("listops", ["softmax"], [32], batch=2, size="smoke", rounds=3)
    assert calls == ["softmax"] and result["results"][0]["status"] == "oom"
