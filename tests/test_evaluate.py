"""lra eval: a trained smoke run's checkpoint with another attention method swapped in."""

import json

import pytest

from lra import cli
from lra.errors import LRAError
from lra.experiments import evaluate
from lra.training import config, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    c = config.load("listops:size=smoke", {"train.steps": "10", "train.eval_every": "10"})
    assert train.train(c, workdir)["status"] == "ok"
    return workdir


def test_topk_with_k_covering_the_sequence_reproduces_softmax(run_dir, capsys):
    """Top-k with k >= n is exactly softmax (Gupta et al. 2021, §3): the swapped-in model
    scores what the trained one scored, and the result is written next to the run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert cli.main(["eval", "--workdir", str(run_dir), "--config.model.attention=topk",
                     "--config.model.attention_kwargs.k=128"]) == 0
    result = json.loads((run_dir / "eval_topk-k128.json").read_text())
    assert result["trained_with"] == "softmax" and result["evaluated_with"] == "topk"
    assert result["attention_kwargs"] == {"k": 128, "chunk": 16}  # smoke preset, then override
    assert result["test_accuracy"] == pytest.approx(summary["test_acc"])
    assert result["val_accuracy"] == pytest.approx(summary["best_val_acc"])
    assert result["trained_test_acc"] == summary["test_acc"]
    assert "evaluated with topk" in capsys.readouterr().out


def test_same_method_other_batch_size_reproduces_the_run(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    result = evaluate.evaluate(run_dir, {"train.batch_size": "8"})
    assert result["evaluated_with"] == "softmax" and (run_dir / "eval_softmax.json").exists()
    assert result["test_accuracy"] == pytest.approx(summary["test_acc"])


def test_swap_with_small_k_changes_the_model(run_dir):
    exact = evaluate.evaluate(run_dir, {"model.attention": "topk",
                                        "model.attention_kwargs.k": "128"})
    small = evaluate.evaluate(run_dir, {"model.attention": "topk",
                                        "model.attention_kwargs.k": "1"})
    assert small["attention_kwargs"]["k"] == 1
    assert small["test_loss"] != pytest.approx(exact["test_loss"])


@pytest.mark.parametrize("method, differs", [
    ("linformer", "attn.e (new)"),  # learned length projections
    ("adamra", "attn.router.kernel (new)"),  # the resolution router
    ("reformer", "attn.key.kernel (absent)"),  # shared QK: no key projection
])
def test_methods_with_other_parameters_are_refused(run_dir, method, differs):
    with pytest.raises(LRAError, match="cannot swap softmax for " + method) as e:
        evaluate.restore(run_dir, {"model.attention": method})
    assert differs in str(e.value) and "tower.encoder.blocks.0" in str(e.value)


def test_bad_input_is_a_clear_error(run_dir, tmp_path, capsys):
    with pytest.raises(LRAError, match="data must stay"):
        evaluate.restore(run_dir, {"data.max_len": "32"})
    with pytest.raises(LRAError, match="unknown attention method"):
        evaluate.restore(run_dir, {"model.attention": "nope"})
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(LRAError, match="no best checkpoint"):
        evaluate.restore(tmp_path)


def test_overrides_of_a_saved_config_work_outside_the_repo(tmp_path):
    """`lra eval`/`lra approx --checkpoint` apply presets without a config file loaded first."""
    import subprocess
    import sys

    saved = json.dumps(config.load("listops:size=smoke").to_dict())
    code = ("import json, sys, ml_collections; from lra.training import config; "
            "c = config.apply_overrides(ml_collections.ConfigDict(json.loads(sys.argv[1])), "
            "{'model.attention': 'topk'}); print(dict(c.model.attention_kwargs))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code, saved], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'k': 8" in out.stdout


def test_evaluations_at_different_settings_keep_their_own_files():
    k = "model.attention_kwargs."
    assert evaluate.result_name("topk", {"model.attention": "topk", f"{k}k": "64"}) \
        == "eval_topk-k64.json"
    assert evaluate.result_name("topk", {f"{k}k": "8", f"{k}chunk": "16"}) \
        == "eval_topk-chunk16-k8.json"
    assert evaluate.result_name("softmax", {"train.batch_size": "8"}) == "eval_softmax.json"
