"""Bad config values, config files and CLI inputs stop with one line and exit 2, before
any workdir, data folder or output file is made; every shipped config passes."""

import pytest

from lra import attention, cli, data
from lra.training import config, config_schema

FILES = {  # user config (and sweep) files, written outside the working directory
    "bad_value.py": "c.train.batch_size = 0",
    "unknown_key.py": "c.train.batchsize = 8",
    "other_task_key.py": "c.data.resolution = 64",
    "none_for_float.py": "c.train.lr = None",
    "bool_for_int.py": "c.train.steps = True",
    "float_for_int.py": "c.train.steps = 1.5",
    "bad_choice.py": "c.model.pooling = 'max'",
}
SWEEP = ("def sweep():\n    return [dict(task='listops', model='softmax', size='smoke'),\n"
         "            dict(task='listops', model='softmax', size='smoke', seed=1,\n"
         "                 overrides={'train.lr': 'nan'})]\n")


def train(*overrides, spec="listops:size=smoke"):
    return ["train", "--config", spec, "--workdir", "w", *(f"--config.{o}" for o in overrides)]


def method(name, key, value):
    return train(f"model.attention_kwargs.{key}={value}", spec=f"listops:model={name},size=smoke")


SMOKE = ["--tasks", "listops", "--sizes", "smoke", "--workdir", "w"]
BENCH = ["bench", "--task", "listops", "--models", "softmax", "--lengths", "64", "--size", "smoke"]

# (argv, words the one-line message must hold: the key and the value)
CASES = {
    # the three
    "batch_size=0": (train("train.batch_size=0"), "train.batch_size", "0"),
    "steps=-5": (train("train.steps=-5"), "train.steps", "-5"),
    "lr=nan": (train("train.lr=nan"), "train.lr", "nan"),
    # train.*
    "lr=0": (train("train.lr=0"), "train.lr", "0"),
    "lr=inf": (train("train.lr=inf"), "train.lr", "inf"),
    "batch_size=abc": (train("train.batch_size=abc"), "train.batch_size", "abc"),
    "steps=1.5": (train("train.steps=1.5"), "train.steps", "1.5"),
    "warmup_steps=-1": (train("train.warmup_steps=-1"), "train.warmup_steps", "-1"),
    "eval_every=0": (train("train.eval_every=0"), "train.eval_every", "0"),
    "log_every=0": (train("train.log_every=0"), "train.log_every", "0"),
    "eval_batches=-1": (train("train.eval_batches=-1"), "train.eval_batches", "-1"),
    "weight_decay<0": (train("train.weight_decay=-0.1"), "train.weight_decay", "-0.1"),
    "grad_clip<0": (train("train.grad_clip=-1"), "train.grad_clip", "-1"),
    "b1=1": (train("train.b1=1"), "train.b1", "1"),
    "b2<0": (train("train.b2=-0.5"), "train.b2", "-0.5"),
    "eps=0": (train("train.eps=0"), "train.eps", "0"),
    "schedule=foo": (train("train.schedule=foo"), "train.schedule", "foo"),
    "num_devices=-1": (train("train.num_devices=-1"), "train.num_devices", "-1"),
    "aux_loss_weight=nan": (train("train.aux_loss_weight=nan"), "train.aux_loss_weight", "nan"),
    "chance_margin<0": (train("train.chance_margin=-0.1"), "train.chance_margin", "-0.1"),
    "chance_margin=1": (train("train.chance_margin=1"), "train.chance_margin", "1"),
    "chance_margin=nan": (train("train.chance_margin=nan"), "train.chance_margin", "nan"),
    "chance_margin=abc": (train("train.chance_margin=abc"), "train.chance_margin", "abc"),
    "stuck_evals=-1": (train("train.stuck_evals=-1"), "train.stuck_evals", "-1"),
    "stuck_evals=1.5": (train("train.stuck_evals=1.5"), "train.stuck_evals", "1.5"),
    "stuck_evals=abc": (train("train.stuck_evals=abc"), "train.stuck_evals", "abc"),
    "unknown train key": (train("train.nope=1"), "train.nope", "does not exist"),
    # model.*
    "dropout=1": (train("model.dropout=1"), "model.dropout", "1"),
    "attention_dropout<0": (train("model.attention_dropout=-0.1"), "model.attention_dropout", "-0.1"),
    "num_layers=0": (train("model.num_layers=0"), "model.num_layers", "0"),
    "emb_dim=0": (train("model.emb_dim=0"), "model.emb_dim", "0"),
    "mlp_dim=0": (train("model.mlp_dim=0"), "model.mlp_dim", "0"),
    "num_heads=0": (train("model.num_heads=0"), "model.num_heads", "0"),
    "num_heads=3": (train("model.num_heads=3"), "model.num_heads", "3"),
    "classifier_dim=-1": (train("model.classifier_dim=-1"), "model.classifier_dim", "-1"),
    "pooling=max": (train("model.pooling=max"), "model.pooling", "max"),
    "pos_emb=foo": (train("model.pos_emb=foo"), "model.pos_emb", "foo"),
    "impl=foo": (train("model.impl=foo"), "model.impl", "foo"),
    "interaction=foo": (train("model.interaction=foo"), "model.interaction", "foo"),
    "causal=maybe": (train("model.causal=maybe"), "model.causal", "maybe"),
    "unknown method": (train(spec="listops:model=nope,size=smoke"), "attention method", "nope"),
    "no config file": (train(spec="configs/nope.py"), "configs/nope.py", "valid tasks"),
    # method options (each method checks its own, as the layer is built without arrays)
    "topk k=0": (method("topk", "k", 0), "model.attention_kwargs.k", "0"),
    "local block_size=0": (method("local", "block_size", 0), "model.attention_kwargs.block_size", "0"),
    "adamra subheads=3": (method("adamra", "subheads", 3), "model.attention_kwargs.subheads", "3"),
    "nystrom num_landmarks=0": (method("nystrom", "num_landmarks", 0),
                                "model.attention_kwargs.num_landmarks", "0"),
    "performer nb_features=0": (method("performer", "nb_features", 0),
                                "model.attention_kwargs.nb_features", "0"),
    "performer nb_features=abc": (method("performer", "nb_features", "abc"),
                                  "model.attention_kwargs.nb_features", "abc"),
    "unknown method option": (method("softmax", "zz", 1), "model.attention_kwargs.zz", "softmax"),
    # data.*, seed, size, wandb
    "max_len=0": (train("data.max_len=0"), "data.max_len", "0"),
    "num_train=-1": (train("data.num_train=-1"), "data.num_train", "-1"),
    "source=foo": (train("data.source=foo"), "data.source", "foo"),
    "min_length>max_length": (train("data.min_length=70"), "data.min_length", "70"),
    "seed=-1": (train("seed=-1"), "seed", "-1"),
    "data.seed=-1": (train("data.seed=-1"), "data.seed", "-1"),
    "wandb.mode=foo": (train("wandb.mode=foo"), "wandb.mode", "foo"),
    "size=huge": (train(spec="listops:size=huge"), "size", "huge"),
    "resolution=48": (train("data.resolution=48", spec="pathfinder:size=smoke"), "data.resolution", "48"),
    "difficulty=medium": (train("data.difficulty=medium", spec="pathfinder:size=smoke"),
                          "data.difficulty", "medium"),
    "style=fancy": (train("data.style=fancy", spec="pathfinder:size=smoke"), "data.style", "fancy"),
    "distractor_paddles=-1": (train("data.distractor_paddles=-1", spec="pathfinder:size=smoke"),
                              "data.distractor_paddles", "-1"),
    "val_fraction=1.5": (train("data.val_fraction=1.5", spec="text:size=smoke"), "data.val_fraction", "1.5"),
    "val_from_test=maybe": (train("data.val_from_test=maybe", spec="text:size=smoke"),
                            "data.val_from_test", "maybe"),
    # config files of one's own
    "file: batch_size=0": (train(spec="{files}/bad_value.py"), "train.batch_size", "0"),
    "file: unknown key": (train(spec="{files}/unknown_key.py"), "train.batchsize", "does not exist"),
    "file: another task's key": (train(spec="{files}/other_task_key.py"), "data.resolution",
                                 "does not exist"),
    "file: lr=None": (train(spec="{files}/none_for_float.py"), "train.lr", "None"),
    "file: steps=True": (train(spec="{files}/bool_for_int.py"), "train.steps", "True"),
    "file: steps=1.5": (train(spec="{files}/float_for_int.py"), "steps", "1.5"),
    "file: pooling=max": (train(spec="{files}/bad_choice.py"), "model.pooling", "max"),
    # the other commands
    "sweep override": (["sweep", *SMOKE, "--config.train.steps=-5"], "train.steps", "-5"),
    "sweep seeds": (["sweep", *SMOKE, "--seeds", "0,-1"], "seed", "-1"),
    "sweep file": (["sweep", "--from", "{files}/my_sweep.py", "--workdir", "w"], "train.lr", "nan"),
    "bench override": ([*BENCH, "--config.train.lr=nan"], "train.lr", "nan"),
    "bench batch": ([*BENCH, "--batch", "0"], "batch", "0"),
    "bench steps": ([*BENCH, "--steps", "0"], "--steps", "0"),
    "prepare override": (["data", "prepare", "listops", "--size", "smoke", "--config.data.num_val=-3"],
                         "data.num_val", "-3"),
    "prepare source": (["data", "prepare", "listops", "--size", "smoke", "--source", "foo"],
                       "source", "foo"),
}


@pytest.mark.parametrize("argv, key, value", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, key, value, tmp_path, capsys,
                                                          monkeypatch):
    files, cwd = tmp_path / "files", tmp_path / "cwd"
    files.mkdir()
    cwd.mkdir()
    for name, line in FILES.items():
        (files / name).write_text("from lra.configs import listops\n\n\ndef get_config(arg=None):\n"
                                  f"    c = listops.get_config(arg)\n    {line}\n    return c\n")
    (files / "my_sweep.py").write_text(SWEEP)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    assert cli.main([a.replace("{files}", str(files)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lra: error: ") and "\n" not in err
    assert key in err and value in err, err
    assert not list(cwd.iterdir()) and not (tmp_path / "data").exists()


def test_the_battery_is_large():
    assert len(CASES) >= 30


@pytest.mark.parametrize("task", data.names())
def test_every_key_of_every_task_has_a_rule(task):
    c = config.config_module(task).get_config()
    assert set(config_schema.values(c)) <= set(config_schema.KEYS)


@pytest.mark.parametrize("task", data.names())
def test_every_task_and_size_passes(task):
    for size in config.sizes():
        config.load(f"{task}:size={size}")


def test_every_method_passes():
    for name in attention.names():
        config.load(f"listops:model={name},size=smoke")
