"""glibc malloc settings that keep XLA:CPU's step buffers in the heap between steps.

XLA:CPU allocates a step's buffers anew at every step (several hundred MB for Text at
size=cpu). glibc serves an allocation above its mmap threshold (at most 32 MiB), or one too
big for a worker thread's arena, from a fresh mmap region and unmaps it on free. The next
step then faults in and zeroes that memory again: about 200,000 page faults a step and 40%
of its time in the kernel. One arena, no mmap and no trimming keep that memory for reuse:
the same steps, bit for bit, 1.4-1.7x faster on one core (docs/architecture.md, CPU speed).
glibc reads GLIBC_TUNABLES only when a process starts, so `lra` starts itself again with
them (`reexec`); sweep children inherit them. Not on a machine with a GPU or TPU, where the
host does little of the work and one arena could slow XLA's multi-threaded compiles.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736")


def environ(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """A copy of `env` (default os.environ) with GLIBC_TUNABLES=TUNABLES, or None where it
    needs none: not Linux with glibc, an accelerator present, or GLIBC_TUNABLES already set
    (set it, even empty, to opt out)."""
    env = os.environ if env is None else env
    if ("GLIBC_TUNABLES" in env or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
            or accelerator_present()):
        return None
    return {**env, "GLIBC_TUNABLES": TUNABLES}


def accelerator_present() -> bool:
    """Whether this machine shows an NVIDIA or AMD GPU or a TPU device file."""
    return any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel[0-9]*"))


def reexec(argv: list[str]) -> None:
    """Replace this process by `python -m lra.cli ARGV` with the tunables, where it needs them."""
    env = environ()
    if env is not None and sys.executable:
        os.execve(sys.executable, [sys.executable, "-m", "lra.cli", *argv], env)
