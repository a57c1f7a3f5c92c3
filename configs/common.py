"""Shared config skeleton: `get_config("model=NAME,size=SIZE")` for every task.

Sizes:
  smoke    tests: seconds
  cpu      minutes on two CPU cores: shorter sequences, same generators
  nystrom  the protocol of the Nystromformer and AdaMRA papers (2 layers, emb 64, FFN 128)
  lra      the LRA paper's per-task configs (Tay et al. 2020, Appendix)
"""

from __future__ import annotations

import ml_collections
from lra.configs import models

from lra.errors import LRAError

SIZES = ("smoke", "cpu", "nystrom", "lra")

# The smoke and cpu sizes' model and training, which the tasks adjust.
SMOKE_MODEL = dict(num_layers=1, emb_dim=32, mlp_dim=64, num_heads=2)
SMOKE_TRAIN = dict(batch_size=16, steps=20, lr=1e-3, schedule="constant", warmup_steps=0,
                   eval_every=10, log_every=5)
CPU_MODEL = dict(num_layers=2, emb_dim=64, mlp_dim=128, num_heads=2, dropout=0.1,
                 attention_dropout=0.1)
CPU_TRAIN = dict(batch_size=32, steps=1500, lr=1e-3, schedule="cosine", warmup_steps=100,
                 weight_decay=0.01, eval_every=250)

# size=lra training of ListOps, Text and Retrieval in the LRA code: batch 32, lr 0.05 with
# linear warmup then rsqrt decay, weight decay 0.1 (ListOps' steps and warmup; the others
# change them).
LRA_TRAIN = dict(batch_size=32, steps=5000, lr=0.05, schedule="rsqrt", warmup_steps=1000,
                 weight_decay=0.1, eval_every=500)

NYSTROM_MODEL = dict(num_layers=2, emb_dim=64, mlp_dim=128, num_heads=2, pooling="mean")
# The Nystromformer LRA code (lra_config.py): AdamW 1e-4, warmup 1000, linear decay.
NYSTROM_TRAIN = dict(batch_size=32, steps=5000, lr=1e-4, schedule="linear", warmup_steps=1000,
                     weight_decay=0.0)


def smoke(**data) -> dict:
    """A task's size=smoke: SMOKE_MODEL and SMOKE_TRAIN on the task's `data` values."""
    return dict(data=data, model=SMOKE_MODEL, train=SMOKE_TRAIN)


def nystrom(max_len: int | None = None, **train) -> dict:
    """A task's size=nystrom: NYSTROM_MODEL, and NYSTROM_TRAIN with the task's `train` values;
    `max_len` when the protocol's sequence length is not the task's default."""
    data = {} if max_len is None else {"max_len": max_len}
    return dict(data=data, model=NYSTROM_MODEL, train=dict(NYSTROM_TRAIN, **train))


def parse_arg(arg: str | None) -> dict[str, str]:
    """'model=topk,size=cpu' -> {'model': 'topk', 'size': 'cpu'} (big_vision style)."""
    out = {"model": "softmax", "size": "cpu"}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("model", "size"):
            raise LRAError(f"config argument {item!r}: expected model=NAME or size=SIZE")
        out[key] = value
    if out["size"] not in SIZES:
        raise LRAError(f"unknown size {out['size']!r}; valid: {', '.join(SIZES)}")
    return out


def base_config(task: str, arg: str | None) -> ml_collections.ConfigDict:
    """Defaults shared by every task; the task file then applies its per-size values."""
    args = parse_arg(arg)
    c = ml_collections.ConfigDict()
    c.task = task
    c.size = args["size"]
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "generate"
    c.data.path = ""
    c.data.max_len = 512
    c.data.num_train = 0  # seeded subsample of each split; 0 = all of it
    c.data.num_val = 0
    c.data.num_test = 0
    c.data.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = args["model"]  # a method, or a variant of one (models.VARIANTS): runs' name
    c.model.attention = models.variant(args["model"])[0]
    c.model.attention_kwargs = ml_collections.ConfigDict()
    c.model.num_layers = 2
    c.model.emb_dim = 64
    c.model.mlp_dim = 128
    c.model.num_heads = 2
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.1
    c.model.pooling = "cls"  # cls | mean
    c.model.pos_emb = "learned"  # learned | sinusoidal
    c.model.zero_is_padding = False  # True: token 0 is masked too (the LRA code's inputs > 0)
    c.model.classifier_dim = 0  # hidden width of the Dense-ReLU-Dense head; 0 = mlp_dim
    c.model.interaction = "uvdiff"  # Retrieval: [u, v, u*v, u-v] | uv
    c.model.causal = False
    c.model.impl = "auto"  # auto | xla | pallas

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32
    c.train.steps = 5000
    c.train.lr = 0.05
    c.train.schedule = "rsqrt"  # rsqrt (warmup x rsqrt decay) | cosine | linear | constant
    c.train.warmup_steps = 1000
    c.train.weight_decay = 0.1
    c.train.grad_clip = 0.0  # global-norm clip; 0 = off
    c.train.b1 = 0.9
    c.train.b2 = 0.98
    c.train.eps = 1e-9
    c.train.eval_every = 500
    c.train.eval_batches = 0  # validation batches per eval; 0 = the whole split
    c.train.log_every = 50
    c.train.num_devices = 0  # data-parallel devices; 0 = all local devices
    c.train.aux_loss_weight = 1.0  # scale of sown auxiliary losses (e.g. routing commitment)
    c.train.chance_margin = 0.01  # summary "learned": best val accuracy > chance + this
    c.train.stuck_evals = 0  # stop (status stuck) after this many evals at chance loss; 0 = off

    c.wandb = ml_collections.ConfigDict()
    c.wandb.mode = "disabled"  # disabled | offline | online
    c.wandb.project = "lra"
    c.wandb.entity = ""

    c.distributed = False  # multi-host: lra train calls jax.distributed.initialize() first
    return c


def finish(c: ml_collections.ConfigDict, sizes: dict[str, dict]) -> ml_collections.ConfigDict:
    """Apply the per-size values {size: {"data": {...}, "model": {...}, "train": {...}}},
    the method's preset from configs/models.py and, for a variant, its hyperparameters."""
    if c.size not in sizes:
        raise LRAError(f"task {c.task} has no size {c.size!r}; valid: {', '.join(sizes)}")
    for group, values in sizes[c.size].items():
        for key, value in values.items():
            if key not in c[group]:
                raise LRAError(f"config key {group}.{key} does not exist")
            c[group][key] = value
    c.model.attention_kwargs.update(models.preset(c.model.attention, c.size, c.task))
    c.model.attention_kwargs.update(models.variant(c.model.get("name", c.model.attention))[1])
    return c
