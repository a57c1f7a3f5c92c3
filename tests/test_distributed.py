"""Multi-host data parallelism, on one machine: two CPU processes started as `srun` would
(SLURM_* variables; jax's coordinator on localhost) train one smoke run with
--config.distributed=true into one workdir, to the losses of one process with the same
global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lra

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {"train.steps": "10", "train.eval_every": "5", "train.batch_size": "8"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(workdir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r["val_loss"], r["val_accuracy"]) for r in rows]


def test_two_processes_train_to_the_losses_of_one(tmp_path):
    work = tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR"))}
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", SLURM_JOB_ID="1",
               SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "lra.cli", "train", "--config",
               "listops:model=softmax,size=smoke", "--workdir", str(work),
               "--config.distributed=true", *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]
    procs = [subprocess.Popen(command, cwd=ROOT, env={**env, "SLURM_PROCID": str(i),
                                                      "SLURM_LOCALID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    two = json.loads((work / "summary.json").read_text())
    assert two["device"].endswith("x2")  # one global mesh over both processes' devices

    one = lra.train(lra.load_config("listops:model=softmax,size=smoke", OVERRIDES), tmp_path / "one")
    assert one["device"].endswith("x1")
    a, b = losses(work), losses(tmp_path / "one")
    assert [r[0] for r in a] == [r[0] for r in b] == [5, 10]
    for x, y in zip(a, b, strict=True):
        assert abs(x[1] - y[1]) < 1e-5 and abs(x[2] - y[2]) < 1e-5 and x[3] == y[3]
    assert (two["test_acc"], two["best_step"]) == (one["test_acc"], one["best_step"])
