"""A run's workdir: config.json, metrics.jsonl, summary.json, checkpoints/.

Every file is written atomically (temporary file + rename), so a killed run
never leaves a half-written one.
"""

from __future__ import annotations

import json
from pathlib import Path

from lra.atomic import atomic_path
from lra.errors import LRAError

IGNORED_KEYS = ("wandb",)  # may change between a run and its resume


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LRAError(f"{path}: not valid JSON ({e})") from None


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_config(workdir: Path, config: dict) -> None:
    """Refuse to resume a workdir that was made with a different config."""
    path = workdir / "config.json"
    if not path.exists():
        return
    old, new = flatten(read_json(path)), flatten(config)
    diff = sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and not k.startswith(IGNORED_KEYS))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
        raise LRAError(f"{path} holds a different config ({shown}); "
                       "use a new --workdir or delete this one")


def read_metrics(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(workdir: Path, rows: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically (used to append and to truncate on resume)."""
    with atomic_path(workdir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
