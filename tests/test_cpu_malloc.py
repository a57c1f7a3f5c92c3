"""`lra` starts itself again with glibc malloc tunables that keep XLA:CPU's step buffers in
the heap (lra/cli/cpu_malloc.py); the tunables do what they are there for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lra.cli import cpu_malloc

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(not cpu_malloc.wanted(),
                           reason="the tunables are for Linux with glibc and no GPU or TPU")


def without_tunables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


def test_the_tunables_are_added_where_wanted_and_removed_where_inherited(monkeypatch):
    monkeypatch.setattr(cpu_malloc, "wanted", lambda: True)
    assert cpu_malloc.environ({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": cpu_malloc.TUNABLES}
    assert cpu_malloc.environ({"GLIBC_TUNABLES": ""}) is None  # set, even empty: left alone
    assert cpu_malloc.environ({"GLIBC_TUNABLES": cpu_malloc.TUNABLES}) is None
    monkeypatch.setattr(cpu_malloc, "wanted", lambda: False)  # e.g. a GPU node of a SLURM job
    assert cpu_malloc.environ({"A": "1", "GLIBC_TUNABLES": cpu_malloc.TUNABLES}) == {"A": "1"}
    assert cpu_malloc.environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None  # the user's
    assert cpu_malloc.environ({"A": "1"}) is None


def test_a_gpu_device_file_or_a_tpu_on_the_pci_bus_counts_as_an_accelerator(monkeypatch, tmp_path):
    vendor = tmp_path / "vendor"
    vendor.write_text("0x1ae0\n")
    devices = {"/dev/nvidia[0-9]*": [], "/sys/bus/pci/devices/*/vendor": [str(vendor)]}
    monkeypatch.setattr(cpu_malloc.glob, "glob", lambda p: devices.get(p, []))
    assert cpu_malloc.accelerator_present()  # a TPU
    vendor.write_text("0x8086\n")
    assert not cpu_malloc.accelerator_present()
    devices["/dev/nvidia[0-9]*"] = ["/dev/nvidia0"]
    assert cpu_malloc.accelerator_present()


# The `lra` program started as `python -X utf8 -c SCRIPT sweep --status DIR`, os.execve recorded
AS_PROGRAM = """
import json, os, sys
from lra.cli import entry
def record(path, args, env):
    print(json.dumps({"path": path, "args": args, "tunables": env.get("GLIBC_TUNABLES")}))
    sys.exit(0)
os.execve = record
sys.exit(entry())
"""


@glibc
def test_lra_starts_its_own_command_line_again_with_the_tunables_once(tmp_path):
    argv = [sys.executable, "-X", "utf8", "-c", AS_PROGRAM, "sweep", "--status", str(tmp_path)]
    out = subprocess.run(argv, cwd=ROOT, env=without_tunables(), capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == {"path": sys.executable, "args": argv,
                                      "tunables": cpu_malloc.TUNABLES}
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                           env={**without_tunables(), "GLIBC_TUNABLES": cpu_malloc.TUNABLES})
    assert again.returncode == 0 and "path" not in again.stdout  # set: it runs the command


@glibc
def test_the_lra_program_really_runs_under_the_tunables(tmp_path):
    """`python -m lra.cli` (the same entry as the `lra` script) with the real exec: the
    command it runs sees the tunables in its environment."""
    (tmp_path / "show_env.py").write_text(  # a plugin: imported by the command that runs
        "import os, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'seen')!r}).write_text("
        "os.environ.get('GLIBC_TUNABLES', 'unset'))\n")
    env = {**without_tunables(), "LRA_PLUGINS": "show_env", "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "lra.cli", "list"], cwd=ROOT, env=env,
                   capture_output=True, text=True, check=True)
    assert (tmp_path / "seen").read_text() == cpu_malloc.TUNABLES


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
