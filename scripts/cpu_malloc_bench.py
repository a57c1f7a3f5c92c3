"""Training-step time on the CPU with and without `lra`'s glibc malloc tunables
(lra/cli/cpu_malloc.py), side by side: each round runs one process of each setting, in
turn, pinned to the same core, and every process trains the same steps from the same seed.

    LRA_DATA_DIR=... python scripts/cpu_malloc_bench.py --task text --models softmax,adamra \
        --steps 10 --rounds 3 --core 1 --out results/cpu/cpu_malloc.json

Per process: ms per step after the first (compiling) step, minor page faults and kernel
seconds per step, peak resident memory, and the loss of the last step (the same in both
settings: the tunables change where memory comes from, not what is computed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from lra.cli import cpu_malloc


def worker(task: str, model: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from lra.data import pipeline
    from lra.training import config, train

    c = config.load(f"{task}:model={model},size=cpu", {})
    meta, splits = train.load_splits(c)
    trainer = train.Trainer(c, meta, train.device_mesh(c))
    size = c.train.batch_size
    batches = [{k: jnp.asarray(v) for k, v in pipeline.train_batch(splits["train"], 0, size, s).items()}
               for s in range(steps + 1)]
    step, state = jax.jit(trainer._train_step), trainer.state
    start = time.perf_counter()
    state, out = step(state, batches[0], 0)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i, batch in enumerate(batches[1:], 1):
        state, out = step(state, batch, i)
    jax.block_until_ready(out)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"ms_per_step": round(1e3 * seconds / steps, 1), "first_step_s": round(compile_s, 2),
            "page_faults_per_step": (after.ru_minflt - before.ru_minflt) // steps,
            "kernel_s_per_step": round((after.ru_stime - before.ru_stime) / steps, 3),
            "peak_rss_mb": after.ru_maxrss // 1024, "last_loss": float(out["loss"])}


def measure(task: str, model: str, steps: int, tuned: bool, core: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = cpu_malloc.TUNABLES
    pin = ["taskset", "-c", str(core)] if core is not None else []
    out = subprocess.run([*pin, sys.executable, __file__, "--worker", task, model, str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("TASK", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--task", default="text")
    p.add_argument("--models", default="softmax,adamra")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", type=int, default=None, help="pin every process to this CPU core")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.worker:
        task, model, steps = args.worker
        print(json.dumps(worker(task, model, int(steps))))
        return
    rows = []
    for model in args.models.split(","):
        runs = {"plain": [], "tuned": []}
        for _ in range(args.rounds):
            for setting in runs:
                runs[setting].append(measure(args.task, model, args.steps, setting == "tuned", args.core))
        plain, tuned = (statistics.median(r["ms_per_step"] for r in runs[s]) for s in ("plain", "tuned"))
        rows.append({"task": args.task, "model": model, "plain_ms": plain, "tuned_ms": tuned,
                     "speedup": round(plain / tuned, 2),
                     "same_loss": len({r["last_loss"] for rs in runs.values() for r in rs}) == 1,
                     "runs": runs})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
    result = {"command": " ".join(["python", "scripts/cpu_malloc_bench.py", *sys.argv[1:]]),
              "date": datetime.date.today().isoformat(), "tunables": cpu_malloc.TUNABLES,
              "steps": args.steps, "rounds": args.rounds, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
