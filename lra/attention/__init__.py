"""The attention registry: one file per method, one decorator each.

    @attention.register("topk", paper="Gupta et al. 2021", complexity="...")
    class TopKAttention(MultiHeadAttention): ...

Every module in this package is imported on first use of the registry, so a new
method file is picked up by `lra list`, the configs, the sweep, the report and
the conformance tests without further code. Methods kept outside this package are
imported from `$LRA_PLUGINS` at the same moment (lra/plugins.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from lra import plugins
from lra.attention.base import AttentionConfig, MultiHeadAttention
from lra.errors import LRAError


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    paper: str
    complexity: str
    # lra approx: the hyperparameters giving about b keys or features per query at length n
    # ({}: the defaults, for a method without such a knob)
    budget: Callable[[int, int], dict]

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyperparameters of the method's constructor with their (paper) defaults."""
        params = inspect.signature(self.cls.__init__).parameters
        return {
            p.name: p.default
            for p in params.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "rngs"
            and p.default is not inspect.Parameter.empty
        }


_REGISTRY: dict[str, MethodInfo] = {}
_discovered = False


def register(name: str, *, paper: str, complexity: str,
             budget: Callable[[int, int], dict] = lambda b, n: {}):
    """Class decorator adding an attention method under `name`; `budget(b, n)` gives the
    hyperparameters with about b keys or features per query at length n (`lra approx`)."""

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name].cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"attention method {name!r} registered twice")
        _REGISTRY[name] = MethodInfo(name, cls, paper, complexity, budget)
        return cls

    return wrap


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    plugins.load()


def names() -> list[str]:
    """Registered method names, sorted (softmax first)."""
    _discover()
    return sorted(_REGISTRY, key=lambda n: (n != "softmax", n))


def info(name: str) -> MethodInfo:
    _discover()
    if name not in _REGISTRY:
        raise LRAError(f"unknown attention method {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[name]


def get(name: str) -> type:
    """The module class registered under `name`."""
    return info(name).cls


__all__ = ["AttentionConfig", "MultiHeadAttention", "MethodInfo", "register", "get", "names", "info"]
