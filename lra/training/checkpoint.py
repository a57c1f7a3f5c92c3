"""Orbax checkpoints of a run: `latest` (for exact resume; the last two are kept, so a damaged
newest one falls back to the one before) and `best` (best validation).

A save that runs out of disk raises DiskFull naming the step and the folder, after removing
its own half-written folder (orbax's `*.orbax-checkpoint-tmp*`); sound checkpoints are never
touched, so the run resumes from the newest one once space is freed."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from lra.errors import DiskFull, LRAError, is_disk_full

log = logging.getLogger(__name__)
# orbax logs (through absl) each failure it then raises; the raised error is the one reported
logging.getLogger("absl").setLevel(logging.CRITICAL)


def _manager(path: Path, keep: int = 1) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(path.absolute(), options=options)


def _abstract(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


def _quiet_abandoned_writes() -> None:
    """Silence what a failed save's sibling writes print later, so the error stays one line.

    When one tensorstore write fails, orbax's event loop closes with the other writes still
    in flight; as they finish, asyncio logs "Future exception was never retrieved" and
    tensorstore's callback thread reports "RuntimeError: Event loop is closed" through
    sys.unraisablehook (PyErr_WriteUnraisable). Both only echo the error already raised."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (unraisable.exc_type is RuntimeError
                and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook


_quiet_abandoned_writes()


class Checkpoints:
    def __init__(self, directory: Path):
        self.directory = directory
        self.latest = _manager(directory / "latest", keep=2)
        self.best = _manager(directory / "best")

    def save_latest(self, step: int, state, meta: dict) -> None:
        with self._saving(self.latest, step):
            self.latest.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
            self.latest.wait_until_finished()

    def save_best(self, step: int, state) -> None:
        with self._saving(self.best, step):
            self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
            self.best.wait_until_finished()

    @contextlib.contextmanager
    def _saving(self, manager: ocp.CheckpointManager, step: int):
        """Turn a full disk during a save into DiskFull, removing the save's partial folder."""
        try:
            yield
        except Exception as e:
            if not is_disk_full(e):
                raise
            folder = Path(manager.directory)
            for partial in folder.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
            raise DiskFull(f"checkpoint {step} in {folder}") from e

    def restore_latest(self, like):
        """(state, meta) of the newest sound `latest` checkpoint, shaped and sharded like `like`.

        One that fails to restore is skipped with a warning and the one before it tried; once one
        restores, the damaged ones are deleted so that training saves those steps again. An
        LRAError when none is sound."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                out = self.latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
            except Exception as e:  # any orbax/tensorstore failure means a damaged checkpoint
                why = (str(e).splitlines() or [type(e).__name__])[0][:200]
                log.warning("checkpoint %d in %s is damaged (%s)", step, self.directory.parent, why)
                continue
            for damaged in steps[:i]:  # orbax skips saving a step it already has
                self.latest.delete(damaged)
            if i:
                log.warning("resuming from the earlier checkpoint %d instead", step)
            return out.state, out.meta
        if steps:
            raise LRAError(f"checkpoint {steps[0]} in {self.directory.parent} is damaged and no "
                           f"earlier one is sound; delete {self.directory} to restart from step 0")
        return None

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
