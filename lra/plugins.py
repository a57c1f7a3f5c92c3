"""Modules outside the package that register attention methods or tasks: `$LRA_PLUGINS`
(comma-separated module names, importable from `PYTHONPATH`). Both registries import them
on first use, so every process (CLI, sweep runs, bench workers, tests) sees them."""

from __future__ import annotations

import importlib
import os

from lra.errors import LRAError


def load() -> None:
    """Import every module named in $LRA_PLUGINS (cheap when already imported)."""
    for name in filter(None, (m.strip() for m in os.environ.get("LRA_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise LRAError(f"LRA_PLUGINS: cannot import {name!r} ({e}); "
                           "put its folder on PYTHONPATH") from None
