"""scripts/claims_record.py: the committed record of the claims' runs (summary.json and
config.json of each finished run), recovered records and their confirmation by a rerun."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lra.experiments import sweep
from lra.experiments.claims import accuracies, records, records_line

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims_record", ROOT / "scripts" / "claims_record.py")
recorder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorder)


def run(root: Path, task="text", model="adamra", seed=0, status="ok", acc=0.6115, config=None):
    folder = root / task / "cpu" / model / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(
        {"task": task, "size": "cpu", "model": model, "seed": seed, "status": status,
         "test_acc": acc}))
    (folder / "config.json").write_text(json.dumps(config or {"seed": seed, "lr": 1e-3}))
    (folder / "train.log").write_text("not recorded\n")
    return folder


def recovered(root: Path, task="text", model="adamra", seed=0, acc=0.6115):
    folder = root / task / "cpu" / model / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(
        {"task": task, "size": "cpu", "model": model, "seed": seed, "status": "ok",
         "test_acc": acc, "recovered": {"from": "a table"}}))
    return folder


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_finished_runs_are_recorded_once_and_unfinished_ones_not(tmp_path, capsys):
    runs, to = tmp_path / "runs", tmp_path / "record"
    run(runs, seed=0)
    run(runs, seed=1, status="failed")
    (runs / "text" / "cpu" / "adamra" / "seed2").mkdir(parents=True)  # still training
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    assert sorted(tree(to)) == ["text/cpu/adamra/seed0/config.json",
                                "text/cpu/adamra/seed0/summary.json"]
    before = tree(to)
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    assert tree(to) == before and "nothing new" in capsys.readouterr().out


def test_a_rerun_supersedes_the_recovered_record_and_keeps_its_value(tmp_path, capsys):
    runs, to = tmp_path / "runs", tmp_path / "record"
    recovered(to, seed=0, acc=0.367)
    recovered(to, seed=1, acc=0.6)
    run(runs, seed=0, acc=0.354)
    assert records([to], "cpu", ("text",), ("adamra",)) == {
        "runs": 2, "recovered": ["text/adamra/seed0", "text/adamra/seed1"], "superseded": {}}
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    assert "0.367 superseded by the run's 0.354" in capsys.readouterr().out
    summary = json.loads((to / "text/cpu/adamra/seed0/summary.json").read_text())
    assert summary["test_acc"] == 0.354 and "recovered" not in summary
    assert summary["supersedes"] == {"test_acc": 0.367, "from": "a table"}
    assert (to / "text/cpu/adamra/seed0/config.json").is_file()
    rec = records([to], "cpu", ("text",), ("adamra",))
    assert rec["recovered"] == ["text/adamra/seed1"]
    assert rec["superseded"] == {"text/adamra/seed0": pytest.approx(36.7)}
    assert accuracies([to], "cpu", ("text",), ("adamra",)) == {("text", "adamra"): [35.4, 60.0]}
    before = tree(to)  # the superseding record is the run's: recording again changes nothing
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    assert tree(to) == before


def test_a_record_that_differs_from_its_run_is_refused_before_anything_is_written(tmp_path,
                                                                                   capsys):
    runs, to = tmp_path / "runs", tmp_path / "record"
    run(runs, seed=1, config={"seed": 1, "lr": 1e-3})
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    (runs / "text/cpu/adamra/seed1/config.json").write_text(json.dumps({"seed": 1, "lr": 5e-4}))
    run(runs, seed=0)  # new and planned first, yet not written: seed1 is refused
    before = tree(to)
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed1" in err and "delete the record" in err
    assert tree(to) == before


def test_a_rerun_that_differs_only_in_timings_and_threads_is_the_same_record(tmp_path, capsys):
    runs, to = tmp_path / "runs", tmp_path / "record"
    folder = run(runs, status="stuck", acc=None)  # stuck runs count in a cell: recorded
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(train_seconds=12.5, cpu_threads=2, git_commit="abc1234")
    (folder / "summary.json").write_text(json.dumps(summary))
    before = tree(to)
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    assert tree(to) == before and "nothing new" in capsys.readouterr().out
    summary["best_val_acc"] = 0.5
    (folder / "summary.json").write_text(json.dumps(summary))
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 2
    assert "best_val_acc None -> 0.5" in capsys.readouterr().err


def test_hidden_folders_and_bad_summaries(tmp_path, capsys):
    runs, to = tmp_path / "runs", tmp_path / "record"
    run(runs / ".seed0.tmp")  # an atomic write under way: not a run
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0 and not to.exists()
    (run(runs, seed=1) / "summary.json").write_text("[1, 2]")
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 2
    assert "not a JSON object" in capsys.readouterr().err


def test_a_missing_workdir_is_one_line_and_exit_2(tmp_path, capsys):
    assert recorder.main(["--runs", str(tmp_path / "nope"), "--to", str(tmp_path / "r")]) == 2
    assert "--runs" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_the_builders_say_which_values_are_recovered_or_superseded(tmp_path):
    to = tmp_path / "record"
    recovered(to, seed=0, acc=0.6)
    run(to, seed=1, acc=0.62)
    assert accuracies([to], "cpu", ("text",), ("adamra",)) == {("text", "adamra"): [60.0, 62.0]}
    line = records_line(records([to], "cpu", ("text",), ("adamra",)))
    assert line.startswith("2 runs; 1 of them recovered records") and "superseded" not in line
    line = records_line({"runs": 3, "recovered": [], "superseded": {"text/adamra/seed1": 36.7}})
    assert line == "3 runs; 1 reruns superseded recovered values: text/adamra/seed1 was 36.70."


@pytest.mark.parametrize("table", ["lra_table", "adamra_ablations"])
def test_the_committed_tables_are_the_committed_records(table):
    """Each committed table cell lists the record's values, seed by seed (the tables were
    rebuilt after the record last changed)."""
    rows = json.loads((ROOT / f"results/cpu/claims/{table}.json").read_text())["rows"]
    acc = accuracies([ROOT / "results/cpu/claims/records"], "cpu", ("listops", "text"),
                     tuple(r["model"] for r in rows))
    for row in rows:
        for task in ("listops", "text"):
            assert acc.get((task, row["model"]), []) == pytest.approx(row[task]["values"]), \
                (task, row["model"])


def test_restore_lets_a_sweep_skip_what_the_record_holds(tmp_path, capsys):
    runs, to, fresh = tmp_path / "runs", tmp_path / "record", tmp_path / "fresh"
    recovered(to, seed=0, acc=0.367)
    recovered(to, seed=1, acc=0.6)
    run(runs, seed=0, acc=0.354)
    run(runs, seed=2, acc=0.61)
    assert recorder.main(["--runs", str(runs), "--to", str(to)]) == 0
    (fresh / "text/cpu/adamra/seed2").mkdir(parents=True)  # under way there: left alone
    assert recorder.main(["--restore", "--runs", str(fresh), "--to", str(to)]) == 0
    assert sorted(tree(fresh)) == ["text/cpu/adamra/seed0/config.json",
                                   "text/cpu/adamra/seed0/summary.json",
                                   "text/cpu/adamra/seed1/summary.json"]
    for seed in (0, 1):
        assert sweep.status(fresh, sweep.Run("text", "adamra", "cpu", seed)) in sweep.FINISHED
    assert sweep.status(fresh, sweep.Run("text", "adamra", "cpu", 2)) is None
    before = tree(to)  # recording the restored workdir again changes nothing
    capsys.readouterr()
    assert recorder.main(["--runs", str(fresh), "--to", str(to)]) == 0
    assert tree(to) == before and "nothing new" in capsys.readouterr().out


def stub_lra(tmp_path: Path, sweep_exit: str) -> Path:
    """An `lra` that prints its arguments; its sweep runs `sweep_exit` (bash)."""
    stub = tmp_path / "lra"
    stub.write_text("#!/bin/bash\necho \"lra $*\" >> " + str(tmp_path / "calls") + "\n"
                    f"if [ \"$1\" = sweep ]; then {sweep_exit}; fi\n")
    stub.chmod(0o755)
    return stub


def test_reproduce_claims_restores_sweeps_records_builds_and_passes_a_failure_on(tmp_path):
    """scripts/reproduce_claims.sh with a stub `lra` whose sweeps fail: the record restored
    into the workdir (so that a sweep skips it), both grids tried, the tables built, and the
    sweeps' status returned."""
    runs = tmp_path / "runs"
    env = {**os.environ, "LRA": str(stub_lra(tmp_path, "exit 1")), "PYTHON": sys.executable,
           "RUNS": str(runs)}
    proc = subprocess.run(["bash", "scripts/reproduce_claims.sh", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    calls = (tmp_path / "calls").read_text()
    for grid in ("claims_lra", "claims_adamra"):
        assert f"lra sweep --from configs/{grid}.py --workdir {runs} --jobs 2" in calls
    assert sorted(tree(runs)) == sorted(tree(ROOT / "results/cpu/claims/records"))
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "lra_table.md", "lra_table.json", "smat.md", "adamra_ablations.md"}


def test_reproduce_claims_stops_its_sweep_on_sigterm_then_records_and_builds(tmp_path):
    marker = tmp_path / "terminated"
    env = {**os.environ, "PYTHON": sys.executable, "RUNS": str(tmp_path / "runs"),
           "LRA": str(stub_lra(tmp_path, f"trap 'touch {marker}; exit 143' TERM; "
                                         "sleep 60 & wait $!"))}
    proc = subprocess.Popen(["bash", "scripts/reproduce_claims.sh", str(tmp_path / "out")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while "lra sweep" not in ((tmp_path / "calls").read_text()
                              if (tmp_path / "calls").exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.1)
    time.sleep(0.5)  # the stub's trap is set
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert marker.exists()  # the sweep got the signal
    assert (tmp_path / "calls").read_text().count("lra sweep") == 1  # no second grid
    assert (tmp_path / "out" / "lra_table.md").is_file()  # recorded and built all the same


def test_the_topk_claim_leaves_restored_folders_without_checkpoints_out(tmp_path):
    spec = importlib.util.spec_from_file_location("claim_topk_dropin",
                                                  ROOT / "scripts" / "claim_topk_dropin.py")
    topk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(topk)
    trained = run(tmp_path, model="softmax", seed=0)
    (trained / "checkpoints").mkdir()
    run(tmp_path, model="softmax", seed=1)  # restored from the record: a summary, no weights
    assert topk.runs_of(tmp_path) == {"text": [trained]}
