"""Train, evaluate and test one task x model: `train(config, workdir)`.

The workdir gets config.json, metrics.jsonl (a line per evaluation),
summary.json (schema in DESIGN.md) and checkpoints/{latest,best}. The batch at
step s is a pure function of (seed, s) and dropout keys are fold_in(key, s), so
rerunning the same command after a kill resumes from the latest checkpoint and
ends with the metrics of an uninterrupted run. Data parallel over the local
devices (or all processes' devices with config.distributed) via jax.sharding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lra import data, models
from lra.data import pipeline, store
from lra.errors import DiskFull, LRAError, is_disk_full, is_oom
from lra.training import optim
from lra.training.checkpoint import Checkpoints
from lra.training.config import model_name
from lra.training.workdir import (
    Terminated,
    check_config,
    learned,
    lock,
    read_json,
    read_metrics,
    write_json,
    write_metrics,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_threads() -> int:
    """The CPUs this process may run on: XLA:CPU sizes its thread pool by them, and the
    pool's size changes how reductions split, so a run's numbers depend on it (a run pinned to
    one core and one on two differ; each is exact when repeated)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_splits(config) -> tuple[dict, dict[str, dict]]:
    """(meta, {split: arrays}) of the prepared data, labels checked against num_classes; the
    chance figures of data prepared before meta.json held them come from the train labels."""
    path = data.open_dataset(config)
    meta = store.read_meta(path)
    splits = {s: store.read_split(path, s) for s in store.SPLITS}
    if "chance_loss" not in meta:
        meta.update(store.chance(splits["train"]["labels"]))
    for split, arrays in splits.items():
        labels = arrays["labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= meta["num_classes"]):
            bad = int(np.flatnonzero((labels < 0) | (labels >= meta["num_classes"]))[0])
            raise LRAError(f"{path / f'{split}.labels.npy'}: row {bad} has label "
                           f"{int(labels[bad])}, outside 0..{meta['num_classes'] - 1}; "
                           "prepare the data again")
    return meta, splits


def device_mesh(config) -> Mesh:
    devices = jax.devices()
    if config.train.get("num_devices", 0):
        devices = devices[: config.train.num_devices]
    if config.train.batch_size % len(devices):
        raise LRAError(f"train.batch_size={config.train.batch_size} is not divisible by the "
                       f"{len(devices)} devices; pick a multiple")
    return Mesh(np.array(devices), ("data",))


def peak_memory(compiled) -> tuple[int, str]:
    """Peak device memory: allocator stats on GPU/TPU, XLA's memory analysis on CPU."""
    stats = jax.local_devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_memory_stats"
    m = compiled.memory_analysis()
    total = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes)
    return int(total), "xla_memory_analysis"


class Trainer:
    """Holds the model's pure state and the jitted steps for one config."""

    def __init__(self, config, meta: dict, mesh: Mesh):
        self.config, self.mesh = config, mesh
        model = models.build(config, meta, seed=config.seed)
        self.graphdef, params, self.rng_state, rest = nnx.split(
            model, nnx.Param, nnx.RngState, ...)
        self.num_params = sum(x.size for x in jax.tree.leaves(params))
        self.tx = optim.optimizer(config.train)
        self.replicated = NamedSharding(mesh, P())
        self.batch_sharding = NamedSharding(mesh, P("data"))
        state = {"params": params, "rest": rest, "opt": self.tx.init(params)}
        self.state = jax.device_put(state, self.replicated)
        self._train = jax.jit(self._train_step, donate_argnums=0)
        self._eval = jax.jit(self._eval_step)

    def _forward(self, params, rest, batch, *, step=None):
        rngs = self.rng_state
        if step is not None:  # fresh dropout keys each step: fold the step into every stream
            rngs = jax.tree.map(
                lambda x: jax.random.fold_in(x, step)
                if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, rngs)
        # fresh Variable objects at this trace level, so layers may update their own state
        rest = jax.tree.map(lambda x: x, rest)
        model = nnx.merge(self.graphdef, params, rngs, rest)
        logits, sown = nnx.capture(model, nnx.Intermediate)(batch, deterministic=step is None)
        aux = sum((jnp.sum(v) for v in jax.tree.leaves(sown)), jnp.float32(0))
        new_rest = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.RngState)))
        return logits.astype(jnp.float32), aux, new_rest

    def _train_step(self, state, batch, step):
        weight = self.config.train.aux_loss_weight

        def loss_fn(params):
            logits, aux, rest = self._forward(params, state["rest"], batch, step=step)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
            acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
            return loss + weight * aux, (rest, loss, acc)

        grads, (rest, loss, acc) = jax.grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = self.tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "rest": rest, "opt": opt}, {"loss": loss, "accuracy": acc}

    def _eval_step(self, state, batch):
        logits, _, _ = self._forward(state["params"], state["rest"], batch)
        w = batch["weights"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
        return {"loss": jnp.sum(loss * w), "correct": jnp.sum(correct * w), "count": jnp.sum(w)}

    def shard(self, batch: dict):
        """The global batch -> a batch-sharded array (each process gives its own rows)."""
        n, p = len(batch["labels"]), jax.process_count()
        rows = slice(jax.process_index() * n // p, (jax.process_index() + 1) * n // p)
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v[rows]))
                for k, v in batch.items()}

    def compile(self, batch: dict):
        start = time.perf_counter()
        self._train = self._train.lower(self.state, self.shard(batch), 0).compile()
        return time.perf_counter() - start

    def step(self, batch: dict, step: int) -> dict:
        self.state, metrics = self._train(self.state, self.shard(batch), step)
        return metrics

    def evaluate(self, arrays: dict, max_batches: int = 0) -> dict:
        totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        for batch in pipeline.eval_batches(arrays, self.config.train.batch_size, max_batches):
            out = jax.device_get(self._eval(self.state, self.shard(batch)))
            totals = {k: totals[k] + float(out[k]) for k in totals}
        count = max(totals["count"], 1.0)
        return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count}

    def checkpoint_state(self):
        return self.state

    def best_state(self):
        return {"params": self.state["params"], "rest": self.state["rest"]}


class Wandb:
    """Optional wandb logging; mode 'disabled' never imports it."""

    def __init__(self, config, workdir: Path):
        self.run = None
        if config.wandb.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            raise LRAError("config.wandb.mode needs wandb: pip install 'lra-harness[wandb]'") from None
        self.run = wandb.init(project=config.wandb.project, entity=config.wandb.entity or None,
                              mode=config.wandb.mode, config=config.to_dict(), dir=str(workdir),
                              name=workdir.name, resume="allow", id=workdir.name)

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


class StopRequest:
    """A signal handler that asks the run to stop at its next step: SIGTERM (schedulers) or
    SIGINT (Ctrl-C). The loop then saves `latest` there, outside any checkpoint write or
    callback that a raised KeyboardInterrupt could break; a second Ctrl-C stops at once."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None


def train(config, workdir: str | Path, progress: Progress | None = None) -> dict:
    """Run (or resume, or skip if finished) the run `config` in `workdir`; returns the summary.
    Holds the workdir's lock throughout; on SIGTERM (raises Terminated) or Ctrl-C (raises
    KeyboardInterrupt) saves `latest` at the current step first."""
    stop = StopRequest()
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
        if main else {}
    try:
        # multi-host: the processes share the workdir; the first one holds its lock
        first = not config.get("distributed") or jax.process_index() == 0
        with lock(Path(workdir)) if first else contextlib.nullcontext():
            return _train(config, Path(workdir), progress, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _train(config, workdir: Path, progress: Progress | None, stop: StopRequest) -> dict:
    config_dict = config.to_dict()
    check_config(workdir, config_dict)
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        if summary.get("status") in ("ok", "diverged", "stuck"):
            log.info("%s already finished (%s)", workdir, summary["status"])
            return summary

    meta, splits = load_splits(config)
    mesh = device_mesh(config)
    trainer = Trainer(config, meta, mesh)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config_dict)

    t = config.train
    summary = {
        "task": config.task, "model": model_name(config),
        "attention": config.model.attention, "size": config.size,
        "seed": config.seed, "params": int(trainer.num_params), "steps": 0,
        "device": f"{jax.devices()[0].device_kind} x{mesh.size}", "jax_version": jax.__version__,
        "flax_version": flax.__version__, "optax_version": optax.__version__,
        "cpu_threads": cpu_threads(), "git_commit": git_commit(), "batch_size": t.batch_size,
        "max_len": meta["max_len"],
        "chance_accuracy": meta["chance_accuracy"], "chance_loss": meta["chance_loss"],
    }
    ckpt = Checkpoints(workdir / "checkpoints")
    wandb = Wandb(config, workdir)
    try:
        summary.update(_loop(config, trainer, splits, ckpt, workdir, wandb, progress,
                             meta["chance_loss"], stop))
        if summary["status"] != "terminated":
            summary.update(learned(summary["best_val_acc"], meta["chance_accuracy"],
                                   t.chance_margin))
    except Exception as e:  # recorded, then re-raised for the caller (the sweep reads the status)
        if is_disk_full(e):
            full = disk_full(e, workdir, ckpt)
            summary.update(status="failed", error=str(full))
            with contextlib.suppress(OSError):  # the disk may still be too full for it
                write_json(summary_path, summary)
            raise full from e
        summary.update(status="oom" if is_oom(str(e)) else "failed",
                       error=str(e).splitlines()[0][:500])
        write_json(summary_path, summary)
        raise
    finally:
        ckpt.close()
        wandb.finish()
    if summary["status"] == "terminated":  # not finished: no summary, resumed by a rerun
        if stop.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(summary["steps"])
    write_json(summary_path, summary)
    return summary


def disk_full(e: Exception, workdir: Path, ckpt: Checkpoints) -> DiskFull:
    """The one-line report of a write that ran out of disk: what, and where the run resumes."""
    what = e.args[0] if isinstance(e, DiskFull) else (getattr(e, "filename", None)
                                                      or f"a file in {workdir}")
    resume = max(ckpt.latest.all_steps(), default=0)
    return DiskFull(f"no space left on device writing {what}; the run resumes from step {resume} "
                    "once space is freed")


def at_chance(rows: list[dict], warmup_steps: int, chance_loss: float) -> int:
    """How many of the last evaluations (after warm-up) had a validation loss within 1% of
    `chance_loss`, the loss of predicting the training label prior."""
    streak = 0
    for row in reversed(rows):
        if row["step"] <= warmup_steps or abs(row["val_loss"] - chance_loss) > 0.01 * chance_loss:
            break
        streak += 1
    return streak


def _loop(config, trainer: Trainer, splits, ckpt: Checkpoints, workdir: Path, wandb, progress,
          chance_loss: float, stop: StopRequest):
    t = config.train
    first = pipeline.train_batch(splits["train"], 0, t.batch_size, config.seed)
    compile_seconds = trainer.compile(first)
    peak, peak_method = peak_memory(trainer._train)

    record = {"best_val_acc": -1.0, "best_step": -1, "test_acc": None,
              "step_seconds": 0.0, "train_seconds": 0.0}
    start_step, rows, pending = 0, [], []
    restored = ckpt.restore_latest(trainer.checkpoint_state())
    if restored is not None:
        trainer.state, record = restored[0], restored[1]
        start_step = record.pop("step")
        # train metrics of the steps since the last log (a SIGTERM checkpoint), as fetched
        pending = [{k: np.float32(v) for k, v in m.items()} for m in record.pop("pending", [])]
        rows = [r for r in read_metrics(workdir) if r["step"] <= start_step]
        write_metrics(workdir, rows)
        log.info("resumed %s at step %d", workdir, start_step)

    began = time.perf_counter() - record["train_seconds"]
    window_start, status = time.perf_counter(), "ok"
    done = saved = start_step
    for step in range(start_step, t.steps):
        if stop.is_set():  # SIGTERM, Ctrl-C: save this step (and the unlogged train metrics)
            if done > saved:
                record["train_seconds"] = time.perf_counter() - began
                fetched = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
                ckpt.save_latest(done, trainer.checkpoint_state(),
                                 {**record, "step": done, "pending": fetched})
            log.info("%s: %s stops at step %d", signal.Signals(stop.signum).name, workdir, done)
            status = "terminated"
            break
        pending.append(trainer.step(pipeline.train_batch(splits["train"], step, t.batch_size,
                                                         config.seed), step))
        done = step + 1
        if done % t.log_every and done % t.eval_every and done != t.steps:
            continue
        fetched = jax.device_get(pending)
        now = time.perf_counter()
        record["step_seconds"] += now - window_start
        train_loss = float(np.mean([m["loss"] for m in fetched]))
        train_acc = float(np.mean([m["accuracy"] for m in fetched]))
        pending = []
        rate = len(fetched) / max(now - window_start, 1e-9)
        if math.isfinite(train_loss) and (done % t.eval_every == 0 or done == t.steps):
            val = trainer.evaluate(splits["val"], t.eval_batches)
            row = {"step": done, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                   "elapsed_seconds": now - began}
            if val["accuracy"] > record["best_val_acc"]:
                test = trainer.evaluate(splits["test"])
                record.update(best_val_acc=val["accuracy"], best_step=done,
                              test_acc=test["accuracy"])
                row["test_accuracy"] = test["accuracy"]
                ckpt.save_best(done, trainer.best_state())
            rows.append(row)
            write_metrics(workdir, rows)
            wandb.log({k: v for k, v in row.items() if k != "step"}, done)
            record["train_seconds"] = time.perf_counter() - began
            ckpt.save_latest(done, trainer.checkpoint_state(), {**record, "step": done})
            saved = done
        streak = at_chance(rows, t.warmup_steps, chance_loss)
        if progress:
            progress(done, t.steps, {"loss": train_loss, "accuracy": train_acc, "steps/s": rate,
                                     "stuck": streak > 0})
        if not math.isfinite(train_loss):
            status = "diverged"
            log.warning("non-finite loss at step %d: run diverged", done)
            break
        if 0 < t.stuck_evals <= streak:
            status = "stuck"
            log.warning("validation loss within 1%% of chance (%.4f) for %d evaluations: run stuck "
                        "at step %d", chance_loss, streak, done)
            break
        window_start = time.perf_counter()

    return {
        "status": status, "steps": done,
        "best_val_acc": record["best_val_acc"] if record["best_step"] >= 0 else None,
        "best_step": record["best_step"], "test_acc": record["test_acc"],
        "train_seconds": round(time.perf_counter() - began, 3),
        "compile_seconds": round(compile_seconds, 3),
        "examples_per_second": round(done * t.batch_size / max(record["step_seconds"], 1e-9), 2),
        "peak_memory_bytes": peak, "peak_memory_method": peak_method,
    }
