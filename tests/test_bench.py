"""lra bench: fresh-process measurements, recorded failures, the scaling fit."""

import json
import subprocess

import pytest

from lra import attention, cli
from lra.errors import LRAError
from lra.experiments import bench


def test_bench_measures_and_records_failures(tmp_path):
    rows = []
    result = bench.run("listops", ["softmax"], [32, 64], batch=2, size="smoke", steps=2,
                       warmup=1, report=rows.append)
    assert [r["status"] for r in result["results"]] == ["ok", "ok"] and len(rows) == 2
    for r in result["results"]:
        assert r["step_seconds"] > 0 and r["peak_memory_bytes"] > 0
        assert r["memory_method"] == "xla_memory_analysis"
    assert result["scaling_exponents"]["softmax"] is not None
    assert result["memory_exponents"]["softmax"] is not None
    failed = bench.run_one("listops", "softmax", 32, 2, "smoke", 1, 0, {"model.pooling": "bogus"}, 300)
    assert failed["status"] == "failed" and failed["error"]


def test_scaling_exponent_fits_a_power_law():
    rows = [{"length": n, "step_seconds": 3e-6 * n**2, "status": "ok"} for n in (512, 1024, 4096)]
    rows.append({"length": 8192, "status": "oom"})
    assert bench.scaling_exponent(rows) == pytest.approx(2.0)
    for r, n in zip(rows, (512, 1024, 4096), strict=False):
        r["peak_memory_bytes"] = 1000 * n
    assert bench.scaling_exponent(rows, "peak_memory_bytes") == pytest.approx(1.0)


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
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    result = bench.run("listops", ["softmax", "linear"], [32], batch=2, size="smoke", rounds=3)
    assert calls == ["softmax", "linear"] * 3
    soft, lin = result["results"]
    assert soft["step_seconds"] == 4.0 and soft["round_step_seconds"] == [3.0, 5.0, 4.0]
    assert soft["examples_per_second"] == 2 / 4.0  # batch / median step
    assert lin["step_seconds"] == 1.0 and result["rounds"] == 3
    assert "xla_flags" in result  # XLA:CPU fusion flags change step times: recorded
    assert result["glibc_tunables"] == "glibc.malloc.arena_max=1"  # so do malloc's settings
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


def test_models_expand_groups_and_variants():
    assert bench.model_names("all") == attention.names()
    assert bench.model_names("table2") == [
        "softmax", "bigbird", "reformer", "linformer", "linear", "performer-32", "nystrom-32",
        "adamra-1/2..1/16", "adamra-1/4..1/32"]  # AdaMRA Table 2's rows, in its order
    assert bench.model_names("performer-32,softmax,table2")[:3] == [
        "performer-32", "softmax", "bigbird"]  # in order, each once
    for bad in ("nope", "performer-33", ",", ""):
        with pytest.raises(LRAError, match="--models: unknown model"):
            bench.model_names(bad)


def test_variants_run_their_method_with_their_hyperparameters():
    def kwargs(model, overrides=None):
        c = bench.bench_config("text", model, 4096, 8, "nystrom", overrides or {})
        return c.model.attention, c.model.attention_kwargs.to_dict()

    assert kwargs("performer-32") == ("performer", {"nb_features": 32})
    assert kwargs("performer") == ("performer", {"nb_features": 256})
    # on top of the method's preset: the 35-wide convolution of the Nystromformer protocol stays
    assert kwargs("nystrom-32") == ("nystrom", {"num_landmarks": 32, "conv_kernel_size": 35})
    assert kwargs("adamra-1/2..1/16") == ("adamra", {"compression_rates": (0.5, 0.25, 0.125, 0.0625)})
    assert kwargs("adamra-1/4..1/32") == ("adamra",
                                          {"compression_rates": (0.25, 0.125, 0.0625, 0.03125)})
    # --config overrides come last
    assert kwargs("performer-32", {"model.attention_kwargs.nb_features": "64"})[1] == {
        "nb_features": 64}
    with pytest.raises(LRAError, match="unknown model 'nope'"):
        kwargs("nope")


def test_table2_rows_carry_the_variants_names(monkeypatch):
    def fake(task, model, length, *args):
        return {"model": model, "length": length, "status": "ok", "step_seconds": length / 1e3,
                "compile_seconds": 1.0, "examples_per_second": 1.0, "peak_memory_bytes": 8}

    monkeypatch.setattr(bench, "run_one", fake)
    models = bench.model_names("table2")
    result = bench.run("text", models, [1024, 2048], batch=8, size="nystrom")
    assert [r["model"] for r in result["results"]] == [m for m in models for _ in (1, 2)]
    assert result["scaling_exponents"]["performer-32"] == pytest.approx(1.0)


def test_a_variant_is_measured_under_its_name():
    row = bench.measure("listops", "performer-32", 32, 2, size="smoke", steps=1, warmup=0)
    assert row["status"] == "ok" and row["model"] == "performer-32"
    assert row["attention"] == "performer" and row["attention_kwargs"] == {"nb_features": 32}


def test_cli_takes_variants(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--task", "listops", "--size", "smoke", "--models", "performer-32",
                     "--lengths", "32", "--batch", "2", "--steps", "1", "--warmup", "0",
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["model"] == "performer-32"


@pytest.mark.parametrize("returncode, stderr, status", [
    (-9, "", "oom"),
    (1, "RuntimeError: CUDA out of memory", "oom"),
    (1, "ValueError: bad shape", "failed"),
])
def test_a_crashed_worker_is_recorded_as_oom_or_failed(monkeypatch, returncode, stderr, status):
    done = subprocess.CompletedProcess([], returncode, stdout="", stderr=stderr)
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: done)
    row = bench.run_one("listops", "softmax", 32, 2, "smoke", 1, 0, {}, 60)
    assert row["status"] == status and row["length"] == 32
