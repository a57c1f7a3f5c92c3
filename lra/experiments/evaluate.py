"""`lra eval`: a trained run's best checkpoint evaluated with another attention method.

Top-k attention is claimed to be a drop-in replacement for softmax attention at
inference, without retraining (Gupta et al. 2021, §5): `lra eval --workdir W
--config.model.attention=topk` restores W's best checkpoint into a model whose layers
use the new method and evaluates it on the validation and test splits, writing
`W/eval_<method>[-<key><value>...].json` (one file per method and attention_kwargs override).

Swapping works when the new method's parameters are exactly the trained ones (the
shared q, k, v and output projections of MultiHeadAttention); a method with parameters
of its own (AdaMRA's router, Linformer's length projections, a shared-QK layer without
a key projection) is refused with an LRAError naming the parameters that differ.
Non-trainable state (random features, LSH rotations, k-means centroids) comes from the
checkpoint when the method is unchanged and its shapes match, and otherwise from the new
method's initialisation with the run's seed. As with `lra train`, changing
model.attention starts from the new method's preset (configs/models.py) before the
model.attention_kwargs.* overrides. Only model.* keys, train.batch_size and
train.eval_batches may be overridden: the data must stay the trained run's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import ml_collections

from lra.errors import LRAError
from lra.training import config, train
from lra.training.checkpoint import Checkpoints
from lra.training.workdir import read_json, write_json

log = logging.getLogger(__name__)

EVAL_KEYS = ("train.batch_size", "train.eval_batches")


def saved_config(workdir: Path) -> ml_collections.ConfigDict:
    path = workdir / "config.json"
    if not path.is_file():
        raise LRAError(f"{workdir} has no config.json; pass the --workdir of a finished "
                       "`lra train` run")
    return ml_collections.ConfigDict(read_json(path))


def swapped_config(saved: ml_collections.ConfigDict, overrides: dict[str, str]):
    """The trained config with `overrides` applied (a new method starts from its preset)."""
    bad = [k for k in overrides if not k.startswith("model.") and k not in EVAL_KEYS]
    if bad:
        raise LRAError(f"--config.{bad[0]}: lra eval only changes model.* keys, "
                       f"{' and '.join(EVAL_KEYS)}; the data must stay the trained run's")
    return config.apply_overrides(ml_collections.ConfigDict(saved.to_dict()), overrides)


def shapes(tree) -> dict[str, tuple]:
    """'tower.encoder.blocks.0.attn.query.kernel' -> shape, for every leaf of an nnx State."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path
                 if not isinstance(k, jax.tree_util.GetAttrKey)]
        out[".".join(parts)] = tuple(leaf.shape)
    return out


def param_differences(trained, swapped) -> list[str]:
    a, b = shapes(trained), shapes(swapped)
    return ([f"{k} (new)" for k in sorted(b.keys() - a.keys())]
            + [f"{k} (absent)" for k in sorted(a.keys() - b.keys())]
            + [f"{k} {a[k]} -> {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]])


def restore(workdir: str | Path, overrides: dict[str, str] | None = None):
    """(config, trainer, splits, trained config): the best checkpoint of `workdir` loaded
    into a Trainer for the (possibly swapped) config."""
    workdir = Path(workdir)
    saved = saved_config(workdir)
    c = swapped_config(saved, dict(overrides or {}))
    if not (workdir / "checkpoints" / "best").is_dir():
        raise LRAError(f"{workdir} has no best checkpoint (checkpoints/best); train the run "
                       "until its first evaluation")
    meta, splits = train.load_splits(saved)
    mesh = train.device_mesh(c)
    trained = train.Trainer(saved, meta, mesh)
    ckpt = Checkpoints(workdir / "checkpoints")
    try:
        best = ckpt.restore_best(trained.best_state())
    finally:
        ckpt.close()
    if best is None:
        raise LRAError(f"{workdir / 'checkpoints/best'} holds no checkpoint; train the run "
                       "until its first evaluation")
    trainer = trained if c.to_dict() == saved.to_dict() else train.Trainer(c, meta, mesh)
    diff = param_differences(best["params"], trainer.state["params"])
    if diff:
        raise LRAError(f"cannot swap {config.model_name(saved)} for {config.model_name(c)} in "
                       f"{workdir}: the parameters differ ({', '.join(diff[:4])}"
                       f"{', ...' if len(diff) > 4 else ''}); only methods whose parameters "
                       "are the shared q, k, v and output projections can be swapped in")
    same_state = (c.model.attention == saved.model.attention
                  and shapes(best["rest"]) == shapes(trainer.state["rest"]))
    rest = best["rest"] if same_state else trainer.state["rest"]
    trainer.state = {**trainer.state, "params": best["params"], "rest": rest}
    return c, trainer, splits, saved


def result_name(method: str, overrides: dict[str, str]) -> str:
    """eval_<method>.json, with each model.attention_kwargs override appended (eval_topk-k64.json),
    so that evaluations at different settings keep their own files."""
    prefix = "model.attention_kwargs."
    kwargs = "".join(f"-{k[len(prefix):]}{v}" for k, v in sorted(overrides.items())
                     if k.startswith(prefix))
    return f"eval_{method}{kwargs}.json".replace("/", "_")


def evaluate(workdir: str | Path, overrides: dict[str, str]) -> dict:
    """Validation and test accuracy of `workdir`'s best checkpoint under `overrides`;
    also written next to the run, under result_name()."""
    workdir = Path(workdir)
    start = time.perf_counter()
    c, trainer, splits, saved = restore(workdir, overrides)
    val = trainer.evaluate(splits["val"], c.train.eval_batches)
    test = trainer.evaluate(splits["test"])
    summary = read_json(workdir / "summary.json") if (workdir / "summary.json").exists() else {}
    result = {
        "workdir": str(workdir), "task": c.task, "size": c.size,
        "trained_with": saved.model.attention, "evaluated_with": c.model.attention,
        "attention_kwargs": c.model.attention_kwargs.to_dict(), "overrides": dict(overrides),
        "val_accuracy": val["accuracy"], "val_loss": val["loss"],
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "trained_best_val_acc": summary.get("best_val_acc"),
        "trained_test_acc": summary.get("test_acc"), "best_step": summary.get("best_step"),
        "eval_seconds": round(time.perf_counter() - start, 3),
    }
    write_json(workdir / result_name(c.model.attention, overrides), result)
    log.info("%s evaluated with %s: test accuracy %.4f", workdir, c.model.attention,
             test["accuracy"])
    return result
