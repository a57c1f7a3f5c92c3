"""The one atomic writer: write into a temporary sibling, then rename it into place, so a
killed process never leaves a half-written file or folder behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of `path` (a file, or a folder when `directory`) to write into.

    When the block ends it is renamed to `path` (a file gets mode 644; a folder replaces the
    old one), or removed if the block raised. A folder that another process renamed into
    place first is kept and this one dropped.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.chmod(tmp, 0o644)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (directory and path.is_dir()):  # a concurrent writer won: keep theirs
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
