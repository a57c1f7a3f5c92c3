"""The fenced code blocks of a documentation page, for the tests that run the docs."""

import re
from pathlib import Path


def blocks(page: Path, language: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced block of `language` in `page`."""
    return re.findall(rf"```({language}[^\n]*)\n(.*?)```", page.read_text(), re.S)
