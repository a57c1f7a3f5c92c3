"""lra approx: the error measure, the references, budgets, temperatures and checkpoint layers."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra import attention, cli
from lra.attention.base import AttentionConfig, dense_attention
from lra.errors import LRAError
from lra.experiments import approx
from lra.training import config, train
from lra.training.checkpoint import Checkpoints
from lra.training.workdir import write_json

L = 32
CFG = AttentionConfig(dim=64, num_heads=4, max_len=L)


@pytest.fixture(scope="module")
def inputs():
    return approx.random_inputs(L, (0.25, 1.0, 4.0), head_dim=16)


def test_relative_error_counts_real_positions_only():
    ref = jnp.ones((1, 4, 1, 2))
    out = ref.at[0, 0].set(3.0).at[0, 3].set(100.0)
    mask = jnp.array([[True, True, True, False]])
    assert approx.relative_error(out, ref, mask) == pytest.approx(math.sqrt(8 / 6))


def test_topk_error_falls_with_budget_and_is_zero_at_full_length(inputs):
    errors = [approx.measure("topk", CFG, {"k": k, "chunk": L}, inputs, 0) for k in (4, 16, L)]
    for small, big in zip(errors[0], errors[1], strict=True):
        assert small > big
    assert max(errors[2]) < 1e-5  # k = L is exactly softmax


def test_reformer_reference_is_its_shared_qk_attention(inputs):
    """One bucket holding the whole sequence makes LSH attention exact, so its error against
    the shared-QK reference (normalised query keys, own key excluded) vanishes."""
    assert max(approx.measure("reformer", CFG, {"bucket_size": L}, inputs, 0)) < 1e-4
    q, _, v, mask = inputs[1]
    qn, vn = np.asarray(q, np.float64), np.asarray(v, np.float64)
    keys = qn / np.linalg.norm(qn, axis=-1, keepdims=True)
    logits = np.einsum("bqhd,bkhd->bhqk", qn, keys) / math.sqrt(q.shape[-1])
    logits[:, :, np.arange(L), np.arange(L)] = -np.inf
    w = np.exp(logits - logits.max(-1, keepdims=True))
    want = np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), vn)
    np.testing.assert_allclose(approx.exact("reformer", q, q, v, mask), want, atol=1e-5)


def test_temperature_sets_entropy_and_sparse_methods_win_when_peaked(inputs):
    entropies = [approx.entropy(q, k, m) for q, k, _, m in inputs]
    assert entropies[0] < entropies[1] < entropies[2] < math.log(L)
    errors = approx.measure("topk", CFG, {"k": 8, "chunk": L}, inputs, 0)
    assert errors[0] < errors[1] < errors[2]


def test_budget_rule():
    assert approx.method_kwargs("topk", 64, 512) == {"k": 64}
    assert approx.method_kwargs("scatterbrain", 64, 512) == {
        "nb_features": 32, "block_size": 16, "n_hashes": 2, "feature_map": "positive"}
    assert approx.method_kwargs("routing", 64, 512) == {"num_clusters": 8, "local_window": 21,
                                                          "score": "raw"}
    assert approx.method_kwargs("linear", 64, 512) == {}
    assert approx.method_kwargs("topk", 64, 512, {"k": 8, "chunk": 16}) == {"k": 64, "chunk": 16}


def test_a_method_that_cannot_be_built_is_listed_not_fatal(monkeypatch):
    monkeypatch.setitem(attention._REGISTRY, "topk", dataclasses.replace(
        attention.info("topk"), budget=lambda b, n: {"k": 0}))
    (table,) = approx.run(["topk", "linear"], length=8, budget=8, temperatures=(1.0,))
    assert [r[0] for r in table.rows] == ["linear"]
    assert any(n.startswith("topk: not measured (LRAError: topk: model.attention_kwargs.k=0")
               for n in table.notes)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run workdir with config.json and a best checkpoint (initial weights: no training)."""
    workdir = tmp_path_factory.mktemp("run")
    c = config.load("listops:size=smoke")
    meta, _ = train.load_splits(c)
    trainer = train.Trainer(c, meta, train.device_mesh(c))
    write_json(workdir / "config.json", c.to_dict())
    ckpt = Checkpoints(workdir / "checkpoints")
    ckpt.save_best(0, trainer.best_state())
    ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def layers(run_dir):
    return approx.checkpoint_inputs(run_dir, examples=2)


def test_checkpoint_layers_are_the_runs_projections(layers):
    per_layer, cfg, c = layers
    assert len(per_layer) == c.model.num_layers and cfg.num_heads == c.model.num_heads
    q, k, v, mask = per_layer[0]
    assert q.shape == (2, c.data.max_len + 1, 2, 16) and mask.dtype == jnp.bool_
    assert not jnp.allclose(q, k) and not jnp.allclose(k, v)  # three separate projections
    assert bool(jnp.all(mask[:, 0]))  # the CLS slot is real


def test_checkpoint_table(run_dir, layers, monkeypatch):
    monkeypatch.setattr(approx, "checkpoint_inputs", lambda workdir, examples: layers)
    tables = approx.run(["topk", "adamra"], length=8, budget=128, temperatures=(1.0,),
                        checkpoint=run_dir, examples=2)
    table = tables[1]
    assert table.header == ["Method", "hyperparameters", "layer 0"]
    rows = {r[0]: r for r in table.rows}
    assert float(rows["topk"][2]) < 1e-4  # k = 128 >= 65 keys: exact
    assert rows["topk"][1] == "chunk=16, k=128"  # the smoke preset, then the budget
    assert rows["adamra"][1] == "defaults"  # no preset, no budget knob
    assert any("entropy" in n for n in table.notes)


def test_cli_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["approx", "--methods", "topk,linear", "--length", "16", "--budget", "4",
                     "--temperatures", "0.5,2", "--out", str(out)]) == 0
    md = (out / "approx_random.md").read_text()
    assert "T=0.5" in md and "Made by `lra approx --methods topk,linear --length 16" in md
    lines = (out / "approx_random.csv").read_text().splitlines()
    assert lines[0] == "method,temperature,relative_error,hyperparameters,entropy"
    assert len(lines) == 1 + 2 * 2
    assert (out / "approx_random.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["approx", "--methods", "nope"]) == 2
    assert cli.main(["approx", "--temperatures", "0,1"]) == 2
    assert "--temperatures" in capsys.readouterr().err


def test_random_inputs_share_k_and_v_across_temperatures():
    a, b = approx.random_inputs(8, (0.5, 2.0), head_dim=4)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0] * 0.5, b[0] * 2.0, rtol=1e-6)
    assert jax.numpy.all(a[3])


def test_attention_matrix_is_read_through_one_hot_values():
    """Slices of the identity as values give back softmax(q k^T / sqrt(d)), also when L is not
    a multiple of Dh and keys are padded."""
    length, dh = 20, 8
    q, k, _, _ = approx.random_inputs(length, (0.5,), heads=2, head_dim=dh, batch=2)[0]
    mask = jnp.arange(length)[None, :] < jnp.array([[length], [13]])
    got = np.asarray(approx.attention_matrix(dense_attention, q, k, mask))
    logits = np.einsum("bqhd,bkhd->bqhk", np.asarray(q, np.float64), np.asarray(k, np.float64))
    logits = np.where(np.asarray(mask)[:, None, None, :], logits / math.sqrt(dh), -np.inf)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    assert got.shape == (2, length, 2, length)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1, :13], want[1, :13], atol=1e-5)


def test_matrix_measure_is_the_error_of_the_attention_matrices(inputs):
    layer = attention.get("topk")(CFG, rngs=nnx.Rngs(0), k=4, chunk=L)
    errors = approx.measure("topk", CFG, {"k": 4, "chunk": L}, inputs, 0, of="matrix")
    for (q, k, _, mask), error in zip(inputs, errors, strict=True):
        mine = approx.attention_matrix(
            lambda q, k, v, m: layer.core(q, k, v, m, deterministic=True), q, k, mask)
        exact = approx.attention_matrix(dense_attention, q, k, mask)
        assert error == pytest.approx(approx.relative_error(mine, exact, mask), rel=1e-4)
    assert errors[0] < errors[2]  # peaked attention is what top-k keeps
    assert max(approx.measure("topk", CFG, {"k": L, "chunk": L}, inputs, 0, of="matrix")) < 1e-5


def test_clustered_inputs_are_scatterbrains_generative_model():
    """q = k; q.k / sqrt(d) = beta z.z with beta = 1 / T and |z| = 1; each token has
    cluster_size - 1 close neighbours (cosine near 1 / (1 + Delta^2)) and is nearly
    orthogonal to the rest."""
    size, dh = 8, 32
    cold, warm = approx.clustered_inputs(64, (0.25, 1.0), cluster_size=size, head_dim=dh)
    q, k, v, mask = cold
    assert q is k and bool(jnp.all(mask)) and not jnp.allclose(q, v)
    np.testing.assert_allclose(cold[0], 2 * warm[0], rtol=1e-5)  # sqrt(beta) scaling
    z = np.asarray(warm[0][0, :, 0], np.float64) / dh ** 0.25
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    logits = np.einsum("qd,kd->qk", np.asarray(cold[0][0, :, 0]), np.asarray(cold[0][0, :, 0]))
    np.testing.assert_allclose(logits / math.sqrt(dh), 4 * z @ z.T, rtol=1e-4, atol=1e-4)
    cos = z @ z.T / np.outer(np.linalg.norm(z, axis=1), np.linalg.norm(z, axis=1))
    np.fill_diagonal(cos, -np.inf)
    ranked = -np.sort(-cos, axis=1)
    assert ranked[:, :size - 1].mean() > 0.7 and np.abs(ranked[:, size - 1:-1]).mean() < 0.2
    assert not np.allclose(np.argsort(-cos[0])[:size - 1], np.arange(1, size))  # scattered


def test_clustered_regimes_sparse_wins_cold_low_rank_wins_warm():
    """Scatterbrain §3: at beta well above log L a sparse approximation (top-k) beats a
    low-rank one (Performer) on the attention matrix; at beta = 1 it is the other way round."""
    data = approx.clustered_inputs(64, (1 / 16, 1.0), head_dim=16)
    cfg = AttentionConfig(dim=64, num_heads=4, max_len=64)
    topk = approx.measure("topk", cfg, {"k": 8, "chunk": 64}, data, 0, of="matrix")
    performer = approx.measure("performer", cfg, {"nb_features": 8}, data, 0, of="matrix")
    assert topk[0] < 0.1 < performer[0]
    assert performer[1] < topk[1]


def test_cli_clustered_matrix(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["approx", "--methods", "topk", "--length", "16", "--budget", "4",
                     "--inputs", "clustered", "--measure", "matrix", "--out", str(out)]) == 0
    md = (out / "approx_clustered.md").read_text()
    assert "attention matrix, clustered q = k" in md and "T=0.03125" in md and "T=1" in md
    assert "--inputs clustered --measure matrix --delta 0.5" in md
    assert (out / "approx_clustered.png").exists() and not (out / "approx_random.md").exists()
    with pytest.raises(LRAError, match="--measure"):
        approx.run(["topk"], length=8, budget=4, of="rows")


def test_clustered_inputs_give_shared_qk_the_same_logits():
    """With shared_qk the Reformer's logits q_i.(q_j / |q_j|) / sqrt(d) are beta z_i.z_j, the
    logits every other method gets."""
    dh = 16
    (plain,), (shared,) = (approx.clustered_inputs(32, (0.125,), head_dim=dh, shared_qk=s)
                           for s in (False, True))
    q, qs = np.asarray(plain[0], np.float64), np.asarray(shared[0], np.float64)
    want = np.einsum("bihd,bjhd->bhij", q, q) / math.sqrt(dh)
    keys = qs / np.linalg.norm(qs, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("bihd,bjhd->bhij", qs, keys) / math.sqrt(dh), want,
                               rtol=1e-4, atol=1e-4)
    assert np.allclose(np.diagonal(want, axis1=-2, axis2=-1), 8.0)  # beta on the diagonal


def test_scatterbrain_beats_its_parts_when_cold():
    """Clustered q = k at beta = 16: Scatterbrain (half the features, half the sparse keys of
    its parts) is far closer to the attention matrix than the Performer or the Reformer."""
    length, budget = 64, 16
    cfg = AttentionConfig(dim=64, num_heads=4, max_len=length)
    errors = {}
    for name in ("performer", "reformer", "scatterbrain"):
        data = approx.clustered_inputs(length, (1 / 16,), head_dim=16,
                                       shared_qk=name in approx.SHARED_QK)
        errors[name] = approx.measure(name, cfg, approx.method_kwargs(name, budget, length),
                                      data, 0, of="matrix")[0]
    assert 2 * errors["scatterbrain"] < min(errors["performer"], errors["reformer"]), errors
