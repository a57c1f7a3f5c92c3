"""The kernels' one error type: a bad argument to an op (impl, tile size, top_k).

A ValueError, so the kernels stand alone; the CLI reports it in one line like LRAError."""


class KernelError(ValueError):
    """An op was called with an argument it cannot run with; the message names it."""
