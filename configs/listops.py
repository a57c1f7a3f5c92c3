"""ListOps (Nangia & Bowman 2018; LRA §3.1): hierarchical MIN/MAX/MED/SM expressions, 10 classes.

size=lra follows the issue's statement of the LRA ListOps config; size=nystrom the
Nystromformer/AdaMRA protocol; size=cpu uses the same generator (depth 10, 10 arguments,
operator probability 0.25) with expressions of 20 < length < 120 tokens, 20k/1k/1k, so
that a few methods train on two CPU cores in about a minute each (`make demo`).
"""

from lra.configs import common

SIZES = {
    "smoke": common.smoke(max_len=64, min_length=10, max_length=60, num_train=256, num_val=64,
                          num_test=64),
    "cpu": dict(
        data=dict(max_len=128, min_length=20, max_length=120, num_train=20_000, num_val=1000,
                  num_test=1000),
        model=common.CPU_MODEL,
        train=dict(common.CPU_TRAIN, steps=400, warmup_steps=40, eval_every=100),
    ),
    "nystrom": common.nystrom(max_len=2000, eval_every=500),
    "lra": dict(
        data=dict(max_len=2000),
        model=dict(num_layers=4, emb_dim=512, mlp_dim=1024, num_heads=8, pooling="cls"),
        train=common.LRA_TRAIN,
    ),
}


def get_config(arg: str | None = None):
    c = common.base_config("listops", arg)
    c.data.min_length = 500  # the LRA generator: 500 < length < 2000
    c.data.max_length = 2000
    c.data.num_train = 96_000
    c.data.num_val = 2000
    c.data.num_test = 2000
    return common.finish(c, SIZES)
