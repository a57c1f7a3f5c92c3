"""Path-X: Pathfinder at 128 x 128 pixels = 16,384 tokens, `hard` contours (14 paddles),
2 classes (LRA §3.4; data: lra/data/pathfinder.py, the release's pathfinder128).

size=lra is the LRA code's Pathfinder-128 Transformer config (google-research/long-range-arena,
lra_benchmarks/image/configs/pathfinder128/base_pathfinder128_config.py and
transformer_base.py): 1 layer, emb 32, MLP 32, 2 heads, mean pooling, learned positions,
dropout 0.1, attention dropout 0.1, batch 64, lr 1e-3 with one epoch (2,500 steps) of
linear warmup then cosine decay, 200 epochs (500,000 steps), gradient clipping at norm 1,
no weight decay, evaluation every epoch; 160,000 / 20,000 / 20,000 images.

size=nystrom applies the Nystromformer/AdaMRA protocol (common.NYSTROM_MODEL/NYSTROM_TRAIN
with the Pathfinder values of configs/pathfinder.py) to Path-X; those papers do not
report Path-X.

size=cpu and size=smoke keep the hard contours but draw them at 32 pixels (1024 tokens):
16,384-token softmax attention does not train on two CPU cores.
"""

from lra.configs import common

SIZES = {
    "smoke": dict(
        data=dict(resolution=32, max_len=1024, num_train=64, num_val=32, num_test=32),
        model=dict(num_layers=1, emb_dim=32, mlp_dim=64, num_heads=2, pooling="mean"),
        train=dict(batch_size=16, steps=20, lr=1e-3, schedule="constant", warmup_steps=0,
                   eval_every=10, log_every=5),
    ),
    "cpu": dict(
        data=dict(resolution=32, max_len=1024, num_train=20_000, num_val=1000,
                  num_test=1000),
        model=dict(num_layers=2, emb_dim=32, mlp_dim=64, num_heads=2, pooling="mean",
                   dropout=0.1, attention_dropout=0.1),
        train=dict(batch_size=32, steps=2000, lr=1e-3, schedule="cosine", warmup_steps=200,
                   weight_decay=0.0, eval_every=250),
    ),
    "nystrom": dict(
        data=dict(),
        model=common.NYSTROM_MODEL,
        train=dict(common.NYSTROM_TRAIN, batch_size=256, steps=62_400, warmup_steps=312,
                   eval_every=312),
    ),
    "lra": dict(
        data=dict(),
        model=dict(num_layers=1, emb_dim=32, mlp_dim=32, num_heads=2, pooling="mean",
                   pos_emb="learned", dropout=0.1, attention_dropout=0.1),
        train=dict(batch_size=64, steps=500_000, lr=1e-3, schedule="cosine", warmup_steps=2500,
                   weight_decay=0.0, grad_clip=1.0, eval_every=2500),
    ),
}


def get_config(arg: str | None = None):
    c = common.base_config("pathx", arg)
    c.data.resolution = 128  # pixels a side
    c.data.difficulty = "hard"  # easy (6 paddles) | intermediate (9) | hard (14)
    c.data.max_len = 16_384  # resolution ** 2
    c.data.num_train = 160_000  # generated images; the release is used whole
    c.data.num_val = 20_000
    c.data.num_test = 20_000
    c.data.style = "lra"  # generator only: lra (as the LRA release drew them) | clean (harder)
    c.data.distractor_paddles = None  # generator only; None = the LRA value of the resolution
    c.data.seed = 0  # generator seed, or the release's shuffle before its 80/10/10 split
    return common.finish(c, SIZES)
