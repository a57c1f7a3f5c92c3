"""Load `TASK:model=NAME,size=SIZE` (or a config file of one's own) and apply `--config.KEY=VALUE`
overrides."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import ml_collections
from flax import nnx

from lra import attention, data
from lra.configs import common, models
from lra.errors import LRAError
from lra.training import config_schema


def load_file(path: Path):
    """Execute a config (or sweep) file (the big_vision `path.py:arg` convention) as a module."""
    if not path.is_file():
        raise LRAError(f"no config file {path}; valid tasks: {', '.join(data.names())}")
    spec = importlib.util.spec_from_file_location(f"lra_user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so a task registered in the file can find its module
    spec.loader.exec_module(module)
    return module


def config_module(name: str):
    """The config module of a task name (`listops`), a packaged config (`lra.configs.listops`)
    or a config file of the user's own (`my_task.py`, `configs/listops.py`)."""
    if "." not in name:
        name = data.info(name).config  # a task: its registered config
    if name.endswith(".py"):
        return load_file(Path(name))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):
            raise
    raise LRAError(f"no config module {name!r}; valid tasks: {', '.join(data.names())}") from None


def sizes() -> tuple[str, ...]:
    """The config sizes (lra/configs/common.py)."""
    return common.SIZES


def presets():
    """lra/configs/models.py: method presets, bench variants and groups."""
    return models


def _parse(value: str, like):
    if isinstance(like, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def override(c: ml_collections.ConfigDict, key: str, value: str) -> None:
    """Set dotted `key` (which must exist, except inside model.attention_kwargs)."""
    *parents, leaf = key.split(".")
    node = c
    for i, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise LRAError(f"config key {'.'.join(parents[: i + 1])} does not exist")
        node = node[part]
    free = parents == ["model", "attention_kwargs"]
    if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not free):
        valid = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
        raise LRAError(f"config key {key} does not exist" + (f"; valid here: {valid}" if valid else ""))
    like = node[leaf] if leaf in node else attention.info(c.model.attention).defaults.get(leaf)
    try:
        parsed = _parse(value, like)
    except ValueError:
        rule = config_schema.KEYS.get(key, config_schema.Rule(type(like)))
        raise LRAError(f"{key}={value!r}: expected {rule.allowed()}") from None
    with node.ignore_type():
        node[leaf] = parsed


def load(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
    """spec: 'listops:model=topk,size=cpu', 'lra.configs.listops:...' or 'my_task.py:...'."""
    name, _, arg = spec.partition(":")
    try:
        c = config_module(name).get_config(arg or None)
    except TypeError as e:  # a ConfigDict refuses a value of another type: `c.train.steps = 1.5`
        raise LRAError(f"{name}: {e}") from None
    return apply_overrides(c, overrides or {})


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, str]):
    """Apply `--config.KEY=VALUE` overrides; a method swapped in by model.attention, or a method
    or variant by model.name, starts from its own preset (and the variant's hyperparameters)."""
    models = presets()
    kwargs = {k: v for k, v in overrides.items() if k.startswith("model.attention_kwargs.")}
    method, name = c.model.attention, c.model.get("name")
    for key, value in overrides.items():
        if key not in kwargs:
            override(c, key, value)
    extra, renamed = {}, c.model.get("name") != name
    if renamed:  # --config.model.name: it names the method
        try:
            c.model.attention, extra = models.variant(c.model.name)
        except LRAError as e:
            raise LRAError(f"model.name: {e}") from None
    elif c.model.attention != method and name is not None:
        c.model.name = c.model.attention
    if c.model.attention != method or renamed:
        c.model.attention_kwargs = ml_collections.ConfigDict(
            {**models.preset(c.model.attention, c.size, c.task), **extra})
    for key, value in kwargs.items():
        override(c, key, value)
    validate(c)
    return c


def model_name(c: ml_collections.ConfigDict) -> str:
    """What a run's model is called: its variant's name (model.name), else its method."""
    return c.model.get("name") or c.model.attention


def validate(c: ml_collections.ConfigDict) -> None:
    """Check the whole config before anything is written: every key against the task's
    registered config and lra/training/config_schema.py, then the method's options by building its layer."""
    reference = config_module(c.task).get_config(f"size={c.size}")
    config_schema.check(c, reference)
    info = attention.info(c.model.attention)
    name = c.model.get("name", c.model.attention)
    if presets().variant(name)[0] != info.name:
        raise LRAError(f"model.name={name!r} is not model.attention={info.name!r} or a variant of "
                       "it (configs/models.py VARIANTS); pick the model with model=NAME")
    unknown = sorted(set(c.model.attention_kwargs.keys()) - set(info.defaults))
    if unknown:
        raise LRAError(f"model.attention_kwargs.{unknown[0]} is not a hyperparameter of "
                       f"{info.name}; valid: {', '.join(sorted(info.defaults)) or 'none'}")
    config_schema.check_options(c.model.attention_kwargs, info.defaults)
    max_len = c.data.max_len + int(c.model.pooling == "cls")
    cfg = attention.AttentionConfig(c.model.emb_dim, c.model.num_heads, max_len,
                                    causal=c.model.causal, impl=c.model.impl)
    # The method's own checks (impossible option combinations) run here, before any data
    # is prepared or anything written; eval_shape builds the layer without its arrays.
    nnx.eval_shape(lambda: info.cls(cfg, rngs=nnx.Rngs(0), **dict(c.model.attention_kwargs)))
