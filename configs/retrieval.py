"""Retrieval: AAN document pairs at byte level, 2 classes (LRA §3.3; data: lra/data/retrieval.py).

size=lra is the LRA code's matching config (google-research/long-range-arena,
lra_benchmarks/matching/configs/base_match_config.py and transformer_base.py): 4 layers,
emb 128, MLP 512, 4 heads, CLS pooling, fixed sinusoidal positions (the LRA Transformer's
default), dropout 0.1, batch 32, lr 0.05 with 8000 linear warmup steps then rsqrt decay,
5000 steps (so, as in LRA, the learning rate is still warming up at the end), weight
decay 0.1, 4000 bytes per document. Evaluation every 500 steps (LRA: 100). The
interaction stays the project's [u, v, u*v, u-v] (config.model.interaction); the LRA
code's dual encoder is called without one and so concatenates [u, v] ("uv").

size=nystrom is the Nystromformer/AdaMRA protocol (common.NYSTROM_MODEL/NYSTROM_TRAIN) with
the retrieval values of mlpen/Nystromformer LRA/code/lra_config.py: 4000 bytes, 30,000
steps, 800 warmup steps, evaluation every 300.

size=cpu keeps 1024 bytes per document and a seeded 20,000/1000/2000 pairs; size=smoke
128 bytes and 256/64/64 pairs.
"""

from lra.configs import common

SIZES = {
    "smoke": common.smoke(max_len=128, num_train=256, num_val=64, num_test=64),
    "cpu": dict(
        data=dict(max_len=1024, num_train=20_000, num_val=1000, num_test=2000),
        model=common.CPU_MODEL,
        train=common.CPU_TRAIN,
    ),
    "nystrom": common.nystrom(max_len=4000, steps=30_000, warmup_steps=800, eval_every=300),
    "lra": dict(
        data=dict(max_len=4000),
        model=dict(num_layers=4, emb_dim=128, mlp_dim=512, num_heads=4, pooling="cls",
                   pos_emb="sinusoidal", dropout=0.1, attention_dropout=0.1),
        train=dict(common.LRA_TRAIN, warmup_steps=8000),
    ),
}


def get_config(arg: str | None = None):
    c = common.base_config("retrieval", arg)
    c.data.source = "release"
    c.data.max_len = 4000  # bytes per document
    return common.finish(c, SIZES)
