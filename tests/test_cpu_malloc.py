"""`lra` starts itself again with glibc malloc tunables that keep XLA:CPU's step buffers in
the heap (lra/cli/cpu_malloc.py); the tunables do what they are there for."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lra.cli import cpu_malloc

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
                           or cpu_malloc.accelerator_present(),
                           reason="the tunables are for Linux with glibc and no accelerator")


def without_tunables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


@glibc
def test_the_tunables_are_added_unless_set_or_an_accelerator_is_present(monkeypatch):
    assert cpu_malloc.environ({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": cpu_malloc.TUNABLES}
    assert cpu_malloc.environ({"GLIBC_TUNABLES": ""}) is None  # set, even empty: left alone
    assert cpu_malloc.environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None
    monkeypatch.setattr(cpu_malloc.glob, "glob", lambda p: ["/dev/nvidia0"] if "nvidia" in p else [])
    assert cpu_malloc.environ({"A": "1"}) is None


# `lra sweep --status DIR` as the `lra` program, with os.execve recorded instead of run
AS_PROGRAM = """
import json, os, sys
from lra.cli import main
def record(path, args, env):
    print(json.dumps({"args": args, "tunables": env.get("GLIBC_TUNABLES")}))
    sys.exit(0)
os.execve = record
sys.argv = ["lra", "sweep", "--status", sys.argv[1]]
sys.exit(main())
"""


@glibc
def test_lra_starts_itself_again_with_the_tunables_once(tmp_path):
    out = subprocess.run([sys.executable, "-c", AS_PROGRAM, str(tmp_path)], cwd=ROOT,
                         env=without_tunables(), capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "args": [sys.executable, "-m", "lra.cli", "sweep", "--status", str(tmp_path)],
        "tunables": cpu_malloc.TUNABLES}
    again = subprocess.run([sys.executable, "-c", AS_PROGRAM, str(tmp_path)], cwd=ROOT,
                           env={**without_tunables(), "GLIBC_TUNABLES": cpu_malloc.TUNABLES},
                           capture_output=True, text=True)
    assert "args" not in again.stdout  # already set: it runs the command in this process


# page faults in each of 10 calls of a jitted function whose 64 MiB temporaries glibc would
# mmap, after 20 calls to let the heap settle (it grows by a buffer now and then until then)
FAULTS = """
import json, resource, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.exp(x) * jnp.sin(x)[::-1], axis=0))
x = jnp.ones((4096, 4096))
for _ in range(20):
    f(x).block_until_ready()
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


@glibc
def test_with_the_tunables_xla_cpu_calls_stop_faulting_their_buffers_in_again():
    def median_faults(env):
        out = subprocess.run([sys.executable, "-c", FAULTS], env={**env, "JAX_PLATFORMS": "cpu"},
                             capture_output=True, text=True, check=True).stdout
        return sorted(json.loads(out))[5]

    assert median_faults(without_tunables()) > 10_000  # a 64 MiB buffer is 16,384 pages
    assert median_faults(cpu_malloc.environ(without_tunables())) < 1_000
