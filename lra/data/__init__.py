"""The task registry: one module per task, one decorator, a common on-disk format (`store`).

    @data.task("listops", column="ListOps", vocab_size=listops.VOCAB_SIZE)
    def prepare(config, source: str, path: str | None): ...   # -> (splits, meta)

The decorated module also defines

    NUM_CLASSES: int
    SOURCES: tuple[str, ...]                  # first is the default, e.g. ("generate", "release")
    def variant(config) -> str                # folder name of the prepared data for this config

and the task's config is `lra.configs.<name>` unless the decorator names another module
(or the task module itself, `config=__name__`, as a task kept outside the package does).
Every module of this package is imported on first use of the registry; modules outside it
come from `$LRA_PLUGINS` (lra/plugins.py). `lra list`, the sweep, the bench and the report
read the registry, so a new task needs no other change.

`open_dataset(config)` returns the prepared folder, preparing generated data on
first use and otherwise raising an `LRAError` with the exact prepare command.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pkgutil
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

from lra import plugins
from lra.data import store
from lra.errors import LRAError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    module: ModuleType  # prepare / variant / SOURCES / NUM_CLASSES
    config: str  # the config module (or .py file) of `--config NAME:...`
    column: str  # the report's column header
    vocab_size: int  # token ids are < vocab_size: the bench builds the task's model from it
    dual: bool  # two sequences per example (Retrieval)
    in_average: bool  # counted in the LRA average (Path-X is not, LRA Table 1)
    order: int  # column position in tables (the LRA paper's order for its tasks)

    @property
    def num_classes(self) -> int:
        return self.module.NUM_CLASSES


_REGISTRY: dict[str, Task] = {}
_discovered = False


def task(name: str, *, column: str, vocab_size: int, config: str | None = None,
         dual: bool = False, in_average: bool = True, order: int = 100):
    """Decorator on a task module's `prepare`: registers the module as task `name`."""

    def wrap(prepare):
        module = sys.modules[prepare.__module__]
        if name in _REGISTRY and _REGISTRY[name].module.__name__ != module.__name__:
            raise ValueError(f"task {name!r} registered twice")
        _REGISTRY[name] = Task(name, module, config or f"lra.configs.{name}", column, vocab_size,
                               dual, in_average, order)
        return prepare

    return wrap


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    plugins.load()


def names() -> list[str]:
    """Registered task names in table order."""
    _discover()
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n))


def info(name: str) -> Task:
    _discover()
    if name not in _REGISTRY:
        raise LRAError(f"unknown task {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[name]


def given_path(task: str, path: str | None, env: str, what: str, how: str) -> Path:
    """A task's source: `path` (--path or config.data.path), else $`env`, with ~ expanded;
    when neither is set, an LRAError saying that `what` is missing and `how` to get it."""
    given = path or os.environ.get(env)
    if not given:
        raise LRAError(f"{task}: no {what} given (--path, config.data.path and ${env} are "
                       f"empty); {how}")
    return Path(given).expanduser()


def task_module(name: str) -> ModuleType:
    return info(name).module


def dataset_path(config) -> Path:
    return store.dataset_dir(config.task, task_module(config.task).variant(config))


def prepare(config, source: str | None = None, path: str | None = None) -> Path:
    """Prepare the data `config` asks for (from `source`, default config.data.source)."""
    mod = task_module(config.task)
    source = source or config.data.source
    if source not in mod.SOURCES:
        raise LRAError(
            f"task {config.task} has no data source {source!r}; valid: {', '.join(mod.SOURCES)}"
        )
    config = config.copy_and_resolve_references()
    config.data.source = source  # the prepared folder's name follows the source
    start = time.perf_counter()
    splits, meta = mod.prepare(config, source, path or config.data.get("path") or None)
    meta = {"task": config.task, "source": source, **meta, **store.chance(splits["train"]["labels"]),
            "prepare_seconds": round(time.perf_counter() - start, 2)}
    out = store.write_dataset(dataset_path(config), splits, meta)
    log.info("prepared %s in %s (%.1fs)", config.task, out, meta["prepare_seconds"])
    return out


def open_dataset(config) -> Path:
    """The prepared folder for `config`; generated data is prepared on first use, and
    prepared again when `store.damage` finds it damaged."""
    path = dataset_path(config)
    where = config.data.get("path") or "<PATH>"
    command = f"lra data prepare {config.task} --source {config.data.source} --path {where}"
    if store.is_prepared(path):
        damaged = store.damage(path)
        if damaged is None:
            return path
        if config.data.source != "generate":
            raise LRAError(f"prepared {config.task} data at {path} is damaged ({damaged}); "
                           f"rebuild it: {command} --size {config.size}")
        log.warning("prepared %s data at %s is damaged (%s); preparing it again",
                    config.task, path, damaged)
        shutil.rmtree(path)
    if config.data.source == "generate":
        return prepare(config)
    raise LRAError(f"no prepared {config.task} data at {path}; run: {command}")
