"""The one exception type a user can cause (the CLI prints it on one line, exit 2), and the
one test of whether a failure was running out of memory."""


class LRAError(Exception):
    """A user error (bad config, missing data, malformed file) with a one-line message."""


def is_oom(output: str = "", returncode: int | None = None) -> bool:
    """Whether a failure was an out-of-memory: XLA's RESOURCE_EXHAUSTED or "out of memory" in
    `output` (an exception's text or a process's log), or a process killed by SIGKILL (-9,
    what the kernel's OOM killer sends)."""
    return returncode == -9 or "RESOURCE_EXHAUSTED" in output or "out of memory" in output.lower()
