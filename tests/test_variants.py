"""Named model variants (configs/models.py VARIANTS) wherever a model name is: the config,
`--config.model.*` overrides, sweep run folders, resumes and the report's rows."""

import json
import sys

import ml_collections
import pytest

from lra.errors import LRAError
from lra.experiments import report, sweep
from lra.training import config, workdir


@pytest.mark.parametrize("name, method, kwargs", [
    ("adamra-rand", "adamra", {"router": "random", "gate": "mask"}),
    ("adamra-mask", "adamra", {"gate": "mask"}),
    ("adamra-elu", "adamra", {"feature_map": "elu+1"}),
    ("adamra-softmax", "adamra", {"feature_map": "softmax"}),
    ("adamra-r4-32", "adamra", {"compression_rates": (0.25, 0.03125)}),
    ("adamra-r4-8-16-32", "adamra", {"compression_rates": (0.25, 0.125, 0.0625, 0.03125)}),
    ("adamra-r2x3", "adamra", {"compression_rates": (0.5, 0.5, 0.5)}),
    ("adamra-r4x3", "adamra", {"compression_rates": (0.25, 0.25, 0.25)}),
    ("adamra", "adamra", {}),
])
def test_a_variant_is_its_method_with_its_hyperparameters_and_keeps_its_name(name, method, kwargs):
    c = config.load(f"text:model={name},size=cpu")
    assert (c.model.name, c.model.attention) == (name, method)
    assert c.model.attention_kwargs.to_dict() == kwargs


@pytest.mark.parametrize("size", ["smoke", "cpu"])
def test_every_variant_loads_and_validates(size):
    for name, (method, _) in config.presets().VARIANTS.items():
        c = config.load(f"listops:model={name},size={size}")
        assert (c.model.name, c.model.attention) == (name, method)


def test_a_variant_goes_on_top_of_its_methods_preset():
    # size=nystrom pins num_landmarks 64 and conv_kernel_size 35; nystrom-32 changes only the first
    c = config.load("listops:model=nystrom-32,size=nystrom")
    assert c.model.attention_kwargs.to_dict() == {"num_landmarks": 32, "conv_kernel_size": 35}


def test_overrides_swap_the_method_or_the_variant_and_the_name_follows():
    c = config.load("listops:model=adamra-rand,size=smoke", {"model.attention": "softmax"})
    assert (c.model.name, c.model.attention, c.model.attention_kwargs.to_dict()) == (
        "softmax", "softmax", {})
    c = config.load("listops:model=adamra-rand,size=smoke", {"model.name": "adamra-elu"})
    assert (c.model.attention, c.model.attention_kwargs.to_dict()) == ("adamra",
                                                                      {"feature_map": "elu+1"})
    c = config.load("listops:model=adamra-rand,size=smoke", {"model.name": "adamra"})
    assert c.model.attention_kwargs.to_dict() == {}
    with pytest.raises(LRAError, match="model.name: unknown model 'nope'"):
        config.load("listops:model=adamra,size=smoke", {"model.name": "nope"})


def test_a_name_that_is_not_a_variant_of_the_method_is_refused():
    c = config.load("listops:model=adamra-rand,size=smoke")
    c.model.attention = "softmax"
    with pytest.raises(LRAError, match="model.name='adamra-rand' is not model.attention='softmax'"):
        config.validate(c)


def test_an_old_config_without_a_name_still_loads_and_resumes(tmp_path):
    c = config.load("listops:model=softmax,size=smoke").to_dict()
    old = json.loads(json.dumps(c))
    del old["model"]["name"]
    config.validate(ml_collections.ConfigDict(old))  # lra eval on a run saved before model.name
    (tmp_path / "config.json").write_text(json.dumps(old))
    workdir.check_config(tmp_path, c)  # its resume is not refused for the new key


def test_a_variant_with_tuple_rates_resumes(tmp_path):
    """config.json holds the rates as a JSON list; the loaded variant holds a tuple."""
    c = config.load("listops:model=adamra-r2x3,size=smoke").to_dict()
    assert isinstance(c["model"]["attention_kwargs"]["compression_rates"], tuple)
    (tmp_path / "config.json").write_text(json.dumps(c))
    workdir.check_config(tmp_path, c)


def test_two_variants_of_one_method_get_their_own_folders_and_rows(tmp_path, monkeypatch):
    def command(self, work):  # a `lra train` stand-in writing what train.py would
        c = config.load(f"{self.task}:model={self.model},size={self.size}")
        summary = {"task": c.task, "model": c.model.name, "attention": c.model.attention,
                   "size": c.size, "seed": self.seed, "status": "ok", "test_acc": 0.5,
                   "learned": True}
        folder = work / self.name
        return [sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(folder)!r}); "
                f"(p / 'summary.json').write_text({json.dumps(summary)!r}); "
                f"(p / 'config.json').write_text({json.dumps(c.to_dict())!r})"]

    monkeypatch.setattr(sweep.Run, "command", command)
    assert sweep.run("listops", "adamra-rand,adamra-elu", "smoke", "0", tmp_path) == {
        "listops/smoke/adamra-rand/seed0": "ok", "listops/smoke/adamra-elu/seed0": "ok"}
    built = report.build([tmp_path], [])
    table = next(t for t in built.tables if t.name == "accuracy_smoke")
    assert sorted(r[0] for r in table.rows) == ["adamra-elu", "adamra-rand"]
    assert [r[0] for r in sweep.listing(tmp_path)] == ["listops/smoke/adamra-elu/seed0",
                                                      "listops/smoke/adamra-rand/seed0"]


def test_old_runs_without_a_name_report_by_their_method_beside_new_ones(tmp_path):
    new = config.load("listops:model=softmax,size=smoke").to_dict()
    old = json.loads(json.dumps(new))
    del old["model"]["name"]
    for seed, cfg in enumerate((old, new)):  # seed 0 written before model.name, seed 1 after
        folder = tmp_path / f"listops/smoke/softmax/seed{seed}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "summary.json").write_text(json.dumps(
            {"task": "listops", "model": "softmax", "size": "smoke", "status": "ok",
             "test_acc": 0.4}))
    table = next(t for t in report.build([tmp_path], []).tables if t.name == "accuracy_smoke")
    assert [r[0] for r in table.rows] == ["softmax"]


def test_the_sweep_refuses_a_name_with_a_slash_and_all_is_every_method():
    with pytest.raises(LRAError, match="may not contain '/'"):
        sweep.check(sweep.grid("listops", "adamra-1/2..1/16", "smoke", "0"))
    assert {r.model for r in sweep.grid("listops", "all", "smoke", "0")} == set(
        sweep.attention.names())


def test_bench_rows_of_variants_with_string_options_load():
    from lra.experiments import bench

    for name, kwargs in (("adamra-rand", {"router": "random", "gate": "mask"}),
                         ("sparse_fixed-split", {"heads": "split", "stride": 16, "summary": 4})):
        c = bench.bench_config("listops", name, 64, 2, "smoke", {})
        assert (c.model.name, c.model.attention_kwargs.to_dict()) == (name, kwargs)
