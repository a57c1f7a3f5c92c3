"""Orbax checkpoints of a run: `latest` (for exact resume) and `best` (best validation)."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)


def _manager(path: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(path.absolute(), options=options)


def _abstract(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


class Checkpoints:
    def __init__(self, directory: Path):
        self.latest = _manager(directory / "latest")
        self.best = _manager(directory / "best")

    def save_latest(self, step: int, state, meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.latest.wait_until_finished()

    def save_best(self, step: int, state) -> None:
        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        self.best.wait_until_finished()

    def restore_latest(self, like):
        """(state, meta) of the newest `latest` checkpoint, shaped and sharded like `like`."""
        step = self.latest.latest_step()
        if step is None:
            return None
        out = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def restore_best(self, like):
        step = self.best.latest_step()
        if step is None:
            return None
        out = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like))))
        return out.state

    def close(self) -> None:
        self.latest.close()
        self.best.close()
