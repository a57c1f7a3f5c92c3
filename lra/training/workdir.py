"""A run's workdir: config.json, metrics.jsonl, summary.json, checkpoints/, .lock.

Every file is written atomically (temporary file + rename), so a killed run
never leaves a half-written one. `.lock` ({host, pid, since}) marks the one
process writing the workdir; a lock left by a dead process on this host is taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from pathlib import Path

from lra.atomic import atomic_path
from lra.errors import LRAError

log = logging.getLogger(__name__)

IGNORED_KEYS = ("wandb", "model.name")  # may change between a run and its resume (a label)
LOCK = ".lock"


class Terminated(Exception):
    """The run stopped on SIGTERM after saving a checkpoint at `step`."""

    def __init__(self, step: int):
        super().__init__(f"terminated at step {step}; rerun the same command to resume")
        self.step = step


def holder(workdir: Path) -> dict | None:
    """The lock's {host, pid, since} if another live process (or another host) holds
    `workdir`; None if it is free or its lock was left by a dead process on this host."""
    try:
        info = json.loads((Path(workdir) / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {"host": "?", "pid": "?", "since": "?"}  # unreadable: respected, never taken over
    if info.get("host") != socket.gethostname():
        return info
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return info


def describe(workdir: Path, info: dict) -> str:
    where = "this host" if info["host"] == socket.gethostname() else f"host {info['host']}"
    return (f"{workdir} is in use by pid {info['pid']} on {where} since {info['since']}; "
            "wait for it or stop it (a lock left by a dead process on this host is taken over "
            "automatically" + ("" if where == "this host" else
                               "; one from another host is not: delete its .lock if that run is "
                               "dead") + ")")


@contextlib.contextmanager
def lock(workdir: Path):
    """Hold `workdir` (created if missing) for this process: LRAError if another live process
    holds it; a dead process's lock is taken over. Released (deleted) on exit."""
    workdir = Path(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tmp = workdir / f"{LOCK}.{os.getpid()}"
    tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since}))
    try:
        while True:
            try:
                os.link(tmp, path)  # atomic, fails if the lock exists, and never half-written
                break
            except FileExistsError:
                info = holder(workdir)
                if info is not None:
                    raise LRAError(describe(workdir, info)) from None
                log.warning("%s: taking over a lock left by a dead process", workdir)
                path.unlink(missing_ok=True)
    finally:
        tmp.unlink()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                workdir.rmdir()  # nothing was written


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
    old, new = flatten(read_json(path)), flatten(json.loads(json.dumps(config)))  # tuples: lists
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


def learned(best_val_acc: float | None, chance_accuracy: float, margin: float) -> dict:
    """{"learned": bool}, and a one-line "learned_reason" when the best validation accuracy is
    not more than `margin` above chance."""
    if best_val_acc is None:
        return {"learned": False, "learned_reason": "no validation accuracy (no evaluation ran)"}
    if best_val_acc > chance_accuracy + margin:
        return {"learned": True}
    where = "below" if best_val_acc < chance_accuracy - margin else f"within {100 * margin:.1f} points of"
    return {"learned": False,
            "learned_reason": f"best val {best_val_acc:.1%} is {where} chance {chance_accuracy:.1%} "
                              "(majority class of the training labels)"}
