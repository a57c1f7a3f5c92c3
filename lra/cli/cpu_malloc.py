"""glibc malloc settings that keep XLA:CPU's step buffers in the heap between steps.

XLA:CPU allocates a step's buffers anew at every step (several hundred MB for Text at
size=cpu). glibc serves an allocation above its mmap threshold (at most 32 MiB), or one too
big for a worker thread's arena (whatever mmap_max says), from a fresh mmap region and
unmaps it on free. The next step then faults in and zeroes that memory again: about
200,000 page faults a step and 40% of its time in the kernel. One arena, no mmap and no
trimming keep that memory for reuse: the same steps, bit for bit, 1.35-1.71x faster on one
core (docs/architecture.md, CPU speed). glibc reads GLIBC_TUNABLES only when a process
starts, so the `lra` program starts itself again with them (`reexec`); the processes it
starts inherit them. On a machine with a GPU or TPU, where the host does little of the
work and one arena could slow XLA's multi-threaded compiles, they are not set, and removed
where inherited (a SLURM job passes on the submitting shell's environment).
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736")
TPU_VENDOR = "0x1ae0"  # Google's PCI vendor id


def wanted() -> bool:
    """Whether this machine gets the tunables: Linux with glibc and no GPU or TPU."""
    return (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
            and not accelerator_present())


def accelerator_present() -> bool:
    """Whether this machine shows an NVIDIA or AMD GPU or a TPU."""
    if any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel[0-9]*")):
        return True
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == TPU_VENDOR:
                    return True
        except OSError:
            continue
    return False


def environ(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment `lra` should run under, or None where `env` (default os.environ) is
    it already: with GLIBC_TUNABLES=TUNABLES where they are wanted and GLIBC_TUNABLES is
    unset (set it, even empty, to opt out); without them where they are not wanted but
    were inherited."""
    env = os.environ if env is None else env
    if wanted():
        return None if "GLIBC_TUNABLES" in env else {**env, "GLIBC_TUNABLES": TUNABLES}
    if env.get("GLIBC_TUNABLES") == TUNABLES:
        return {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    return None


def reexec() -> None:
    """Start this very command line again (sys.orig_argv: the interpreter's flags and any
    wrapper such as `-m cProfile` kept) under `environ()`, where it differs; if the exec
    fails, go on without."""
    env = environ()
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return
