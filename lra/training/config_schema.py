"""What each config key may hold. `check` refuses a config with a key its task's own config
lacks, or a value of the wrong type or out of range, in one line naming the key, the value
and what is allowed. Method options (model.attention_kwargs) are each method's to check."""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from lra import data
from lra.attention.base import IMPLS
from lra.configs import common
from lra.data import pathfinder, pathfinder_draw
from lra.errors import LRAError
from lra.models.classifier import INTERACTIONS, POOLINGS
from lra.training import optim
from lra.training.workdir import flatten

KIND = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


@dataclasses.dataclass(frozen=True)
class Rule:
    """A type, then choices or a range low <= value < high (low < value with above=True);
    none=True allows None too. An int passes for a float, a bool for nothing but a bool."""

    kind: type
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple = ()
    none: bool = False

    def ok(self, value) -> bool:
        if value is None:
            return self.none
        numeric = (int, float) if self.kind is float else self.kind
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, numeric):
            return False
        if self.kind is float and not math.isfinite(value):
            return False
        if self.choices:
            return value in self.choices
        return ((self.low is None or value > self.low or (value == self.low and not self.above))
                and (self.high is None or value < self.high))

    def allowed(self) -> str:
        text = KIND[self.kind]
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.low is not None and self.high is not None:
            text += f" in {'(' if self.above else '['}{self.low}, {self.high})"
        elif self.low is not None:
            text += f" {'>' if self.above else '>='} {self.low}"
        return text + (" or None" if self.none else "")


def count(low: int = 0) -> Rule:
    return Rule(int, low)


def number(low: float = 0, high: float | None = None, above: bool = False) -> Rule:
    return Rule(float, low, high, above)


def one_of(*choices) -> Rule:
    return Rule(type(choices[0]), choices=choices)


FLAG, TEXT = Rule(bool), Rule(str)

# Every key of the shipped configs (lra/configs/common.py and the tasks' data keys).
KEYS: dict[str, Rule] = {
    "task": TEXT,  # a registered task: the registry checks it
    "size": one_of(*common.SIZES),
    "seed": count(0),
    "distributed": FLAG,
    "data.source": TEXT,  # one of the task's SOURCES: checked in `check`
    "data.path": TEXT,
    "data.max_len": count(1),
    "data.min_length": count(0),  # ListOps: min_length < length < max_length
    "data.max_length": count(1),
    "data.num_train": count(0),
    "data.num_val": count(0),
    "data.num_test": count(0),
    "data.seed": count(0),
    "data.val_fraction": number(0, 1, above=True),
    "data.val_from_test": FLAG,
    "data.resolution": one_of(*pathfinder_draw.STYLES),
    "data.difficulty": one_of(*pathfinder.FOLDERS),
    "data.style": one_of(*pathfinder_draw.DRAWERS),
    "data.distractor_paddles": Rule(int, 0, none=True),
    "model.attention": TEXT,  # a registered method: the registry checks it
    "model.name": TEXT,  # the method or a variant of it (configs/models.py): config.validate
    "model.num_layers": count(1),
    "model.emb_dim": count(1),
    "model.mlp_dim": count(1),
    "model.num_heads": count(1),  # that it divides emb_dim: attention.AttentionConfig
    "model.dropout": number(0, 1),
    "model.attention_dropout": number(0, 1),
    "model.pooling": one_of(*POOLINGS),
    "model.pos_emb": one_of("learned", "sinusoidal"),
    "model.zero_is_padding": FLAG,
    "model.classifier_dim": count(0),
    "model.interaction": one_of(*INTERACTIONS),
    "model.causal": FLAG,
    "model.impl": one_of(*IMPLS),
    "train.batch_size": count(1),
    "train.steps": count(1),
    "train.lr": number(0, above=True),
    "train.schedule": one_of(*optim.SCHEDULES),
    "train.warmup_steps": count(0),
    "train.weight_decay": number(0),
    "train.grad_clip": number(0),
    "train.b1": number(0, 1),
    "train.b2": number(0, 1),
    "train.eps": number(0, above=True),
    "train.eval_every": count(1),
    "train.eval_batches": count(0),
    "train.log_every": count(1),
    "train.num_devices": count(0),
    "train.aux_loss_weight": number(0),
    "train.chance_margin": number(0, 1),
    "train.stuck_evals": count(0),
    "wandb.mode": one_of("disabled", "offline", "online"),
    "wandb.project": TEXT,
    "wandb.entity": TEXT,
}


def values(c: ml_collections.ConfigDict) -> dict:
    """{dotted key: value} of `c` but the method options (check_options checks those)."""
    return {k: v for k, v in flatten(c.to_dict()).items()
            if not k.startswith("model.attention_kwargs.")}


def check(c: ml_collections.ConfigDict, reference: ml_collections.ConfigDict) -> None:
    """Refuse keys that `reference` (the task's registered config) lacks and values outside KEYS."""
    known = values(reference)
    for key, value in values(c).items():
        if key not in known:
            group = key.rpartition(".")[0]
            valid = ", ".join(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group)
            raise LRAError(f"config key {key} does not exist in the {c.task} config; "
                           f"valid here: {valid}")
        rule = KEYS.get(key)
        if rule and not rule.ok(value):
            raise LRAError(f"{key}={value!r}: expected {rule.allowed()}")
    sources = data.info(c.task).module.SOURCES
    if c.data.source not in sources:
        raise LRAError(f"data.source={c.data.source!r}: expected one of {', '.join(sources)} "
                       f"(the {c.task} sources)")


def check_options(kwargs: ml_collections.ConfigDict, defaults: dict) -> None:
    """A method option has its default's type (any, where the default is None or a tuple);
    its range is the method's to check."""
    for key, value in kwargs.items():
        rule = Rule(type(defaults[key]))
        if rule.kind in KIND and not rule.ok(value):
            raise LRAError(f"model.attention_kwargs.{key}={value!r}: expected {rule.allowed()}")
