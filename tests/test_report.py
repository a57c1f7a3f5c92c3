"""lra report on synthetic run trees and bench.json files: tables, SMAT, plots, bad input."""

import csv
import json
import statistics
from pathlib import Path

import pytest

from lra import cli
from lra.errors import LRAError
from lra.experiments import report

CONFIG = {"task": "?", "size": "cpu", "seed": 0, "model": {"attention": "?", "emb_dim": 64},
          "train": {"steps": 100, "num_devices": 0}, "wandb": {"mode": "disabled"}}


def make_run(root: Path, task, model, seed, acc, size="cpu", status="ok", config=None,
             metrics=True, folder=None, **extra):
    folder = root / task / size / model / (folder or f"seed{seed}")
    folder.mkdir(parents=True)
    summary = {"task": task, "model": model, "size": size, "seed": seed, "status": status,
               "test_acc": acc if status == "ok" else None}
    if status not in ("ok", "stuck"):
        summary["error"] = "RESOURCE_EXHAUSTED: out of memory"
    summary.update(extra)
    (folder / "summary.json").write_text(json.dumps(summary))
    cfg = json.loads(json.dumps(config or CONFIG))
    cfg.update(task=task, size=size, seed=seed)
    cfg["model"]["attention"] = model
    (folder / "config.json").write_text(json.dumps(cfg))
    if metrics and acc is not None:
        rows = [{"step": s, "val_accuracy": acc * s / 20} for s in (10, 20)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def bench_file(path: Path, rows, task="text", size="nystrom", batch=4):
    results = [{"model": m, "length": n, "status": "ok", "examples_per_second": eps,
                "step_seconds": batch / eps, "peak_memory_bytes": mem,
                "memory_method": "xla_memory_analysis"} if eps else
               {"model": m, "length": n, "status": "oom"} for m, n, eps, mem in rows]
    path.write_text(json.dumps({"task": task, "size": size, "batch": batch, "device": "cpu",
                                "lengths": sorted({r[1] for r in rows}), "results": results}))
    return path


def table(rep, prefix):
    (t,) = [t for t in rep.tables if t.name.startswith(prefix)]
    return t


def row(t, model):
    return dict(zip(t.header, next(r for r in t.rows if r[0] == model), strict=True))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.40, 0.60), (0.42, 0.64)]):
        make_run(root, "listops", "softmax", seed, a)
        make_run(root, "pathfinder", "softmax", seed, b)
        make_run(root, "listops", "topk", seed, a + 0.1)
        make_run(root, "pathfinder", "topk", seed, b - 0.1)
    make_run(root, "pathx", "softmax", 0, 0.505)
    make_run(root, "pathx", "topk", 0, 0.7)
    return root


def test_accuracy_table_mean_std_average_and_pathx_fail(tree):
    t = table(report.build([tree], []), "accuracy_cpu")
    assert t.header == ["Model", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X",
                        "Avg"]
    soft = row(t, "softmax")
    assert soft["ListOps"] == "41.00 ± 1.41"  # sample std of 40 and 42
    assert soft["Text"] == "–"
    assert soft["Path-X"] == "FAIL"  # 50.5% is within a point of chance
    assert soft["Avg"] == f"{(41 + 62) / 2:.2f}"  # ListOps and Pathfinder; Path-X excluded
    topk = row(t, "topk")
    assert topk["Path-X"] == "70.00" and topk["Avg"] == f"{(51 + 52) / 2:.2f}"
    assert [r[0] for r in t.rows] == ["softmax", "topk"]
    assert any("ListOps, Pathfinder" in n for n in t.notes)


def learned(flag, **summary):
    """The keys a summary has since chance tracking (listops: 10 classes, majority 20%)."""
    return dict(chance_accuracy=0.2, chance_loss=1.6, learned=flag, **summary)


def test_seed_accounting_counts_every_seed_and_marks_the_stuck_ones(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "listops", "softmax", 0, 0.40, **learned(True))
    make_run(root, "listops", "softmax", 1, None, status="stuck",
             **learned(False, test_acc=0.19, learned_reason="val accuracy at chance"))
    make_run(root, "listops", "softmax", 2, 0.44, **learned(True))
    make_run(root, "listops", "linear", 0, 0.30, **learned(True))
    make_run(root, "listops", "linear", 1, None, status="stuck", **learned(False))  # no test_acc
    make_run(root, "listops", "linear", 1001, 0.32, folder="seed1-retry1",
             **learned(True, reseed_of="listops/cpu/linear/seed1"))
    bench = bench_file(tmp_path / "b.json", [("softmax", 1024, 10.0, 800),
                                             ("linear", 1024, 50.0, 200)])
    rep = report.build([root], [bench])
    t = table(rep, "accuracy_cpu")
    soft = [0.40, 0.19, 0.44]  # every seed, the stuck one included
    std = 100 * statistics.stdev(soft)
    assert row(t, "softmax")["ListOps"] == f"34.33 ± {std:.2f} † (2/3 learned: 42.00)"
    lin = [0.30, 0.20, 0.32]  # the stuck seed without a test accuracy scores chance (20%)
    std = 100 * statistics.stdev(lin)
    assert row(t, "linear")["ListOps"] == f"27.33 ± {std:.2f} † (2/3 learned: 31.00; 1 reseed)"
    assert row(t, "softmax")["Avg"] == "34.33"
    assert "$\\dagger$" in report.latex(t) and "†" not in report.latex(t)
    assert any("every finished seed (status ok or stuck)" in n for n in t.notes)
    assert any("learned unless its best_val_acc is within 1 point" in n for n in t.notes)
    record = next(r for r in t.records if r["model"] == "linear")
    assert (record["listops_seeds"], record["listops_learned"], record["listops_reseeds"]) == (3, 2, 1)
    assert record["listops_mean"] == pytest.approx(100 * statistics.fmean(lin), abs=1e-3)
    assert record["listops_mean_learned"] == pytest.approx(31.0)
    smat = {r["model"]: r["avg_accuracy"] for r in rep.smat["smat_cpu_text_nystrom_b4"]}
    assert smat == pytest.approx({"softmax": 100 * statistics.fmean(soft),
                                  "linear": 100 * statistics.fmean(lin)}, abs=1e-3)
    text = "\n".join(rep.problems)
    assert "softmax/seed1: did not learn (status stuck: val accuracy at chance)" in text
    assert "linear/seed1: did not learn (status stuck)" in text


def test_all_learned_cells_show_their_seed_count(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "listops", "softmax", seed, 0.40 + seed / 50, **learned(True))
    assert row(table(report.build([root], []), "accuracy_cpu"), "softmax")["ListOps"] == \
        "41.00 ± 1.41 (2/2)"


@pytest.mark.parametrize("summary, want", [
    ({"status": "ok"}, True),  # written before chance tracking: learned
    ({"status": "ok", "best_val_acc": 0.205, "chance_accuracy": 0.2}, False),  # within a point
    ({"status": "ok", "best_val_acc": 0.25, "chance_accuracy": 0.2}, True),
    ({"status": "stuck"}, False),
    ({"status": "ok", "learned": False, "best_val_acc": 0.9, "chance_accuracy": 0.2}, False),
])
def test_learned_rule_for_new_and_old_summaries(summary, want):
    assert report.Run(Path("x"), summary, {}).learned is want


def test_writes_markdown_csv_latex_and_plots(tree, tmp_path):
    out = tmp_path / "out"
    bench = bench_file(tmp_path / "bench.json", [
        ("softmax", 1024, 100.0, 400 * 2**20), ("softmax", 2048, 30.0, 1600 * 2**20),
        ("topk", 1024, 90.0, 200 * 2**20), ("topk", 2048, 45.0, 400 * 2**20)])
    assert cli.main(["report", str(tree), "--bench", str(bench), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("accuracy_cpu", "speed_text_nystrom_b4", "smat_cpu_text_nystrom_b4"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.tex"} <= names
    for png in ("bubble_cpu_text_nystrom_b4.png", "time_vs_length_text_nystrom_b4.png",
                "memory_vs_length_text_nystrom_b4.png", "curves_listops_cpu.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    records = list(csv.DictReader((out / "accuracy_cpu.csv").open()))
    assert float(records[0]["listops_mean"]) == pytest.approx(41.0)
    assert records[0]["listops_seeds"] == "2"
    tex = (out / "accuracy_cpu.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "±" not in tex
    md = (out / "report.md").read_text()
    assert "| softmax |" in md and "![bubble_cpu_text_nystrom_b4]" in md
    assert f"Made by `lra report {tree} --bench {bench} --out {out}`" in md
    assert "size=cpu: no runs for Text, Retrieval, Image" in md


def test_speed_table_ratios_and_oom(tmp_path):
    bench = bench_file(tmp_path / "b.json", [
        ("softmax", 1024, 100.0, 400 * 2**20), ("softmax", 4096, None, None),
        ("linformer", 1024, 250.0, 100 * 2**20), ("linformer", 4096, 60.0, 300 * 2**20)])
    t = table(report.build([], [bench]), "speed_")
    assert t.header == ["Model", "speed 1024", "memory 1024", "speed 4096", "memory 4096"]
    assert row(t, "softmax") == {"Model": "softmax", "speed 1024": "100.0 ex/s",
                                 "memory 1024": "400 MiB", "speed 4096": "OOM",
                                 "memory 4096": "OOM"}
    lin = row(t, "linformer")
    assert lin["speed 1024"] == "2.50×" and lin["memory 1024"] == "0.25×"
    assert lin["speed 4096"] == "60.0 ex/s"  # no softmax to divide by: absolute
    assert any("No softmax result at length 4096" in n for n in t.notes)


def test_smat_is_adamra_eq10(tree, tmp_path):
    """SMAT = S + (1 - M) + A with each min-max normalised across the models."""
    root = tree
    for seed in (0, 1):
        make_run(root, "listops", "linear", seed, 0.30)
        make_run(root, "pathfinder", "linear", seed, 0.50)
    bench = bench_file(tmp_path / "b.json", [
        ("softmax", 1024, 100.0, 800), ("softmax", 2048, 20.0, 3200),
        ("topk", 1024, 80.0, 400), ("topk", 2048, 30.0, 1000),
        ("linear", 1024, 300.0, 200), ("linear", 2048, 150.0, 400)])
    rep = report.build([root], [bench])
    rows = {r["model"]: r for r in rep.smat["smat_cpu_text_nystrom_b4"]}
    avg = {"softmax": 51.5, "topk": 51.5, "linear": 40.0}
    speed = {"softmax": 20.0, "topk": 30.0, "linear": 150.0}  # the longest common length: 2048
    memory = {"softmax": 3200, "topk": 1000, "linear": 400}
    norm = lambda d, m: (d[m] - min(d.values())) / (max(d.values()) - min(d.values()))
    for m in avg:
        want = norm(speed, m) + 1 - norm(memory, m) + norm(avg, m)
        assert rows[m]["SMAT"] == pytest.approx(want, abs=1e-3), m
        assert rows[m]["avg_accuracy"] == pytest.approx(avg[m])
    assert [r["model"] for r in rep.smat["smat_cpu_text_nystrom_b4"]] == ["linear", "topk",
                                                                           "softmax"]
    assert "length 2048" in table(rep, "smat_").title


def test_smat_falls_back_to_the_tasks_every_model_finished(tmp_path):
    """Only softmax has Text: SMAT compares the models on ListOps, and says so."""
    root = tmp_path / "runs"
    make_run(root, "listops", "softmax", 0, 0.30)
    make_run(root, "text", "softmax", 0, 0.60)
    make_run(root, "listops", "linear", 0, 0.20)
    bench = bench_file(tmp_path / "b.json", [("softmax", 1024, 10.0, 800),
                                             ("linear", 1024, 50.0, 200)])
    rep = report.build([root], [bench])
    rows = {r["model"]: r for r in rep.smat["smat_cpu_text_nystrom_b4"]}
    assert rows["softmax"]["avg_accuracy"] == pytest.approx(30.0)
    assert rows["linear"]["avg_accuracy"] == pytest.approx(20.0)
    assert any("mean over ListOps." in note for note in table(rep, "smat_").notes)


def test_smat_ties_normalise_to_one_half():
    assert report.min_max({"a": 3.0, "b": 3.0}) == {"a": 0.5, "b": 0.5}
    assert report.min_max({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}


# AdaMRA (Zhang et al. 2021) Table 3: speed (examples/s) and peak memory (MB) of a training
# step on IMDb at 4K tokens, batch 8, LRA score (%); each with the paper's min-max normalised
# value in brackets, then the paper's SMAT.
TABLE3 = {
    "Transformer": (14.5, 0.00, 6645, 1.00, 58.77, 0.54, 0.54),
    "BigBird": (36.4, 0.12, 2917, 0.30, 59.43, 0.61, 1.43),
    "Reformer": (80.0, 0.35, 2023, 0.13, 55.04, 0.15, 1.37),
    "Linformer": (111.1, 0.52, 2003, 0.12, 55.59, 0.21, 1.61),
    "Linear Transformer": (200.0, 1.00, 1353, 0.00, 58.20, 0.48, 2.48),
    "Performer-32": (142.9, 0.69, 1439, 0.02, 53.63, 0.00, 1.67),
    "Nystromformer-32": (57.1, 0.23, 2687, 0.25, 58.95, 0.56, 1.54),
    "Ours (AdaMRA)": (160.0, 0.78, 1475, 0.02, 63.09, 1.00, 2.76),
}


def test_smat_reproduces_adamra_table3():
    """smat_rows on Table 3's speed, memory and LRA columns gives its SMAT column to 0.01
    and its bracketed normalised values to rounding. The paper sums the rounded brackets
    (e.g. BigBird 0.12 + 0.70 + 0.61 = 1.43, unrounded 1.436), hence differences up to 0.006."""
    rows = {(m, 4096): {"status": "ok", "examples_per_second": eps,
                        "peak_memory_bytes": mb * 2**20} for m, (eps, _, mb, *_) in TABLE3.items()}
    group = report.BenchGroup("text", "nystrom", 8, "Tesla T4", rows, [])
    avg = {m: v[4] / 100 for m, v in TABLE3.items()}
    out, length = report.smat_rows(avg, group)
    assert length == 4096 and len(out) == len(TABLE3)
    for r in out:
        _, s, _, m, _, a, smat = TABLE3[r["model"]]
        assert r["SMAT"] == pytest.approx(smat, abs=0.01), r["model"]
        assert (r["S"], r["M"], r["A"]) == pytest.approx((s, m, a), abs=0.0051), r["model"]
        assert s + 1 - m + a == pytest.approx(smat, abs=1e-9)  # the paper's own rounding
    assert [r["model"] for r in out][:2] == ["Ours (AdaMRA)", "Linear Transformer"]


def test_partial_tree_lists_what_is_missing(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "listops", "softmax", 0, 0.4)
    make_run(root, "listops", "topk", 0, None, status="oom")
    make_run(root, "pathfinder", "softmax", 0, 0.6)
    unfinished = root / "pathfinder/cpu/topk/seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text(json.dumps(CONFIG))
    broken = root / "image/cpu/softmax/seed0"
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text("{not json")
    rep = report.build([root], [])
    text = "\n".join(rep.problems)
    assert "listops/cpu/topk: no finished run" in text
    assert "pathfinder/cpu/topk: no finished run" in text
    assert f"{root / 'listops/cpu/topk/seed0'}: status oom (RESOURCE_EXHAUSTED" in text
    assert f"{unfinished}: no summary.json" in text
    assert f"{broken / 'summary.json'}: not valid JSON" in text
    t = table(rep, "accuracy_cpu")
    assert row(t, "topk")["ListOps"] == "–" and row(t, "topk")["Avg"] == "–"
    assert row(t, "softmax")["Avg"] == "50.00"


def test_empty_tree_reports_and_does_not_crash(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "no runs found" in out and "no tables" in out
    assert "no runs found" in (tmp_path / "out/report.md").read_text()


def test_sizes_make_separate_tables(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "listops", "softmax", 0, 0.4, size="cpu")
    make_run(root, "listops", "softmax", 0, 0.5, size="smoke")
    rep = report.build([root], [])
    assert sorted(t.name for t in rep.tables) == ["accuracy_cpu", "accuracy_smoke", "expected_cpu",
                                                  "expected_smoke"]
    assert row(table(rep, "accuracy_smoke"), "softmax")["ListOps"] == "50.00"


def test_mixed_configs_are_refused_naming_both_runs(tmp_path):
    root = tmp_path / "runs"
    a = make_run(root, "listops", "softmax", 0, 0.4)
    other = json.loads(json.dumps(CONFIG))
    other["train"]["steps"] = 999
    other["wandb"]["mode"] = "online"  # ignored, like the seed
    b = make_run(root, "listops", "softmax", 1, 0.4, config=other)
    with pytest.raises(LRAError, match="train.steps") as e:
        report.build([root], [])
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert cli.main(["report", str(root), "--out", str(tmp_path / "o")]) == 2


def test_bad_bench_input_is_a_clear_error(tmp_path):
    with pytest.raises(LRAError, match="no such file"):
        report.build([], [tmp_path / "nope.json"])
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(LRAError, match="not a bench.json"):
        report.build([], [tmp_path / "x.json"])
    one = bench_file(tmp_path / "1.json", [("softmax", 1024, 1.0, 1)])
    two = bench_file(tmp_path / "2.json", [("softmax", 1024, 2.0, 1)])
    with pytest.raises(LRAError, match="also in"):
        report.build([], [one, two])
    with pytest.raises(LRAError, match="no such run directory"):
        report.build([tmp_path / "missing"], [])


def test_without_matplotlib_tables_are_written_and_plots_skipped(tree, tmp_path, monkeypatch):
    from lra.experiments import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    out = tmp_path / "out"
    report.write(report.build([tree], []), out)
    assert (out / "accuracy_cpu.md").exists() and not list(out.glob("*.png"))
    assert "plots skipped: matplotlib is not installed" in (out / "report.md").read_text()


def curve(folder: Path, points, train_seconds=None):
    """Write metrics.jsonl: (step, val_accuracy) evaluations, a training-log row between
    each; and train_seconds, steps into summary.json."""
    rows = []
    for step, acc in points:
        rows += [{"step": step - 1, "train_loss": 1.0},
                 {"step": step, "val_accuracy": acc, "elapsed_seconds": step / 2}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(steps=points[-1][0], train_seconds=train_seconds, device="cpu x1")
    (folder / "summary.json").write_text(json.dumps(summary))


def test_expected_milestones_take_the_evaluation_at_or_just_after_each_step(tmp_path):
    """train.steps 100: 10% is the evaluation at step 10, 25% the one at 30 (none at 25),
    50% the one at 60, 100% the last."""
    root = tmp_path / "runs"
    run = make_run(root, "listops", "softmax", 0, 0.4, metrics=False)
    curve(run, [(10, 0.11), (20, 0.22), (30, 0.33), (60, 0.66), (100, 0.4)], train_seconds=25.0)
    t = table(report.build([root], []), "expected_cpu")
    assert t.header == ["Task", "Model", "Seeds", "val % at 10%", "val % at 25%", "val % at 50%",
                        "val % at 100%", "s/step", "Device"]
    assert t.rows == [["listops", "softmax", "1", "11.00 @10", "33.00 @30", "66.00 @60",
                       "40.00 @100", "0.25", "cpu x1"]]
    (record,) = t.records
    assert (record["val_25_step"], record["val_25_mean"]) == (30, 33.0)


def test_expected_is_mean_and_std_over_seeds(tmp_path):
    root = tmp_path / "runs"
    for seed, (acc, seconds) in enumerate([(0.40, 20.0), (0.42, 30.0)]):
        run = make_run(root, "listops", "softmax", seed, acc, metrics=False)
        curve(run, [(10, acc / 2), (25, acc / 2), (50, acc), (100, acc)], train_seconds=seconds)
    (cells,) = table(report.build([root], []), "expected_cpu").rows
    assert cells[2:5] == ["2", "20.50 ± 0.71 @10", "20.50 ± 0.71 @25"]
    assert cells[6] == "41.00 ± 1.41 @100"  # sample std of 40 and 42
    assert cells[7] == f"0.25 ± {statistics.stdev([0.2, 0.3]):.3g}"


def test_expected_without_a_late_enough_evaluation_is_na(tmp_path):
    """A stuck run stopped at step 40 of 100 has nothing at 50% or 100%: n/a alone, and
    beside a seed that has one, the mean of that seed with (1/2)."""
    root = tmp_path / "runs"
    stuck = make_run(root, "listops", "softmax", 0, None, status="stuck", metrics=False,
                     **learned(False, test_acc=0.2))
    curve(stuck, [(10, 0.2), (20, 0.2), (40, 0.2)])  # no train_seconds: elapsed / step
    rep = report.build([root], [])
    assert table(rep, "expected_cpu").rows[0][3:] == ["20.00 @10", "20.00 @40", "n/a", "n/a",
                                                      "0.5", "cpu x1"]
    ok = make_run(root, "listops", "softmax", 1, 0.4, metrics=False, **learned(True))
    curve(ok, [(10, 0.3), (50, 0.4), (100, 0.5)], train_seconds=50.0)
    row = table(report.build([root], []), "expected_cpu").rows[0]
    assert row[2] == "2 (1 learned)"
    assert row[5:7] == ["40.00 (1/2) @50", "50.00 (1/2) @100"]


def test_expected_option_writes_the_page_with_its_command(tree, tmp_path, capsys):
    page, out = tmp_path / "docs" / "expected.md", tmp_path / "out"
    args = ["report", str(tree), "--out", str(out), "--no-plots", "--expected", str(page)]
    assert cli.main(args) == 0
    text = page.read_text()
    assert text.startswith("# Expected curves\n")
    assert f"Made by `lra {' '.join(args)}`" in text
    assert "## Expected curves (size=cpu)" in text and "| listops | softmax | 2 |" in text
    assert "accuracy_cpu" not in text and "| Model | ListOps |" not in text
    assert {"expected_cpu.md", "expected_cpu.csv", "expected_cpu.tex"} <= {p.name for p in out.iterdir()}
    assert f"Made by `lra {' '.join(args)}`" in (out / "report.md").read_text()
    assert str(page) in capsys.readouterr().out
