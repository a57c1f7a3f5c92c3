"""Load `configs/<task>.py:model=NAME,size=SIZE` and apply `--config.KEY=VALUE` overrides."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import ml_collections
from flax import nnx

from lra import attention
from lra.errors import LRAError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_path(task_or_path: str) -> Path:
    """A task name (`listops`) or a path (`configs/listops.py`) -> the config file."""
    path = Path(task_or_path)
    if path.suffix != ".py":
        path = CONFIG_DIR / f"{task_or_path}.py"
    if not path.is_file():
        tasks = sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                       if p.stem not in ("__init__", "common", "models"))
        raise LRAError(f"no config file {path}; valid tasks: {', '.join(tasks)}")
    return path


def sizes() -> tuple[str, ...]:
    """The config sizes (configs/common.py), importable from any working directory."""
    return load_module(CONFIG_DIR / "common.py").SIZES


def _importable(root: Path) -> None:
    """Put `root` (the folder holding configs/) on sys.path, so `configs` imports."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def presets():
    """configs/models.py: method presets, bench variants and groups."""
    _importable(CONFIG_DIR.parent)  # configs/ is a folder beside lra/, not an installed package
    from configs import models

    return models


def load_module(path: Path):
    _importable(path.resolve().parents[1])
    spec = importlib.util.spec_from_file_location(f"lra_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    like = node[leaf] if leaf in node else None
    try:
        parsed = _parse(value, like)
    except ValueError as e:
        raise LRAError(f"config key {key}: {e}") from None
    with node.ignore_type():
        node[leaf] = parsed


def load(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
    """spec: 'configs/listops.py:model=topk,size=cpu' or 'listops:...'."""
    path, _, arg = spec.partition(":")
    c = load_module(config_path(path)).get_config(arg or None)
    return apply_overrides(c, overrides or {})


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, str]):
    """Apply `--config.KEY=VALUE` overrides; a swapped-in method starts from its own preset."""
    models = presets()
    kwargs = {k: v for k, v in overrides.items() if k.startswith("model.attention_kwargs.")}
    method = c.model.attention
    for key, value in overrides.items():
        if key not in kwargs:
            override(c, key, value)
    if c.model.attention != method:
        c.model.attention_kwargs = ml_collections.ConfigDict(
            models.preset(c.model.attention, c.size, c.task))
    for key, value in kwargs.items():
        override(c, key, value)
    validate(c)
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    info = attention.info(c.model.attention)
    unknown = sorted(set(c.model.attention_kwargs.keys()) - set(info.defaults))
    if unknown:
        raise LRAError(f"model.attention_kwargs.{unknown[0]} is not a hyperparameter of "
                       f"{info.name}; valid: {', '.join(sorted(info.defaults)) or 'none'}")
    max_len = c.data.max_len + int(c.model.pooling == "cls")
    cfg = attention.AttentionConfig(c.model.emb_dim, c.model.num_heads, max_len,
                                    causal=c.model.causal, impl=c.model.impl)
    # The method's own checks (impossible option combinations) run here, before any data
    # is prepared or anything written; eval_shape builds the layer without its arrays.
    nnx.eval_shape(lambda: info.cls(cfg, rngs=nnx.Rngs(0), **dict(c.model.attention_kwargs)))
