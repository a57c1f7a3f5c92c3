"""Speed and memory of one training step (forward + backward + update) per method and length.

Each (method, length) is measured in a fresh process: the median step time of
`steps` steps after `warmup`, compile time separately, and peak memory from the
device allocator on GPU/TPU or from XLA's memory analysis of the compiled step on
CPU (the field `memory_method` says which). With `rounds` > 1 the whole grid is
measured that many times over and each row takes the median of its rounds. An OOM
is recorded and the benchmark goes on. Results, with a fitted scaling exponent of
time against length per row and the XLA_FLAGS and GLIBC_TUNABLES in force (both change
CPU step times; `lra` sets the latter itself, lra/cli/cpu_malloc.py), go to bench.json.

A row is a method at its preset for the size, or a named variant of one
(configs/models.py VARIANTS, e.g. `performer-32`, AdaMRA Table 2's Performer with 32
features): the row keeps the variant's name and records the method and hyperparameters
it ran. `--models` takes methods, variants and groups: `all` (every registered method)
and `table2` (AdaMRA Table 2's rows, configs/models.py GROUPS). `paper_table` puts the
4K rows beside AdaMRA Table 2's own figures (PAPER_TABLE2).
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

# AdaMRA (Zhang et al. 2021) Table 2, as issue 18 transcribes it: IMDb byte-level text, batch 16,
# one T4 GPU, length 4K. The Transformer's training step in ms, and each row's speed-up over it
# ({paper row: (its bench rows, speed-up)}); the issue gives one figure for the "Ours" rows.
PAPER_TABLE2 = {"device": "T4", "length": 4096, "softmax_ms": 1007.0, "speedup": {
    "Transformer": (("softmax",), 1.0), "Linear Trans.": (("linear",), 14.6),
    "Performer-32": (("performer-32",), 10.7),
    "AdaMRA (Ours)": (("adamra-1/2..1/16", "adamra-1/4..1/32"), 10.3),
    "Linformer": (("linformer",), 7.2), "Reformer": (("reformer",), 5.0),
    "Nystromformer-32": (("nystrom-32",), 4.3), "BigBird": (("bigbird",), 2.4)}}


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
    return config.load(f"{task}:model={model},size={size}",
                       {**overrides, "data.max_len": str(length), "train.batch_size": str(batch)})


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
            "peak_memory_bytes": peak, "memory_method": method, "params": trainer.num_params,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


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
        rounds: int = 1, report=lambda row: None, checkpoint=lambda result: None) -> dict:
    """Measure every (model, length) `rounds` times, round after round, so that a noisy
    spell on a shared machine slows one round of every method rather than all rounds of one.
    `checkpoint` gets the result so far after every row (a run cut short keeps those)."""
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
            checkpoint(result(task, size, batch, lengths, steps, warmup, rounds, models,
                              [combine(done[job], batch) for job in jobs if done[job]], final=False))
    return result(task, size, batch, lengths, steps, warmup, rounds, models,
                  [combine(done[job], batch) for job in jobs])


def result(task, size, batch, lengths, steps, warmup, rounds, models, rows, final=True) -> dict:
    """bench.json's content: the settings, the rows and each model's scaling exponents. The
    device is the one the rows ran on; this process asks jax only at the end, when no row
    says (a GPU held here while the rows run would take their memory)."""
    ran = [r for r in rows if "device" in r]
    if ran:
        device, backend = ran[0]["device"], ran[0]["backend"]
    else:
        device, backend = (jax.devices()[0].device_kind, jax.default_backend()) if final else ("?", "?")
    of = lambda m: [r for r in rows if r["model"] == m]  # noqa: E731
    exponents = {m: scaling_exponent(of(m)) for m in models}
    memory = {m: scaling_exponent(of(m), "peak_memory_bytes") for m in models}
    return {"task": task, "size": size, "batch": batch, "lengths": lengths, "steps": steps,
            "warmup": warmup, "rounds": rounds, "device": device,
            "backend": backend, "jax_version": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "results": rows,
            "scaling_exponents": exponents, "memory_exponents": memory}


def paper_table(result: dict, length: int | None = None):
    """A report.Table of the rows at `length` (default PAPER_TABLE2's, 4K) beside the paper's
    4K figures: step ms, speed-up (examples/s ratio to softmax) and memory ratio, paper step
    ms and speed-up; None when no row ran at that length."""
    from lra.experiments.report import Table, mib

    length = length or PAPER_TABLE2["length"]
    ours = {r["model"]: r for r in result["results"] if r["length"] == length}
    if not ours:
        return None
    paper = {m: (label, x) for label, (rows, x) in PAPER_TABLE2["speedup"].items() for m in rows}
    base = ours.get("softmax", {})
    header = ["Model", "step ms", "speed-up", "memory", "paper row", "paper step ms",
              "paper speed-up"]
    rows, records = [], []
    for model, row in ours.items():
        label, x = paper.get(model, ("–", None))
        rec = {"model": model, "status": row["status"], "paper_row": label, "paper_speedup": x,
               "paper_step_ms": None if x is None else round(PAPER_TABLE2["softmax_ms"] / x, 1)}
        if row["status"] == "ok":
            rec.update(step_ms=1000 * row["step_seconds"], peak_memory_bytes=row["peak_memory_bytes"])
            if base.get("status") == "ok":
                rec.update(speedup=row["examples_per_second"] / base["examples_per_second"],
                           memory_ratio=row["peak_memory_bytes"] / base["peak_memory_bytes"])
        records.append(rec)
        memory = (f"{rec['memory_ratio']:.2f}×" if "memory_ratio" in rec else
                  f"{mib(rec['peak_memory_bytes'])} MiB" if "peak_memory_bytes" in rec else "")
        rows.append([model, f"{rec['step_ms']:.1f}" if "step_ms" in rec else row["status"].upper(),
                     f"{rec['speedup']:.2f}×" if "speedup" in rec else "", memory, label,
                     "" if x is None else f"{rec['paper_step_ms']:.0f}",
                     "" if x is None else f"{x:.1f}×"])
    notes = [f"{result['task']} at size={result['size']}, batch {result['batch']}, length {length}, "
             f"on {result['device']}; paper: AdaMRA Table 2 (IMDb, batch 16, length "
             f"{PAPER_TABLE2['length']}) on a {PAPER_TABLE2['device']}, its step ms = "
             f"{PAPER_TABLE2['softmax_ms']:.0f} / speed-up.",
             "speed-up: examples/s over softmax's; memory: peak memory over softmax's (the paper's "
             "memory figures are not transcribed here). The paper gives one AdaMRA figure for its "
             "two Ours rows."]
    return Table(f"paper_{result['task']}_{length}", f"Against AdaMRA Table 2 (ours at {length}, "
                 f"the paper at {PAPER_TABLE2['length']})", header, rows, records, notes)


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
