"""The exception types a user can cause or meet (the CLI prints each on one line), and the
tests of whether a failure was running out of memory or out of disk."""

import errno

DISK_FULL = "No space left on device"


class LRAError(Exception):
    """A user error (bad config, missing data, malformed file) with a one-line message: exit 2."""


class DiskFull(Exception):
    """No space left on device, with a one-line message naming what was being written and how
    the run goes on: exit 1."""


def is_disk_full(failure: BaseException | str) -> bool:
    """Whether `failure` (an exception, with its causes, or a process's log) ran out of disk:
    an OSError ENOSPC, or the text of one (orbax and tensorstore re-raise it as ValueError)."""
    if isinstance(failure, str):
        return DISK_FULL in failure
    seen = set()
    while failure is not None and id(failure) not in seen:
        seen.add(id(failure))
        if isinstance(failure, DiskFull) or getattr(failure, "errno", None) == errno.ENOSPC \
                or DISK_FULL in str(failure):
            return True
        failure = failure.__cause__ or failure.__context__
    return False


def is_oom(output: str = "", returncode: int | None = None) -> bool:
    """Whether a failure was an out-of-memory: XLA's RESOURCE_EXHAUSTED or "out of memory" in
    `output` (an exception's text or a process's log), or a process killed by SIGKILL (-9,
    what the kernel's OOM killer sends). A full disk is not one, though tensorstore reports it
    as RESOURCE_EXHAUSTED too."""
    if returncode == -9:
        return True
    if is_disk_full(output):
        return False
    return "RESOURCE_EXHAUSTED" in output or "out of memory" in output.lower()
