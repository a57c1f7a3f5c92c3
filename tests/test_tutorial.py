"""docs/adding-attention.md, step by step: the method file from the page, the conformance
checks, a tiny training run, a report, and the documented commands.

The method is written to a temporary folder and imported from there (never into
lra/attention/, which other tests running in parallel read), into a copy of the
registry that is restored afterwards.
"""

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import doc_blocks
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_attention_conformance as conformance
from flax import nnx

from lra import attention, cli
from lra.attention.base import dense_attention
from lra.experiments import report
from lra.training import config, train

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding-attention.md"
MODULE = "lra_tutorial_window"


@pytest.fixture(scope="module")
def method_file(tmp_path_factory):
    (code,) = [body for info, body in doc_blocks.blocks(DOC, "python") if "lra/attention/window.py" in info]
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{MODULE}.py").write_text(code)
    return folder


@pytest.fixture
def window(method_file, monkeypatch):
    """The page's method, imported from the temporary folder into a copy of the registry."""
    attention.names()  # discover the built-in methods before copying the registry
    monkeypatch.setattr(attention, "_REGISTRY", dict(attention._REGISTRY))
    spec = importlib.util.spec_from_file_location(MODULE, method_file / f"{MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, MODULE, module)
    spec.loader.exec_module(module)
    return module.WindowAttention


def test_the_method_registers_and_passes_the_conformance_checks(window):
    info = attention.info("window")
    assert info.cls is window and info.paper == "Beltagy et al. 2020"
    assert info.defaults == {"window": 512}
    assert info.budget(16, 64) == {"window": 16}
    for check in (conformance.test_jit_matches_eager, conformance.test_finite_gradients,
                  conformance.test_padding_invariance, conformance.test_batch_independence,
                  conformance.test_eval_is_deterministic,
                  conformance.test_causal_option_or_clear_refusal):
        check("window")
    for dtype in (jnp.float32, jnp.bfloat16):
        conformance.test_shape_and_dtype("window", dtype)


def test_the_window_is_what_the_page_says(window):
    cfg = attention.AttentionConfig(dim=8, num_heads=2, max_len=16)
    q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 16, 2, 4))
    mask = jnp.ones((1, 16), bool)
    wide = window(cfg, rngs=nnx.Rngs(0), window=32)
    np.testing.assert_allclose(wide.core(q, k, v, mask, deterministic=True),
                               dense_attention(q, k, v, mask), atol=1e-5)
    narrow = window(cfg, rngs=nnx.Rngs(0), window=4)
    out = narrow.core(q, k, v, mask, deterministic=True)
    moved = narrow.core(q, k.at[:, 10].set(9.0), v.at[:, 10].set(9.0), mask, deterministic=True)
    np.testing.assert_array_equal(out[:, :8], moved[:, :8])  # key 10 is outside 7's window
    assert not np.allclose(out[:, 8:13], moved[:, 8:13])  # and inside those of 8..12


def test_train_and_report(window, tmp_path):
    runs = tmp_path / "runs"
    c = config.load("listops:model=window,size=smoke",
                    {"train.steps": "10", "train.eval_every": "10",
                     "model.attention_kwargs.window": "16"})
    summary = train.train(c, runs / "listops/smoke/window/seed0")
    assert summary["status"] == "ok" and summary["model"] == "window"
    rep = report.build([runs], [])
    (table,) = [t for t in rep.tables if t.name.startswith("accuracy_")]
    (row,) = table.rows
    seeds = "(1/1)" if summary["learned"] else "† (0/1 learned)"  # 10 steps: usually at chance
    assert row[0] == "window" and row[1] == f"{100 * summary['test_acc']:.2f} {seeds}"


def test_documented_commands_parse():
    lines = [line for info, body in doc_blocks.blocks(DOC, "bash") for line in body.splitlines() if line]
    lra = [cmd[cmd.index("lra") + 1:] for cmd in map(shlex.split, lines) if "lra" in cmd]
    assert {cmd[0] for cmd in lra} == {"list", "train", "sweep", "bench", "report", "approx",
                                       "eval"}
    for cmd in lra:
        rest, _ = cli.split_overrides(cmd)
        cli.parser().parse_args(rest)  # exits (SystemExit) on an unknown flag


def test_plugin_outside_the_tree_via_lra_plugins(method_file):
    env = {**os.environ, "PYTHONPATH": str(method_file),
           "LRA_PLUGINS": MODULE, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "lra.cli", "list"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "window" in out.stdout and "Beltagy et al. 2020" in out.stdout
    env["LRA_PLUGINS"] = "no_such_plugin"
    bad = subprocess.run([sys.executable, "-m", "lra.cli", "list"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "LRA_PLUGINS: cannot import 'no_such_plugin'" in bad.stderr


def test_no_tutorial_method_is_left_registered():
    assert "window" not in attention.names()
