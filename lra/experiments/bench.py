"""Speed and memory of one training step (forward + backward + update) per method and length.

Each (method, length) is measured in a fresh process: the median step time of
`steps` steps after `warmup`, compile time separately, and peak memory from the
device allocator on GPU/TPU or from XLA's memory analysis of the compiled step on
CPU (the field `memory_method` says which). With `rounds` > 1 the whole grid is
measured that many times over and each row takes the median of its rounds. An OOM
is recorded and the benchmark goes on. Results, with a fitted scaling exponent of
time against length per row and the XLA_FLAGS in force, go to bench.json.

A row is a method at its preset for the size, or a named variant of one
(configs/models.py VARIANTS, e.g. `performer-32`, AdaMRA Table 2's Performer with 32
features): the row keeps the variant's name and records the method and hyperparameters
it ran. `--models` takes methods, variants and groups: `all` (every registered method)
and `table2` (AdaMRA Table 2's rows, configs/models.py GROUPS).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from lra import attention, data
from lra.errors import LRAError, is_oom
from lra.training import config

log = logging.getLogger(__name__)

def model_names(text: str) -> list[str]:
    """`--models`: a comma list of methods, variants and groups, expanded in order."""
    models = config.presets()
    groups = {"all": attention.names(), **models.GROUPS}
    names = list(dict.fromkeys(n for item in text.split(",") if item
                               for n in groups.get(item, [item])))
    valid = [*attention.names(), *models.VARIANTS]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise LRAError(f"--models: unknown model {bad[0] if bad else text!r}; valid: "
                       f"{', '.join([*groups, *valid])}")
    return names


def bench_config(task: str, model: str, length: int, batch: int, size: str, overrides: dict):
    """The config of bench row `model` (a method or a variant); `overrides` come last."""
    method, kwargs = config.presets().variant(model)
    pinned = {f"model.attention_kwargs.{k}": repr(v) for k, v in kwargs.items()}
    return config.load(f"{task}:model={method},size={size}",
                       {**pinned, **overrides, "data.max_len": str(length),
                        "train.batch_size": str(batch)})


def measure(task: str, model: str, length: int, batch: int, size: str = "nystrom",
            steps: int = 5, warmup: int = 2, overrides: dict | None = None) -> dict:
    """One measurement in this process (call it in a fresh one: see `run`)."""
    from lra.training import train

    c = bench_config(task, model, length, batch, size, overrides or {})
    shape = data.info(task)  # the task's vocabulary, classes and number of sequences
    meta = {"vocab_size": shape.vocab_size, "num_classes": shape.num_classes, "max_len": length,
            "dual": shape.dual}
    trainer = train.Trainer(c, meta, train.device_mesh(c))
    rng = np.random.default_rng(0)
    batch_arrays = {"inputs": rng.integers(1, shape.vocab_size, (batch, length), dtype=np.int32),
                    "lengths": np.full(batch, length, np.int32),
                    "labels": rng.integers(0, shape.num_classes, batch, dtype=np.int32)}
    if meta["dual"]:
        batch_arrays.update(inputs2=batch_arrays["inputs"], lengths2=batch_arrays["lengths"])
    compile_s = trainer.compile(batch_arrays)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        jax.block_until_ready(trainer.step(batch_arrays, i))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak, method = train.peak_memory(trainer._train)
    return {"model": model, "attention": c.model.attention,
            "attention_kwargs": c.model.attention_kwargs.to_dict(), "length": length,
            "status": "ok", "step_seconds": statistics.median(times), "compile_seconds": compile_s,
            "examples_per_second": batch / statistics.median(times),
            "peak_memory_bytes": peak, "memory_method": method, "params": trainer.num_params}


def run_one(task, model, length, batch, size, steps, warmup, overrides, timeout) -> dict:
    """`measure` in a fresh process; an OOM or crash becomes a recorded status."""
    job = json.dumps(dict(task=task, model=model, length=length, batch=batch, size=size,
                          steps=steps, warmup=warmup, overrides=overrides))
    try:
        proc = subprocess.run([sys.executable, "-m", "lra.experiments.bench", job], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "length": length, "status": "timeout"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = proc.stderr.strip().splitlines()
    return {"model": model, "length": length,
            "status": "oom" if is_oom(proc.stderr, proc.returncode) else "failed",
            "error": err[-1][:300] if err else f"exit {proc.returncode}"}


def scaling_exponent(rows: list[dict], field: str = "step_seconds") -> float | None:
    """Slope of log(`field`) (step time, or peak_memory_bytes) against log(length), over
    the lengths that ran."""
    ok = [(r["length"], r[field]) for r in rows if r["status"] == "ok"]
    if len(ok) < 2:
        return None
    x, y = np.log([a for a, _ in ok]), np.log([b for _, b in ok])
    return float(np.polyfit(x, y, 1)[0])


def combine(rows: list[dict], batch: int) -> dict:
    """One row from a (method, length)'s rounds: the median of the rounds' step and
    compile times, each round's step time kept; a failed round makes the row failed."""
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        return bad[0]
    row = dict(rows[0])
    if len(rows) > 1:
        step = statistics.median(r["step_seconds"] for r in rows)
        row.update(step_seconds=step, examples_per_second=batch / step,
                   compile_seconds=statistics.median(r["compile_seconds"] for r in rows),
                   round_step_seconds=[r["step_seconds"] for r in rows])
    return row


def run(task: str, models: list[str], lengths: list[int], batch: int, size: str = "nystrom",
        steps: int = 5, warmup: int = 2, overrides: dict | None = None, timeout: int = 1800,
        rounds: int = 1, report=lambda row: None) -> dict:
    """Measure every (model, length) `rounds` times, round after round, so that a noisy
    spell on a shared machine slows one round of every method rather than all rounds of one."""
    if rounds < 1:
        raise LRAError(f"--rounds {rounds}: expected a positive integer")
    if steps < 1 or warmup < 0:
        raise LRAError(f"--steps {steps} --warmup {warmup}: expected steps >= 1 and warmup >= 0")
    for model in models:  # bad names, sizes or overrides fail here, before any process starts
        bench_config(task, model, lengths[0], batch, size, overrides or {})
    jobs = [(model, length) for model in models for length in lengths]
    done: dict[tuple, list[dict]] = {job: [] for job in jobs}
    for _ in range(rounds):
        for model, length in jobs:
            if any(r["status"] != "ok" for r in done[model, length]):
                continue  # an OOM or a crash is not retried
            row = run_one(task, model, length, batch, size, steps, warmup, overrides or {},
                          timeout)
            done[model, length].append(row)
            report(row)
    rows = [combine(done[job], batch) for job in jobs]
    of = lambda m: [r for r in rows if r["model"] == m]  # noqa: E731
    exponents = {m: scaling_exponent(of(m)) for m in models}
    memory = {m: scaling_exponent(of(m), "peak_memory_bytes") for m in models}
    return {"task": task, "size": size, "batch": batch, "lengths": lengths, "steps": steps,
            "warmup": warmup, "rounds": rounds, "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "jax_version": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "results": rows,
            "scaling_exponents": exponents, "memory_exponents": memory}


def parse_lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise LRAError(f"--lengths {text!r}: expected integers like 1024,2048,4096") from None
    if not lengths or min(lengths) <= 0:
        raise LRAError(f"--lengths {text!r}: expected positive integers")
    return lengths


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
