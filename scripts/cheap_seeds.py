"""How to train several seeds of one configuration cheaply on a CPU machine, measured.

(a) batching seeds: one training step of S seeds as S sequential jitted steps against one
    jax.vmap'ed step over the S stacked states (same batches, one process, pinned to one
    core by the caller);
(b) `lra sweep --jobs`: the wall time of a two-seed sweep run one after another
    (--jobs 1, each run free to use every core) against --jobs 2 (one core each).

    LRA_DATA_DIR=... taskset -c 0 python scripts/cheap_seeds.py batching --task listops
    LRA_DATA_DIR=... python scripts/cheap_seeds.py jobs --steps 100

Each prints one JSON line; results/cpu/claims/README.md records them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from lra.data import pipeline
from lra.training import config, train


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def batching(task: str, seeds: int, repeats: int) -> dict:
    spec = f"{task}:model=softmax,size=cpu"
    meta, splits = train.load_splits(config.load(spec, {}))
    mesh = train.device_mesh(config.load(spec, {}))
    trainers = [train.Trainer(config.load(spec, {"seed": str(s)}), meta, mesh)
                for s in range(seeds)]
    size = trainers[0].config.train.batch_size
    batches = [{k: jnp.asarray(v) for k, v in pipeline.train_batch(splits["train"], 0, size, s).items()}
               for s in range(seeds)]
    step = jax.jit(trainers[0]._train_step)
    states = [t.state for t in trainers]
    stack = lambda *xs: jnp.stack(xs)  # noqa: E731
    batched = jax.jit(jax.vmap(trainers[0]._train_step, in_axes=(0, 0, None)))
    stacked_states, stacked_batches = jax.tree.map(stack, *states), jax.tree.map(stack, *batches)
    one_by_one = timed(lambda: [step(s, b, 0) for s, b in zip(states, batches, strict=True)],
                       repeats)
    together = timed(lambda: batched(stacked_states, stacked_batches, 0), repeats)
    return {"measure": "batching", "task": task, "seeds": seeds, "batch": size,
            "max_len": meta["max_len"], "cores": len(os.sched_getaffinity(0)),
            "sequential_ms": round(1e3 * one_by_one, 1), "vmapped_ms": round(1e3 * together, 1),
            "speedup": round(one_by_one / together, 2)}


def jobs(task: str, steps: int) -> dict:
    out = {"measure": "jobs", "task": task, "steps": steps, "cores": len(os.sched_getaffinity(0))}
    for n in (1, 2):
        workdir = tempfile.mkdtemp(prefix="cheap-seeds-")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lra.cli", "sweep", "--tasks", task, "--models",
                        "softmax", "--sizes", "cpu", "--seeds", "0,1", "--workdir", workdir,
                        "--jobs", str(n), f"--config.train.steps={steps}"],
                       check=True, capture_output=True)
        out[f"jobs{n}_seconds"] = round(time.perf_counter() - start, 1)
        shutil.rmtree(workdir)
    out["speedup"] = round(out["jobs1_seconds"] / out["jobs2_seconds"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("measure", choices=["batching", "jobs"])
    p.add_argument("--task", default="listops")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    result = (batching(args.task, args.seeds, args.repeats) if args.measure == "batching"
              else jobs(args.task, args.steps))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
