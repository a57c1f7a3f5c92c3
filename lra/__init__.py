"""Long Range Arena harness: tasks x attention methods, one shared encoder.

The package face, for notebooks and scripts (each name is imported on first use):

    import lra
    c = lra.load_config("listops:model=topk,size=smoke", {"train.steps": "100"})
    summary = lra.train(c, "runs/listops-topk")                # the run's summary.json
    statuses = lra.sweep("listops", "softmax,topk", "smoke", "0,1", "runs/sweep")
    report, files = lra.report(["runs/sweep"], [], "runs/report")
    lra.attention.register(...)  # a new attention method (docs/adding-attention.md)
    lra.data.task(...)           # a new task (docs/adding-a-task.md)
"""

import importlib

from lra.errors import LRAError

_API = {
    "load_config": ("lra.training.config", "load"),
    "train": ("lra.training.train", "train"),
    "sweep": ("lra.experiments.sweep", "run"),
    "report": ("lra.experiments.report", "main"),
}
_PACKAGES = ("attention", "data", "models", "cli", "experiments", "training", "configs", "kernels")

__all__ = ["LRAError", *_API, *_PACKAGES]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    if name in _PACKAGES:
        return importlib.import_module(f"lra.{name}")
    raise AttributeError(f"module 'lra' has no attribute {name!r}")
