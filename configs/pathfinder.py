"""Pathfinder: are two markers joined by a dashed contour? 32 x 32 pixels = 1024 tokens,
2 classes (LRA §3.4, Linsley et al. 2018; data: lra/data/pathfinder.py).

The benchmark's Pathfinder is the 32-pixel `hard` set (contours of 14 paddles,
`curv_contour_length_14`), which the Nystromformer LRA code also uses.

size=lra is the LRA code's Pathfinder-32 Transformer config (google-research/long-range-arena,
lra_benchmarks/image/configs/pathfinder32/base_pathfinder32_config.py and transformer_base.py):
4 layers, emb 32, MLP 32, 4 heads, mean pooling, sinusoidal positions, dropout 0.2,
attention dropout 0.1, batch 512, lr 1e-3 with one epoch (312 steps) of linear warmup then
cosine decay, 200 epochs (62,400 steps), no weight decay, no gradient clipping, evaluation
every epoch; 160,000 / 20,000 / 20,000 images. The LRA code projects to qkv_dim 16; the
shared encoder has no separate qkv width, so heads are emb/heads = 8 wide.

size=nystrom is the Nystromformer/AdaMRA protocol (common.NYSTROM_MODEL/NYSTROM_TRAIN) with
the pathfinder32-curv_contour_length_14 values of mlpen/Nystromformer LRA/code/lra_config.py:
batch 256, 62,400 steps, 312 warmup steps, evaluation every 312.

size=cpu draws the `easy` set (6 paddles) at 32 pixels, 20,000 training images, for a
small model (2 layers, emb 32) on two CPU cores; size=smoke likewise with 64/32/32 images.
"""

from lra.configs import common

SIZES = {
    "smoke": dict(common.smoke(difficulty="easy", num_train=64, num_val=32, num_test=32),
                  model=dict(common.SMOKE_MODEL, pooling="mean")),
    "cpu": dict(
        data=dict(difficulty="easy", num_train=20_000, num_val=1000, num_test=1000),
        model=dict(common.CPU_MODEL, emb_dim=32, mlp_dim=64, pooling="mean"),
        train=dict(common.CPU_TRAIN, steps=2000, warmup_steps=200, weight_decay=0.0),
    ),
    "nystrom": common.nystrom(batch_size=256, steps=62_400, warmup_steps=312, eval_every=312),
    "lra": dict(
        data=dict(),
        model=dict(num_layers=4, emb_dim=32, mlp_dim=32, num_heads=4, pooling="mean",
                   pos_emb="sinusoidal", dropout=0.2, attention_dropout=0.1),
        train=dict(batch_size=512, steps=62_400, lr=1e-3, schedule="cosine", warmup_steps=312,
                   weight_decay=0.0, grad_clip=0.0, eval_every=312),
    ),
}


def get_config(arg: str | None = None):
    return common.finish(data_config(common.base_config("pathfinder", arg), 32), SIZES)


def data_config(c, resolution: int):
    """The data fields of Pathfinder (and Path-X) at `resolution` pixels a side."""
    c.data.resolution = resolution  # 32 | 64 | 128 | 256 pixels a side
    c.data.difficulty = "hard"  # easy (6 paddles) | intermediate (9) | hard (14)
    c.data.max_len = resolution**2
    c.data.num_train = 160_000  # generated images; the release is used whole
    c.data.num_val = 20_000
    c.data.num_test = 20_000
    c.data.style = "lra"  # generator only: lra (as the LRA release drew them) | clean (harder)
    c.data.distractor_paddles = None  # generator only; None = the LRA value of the resolution
    c.data.seed = 0  # generator seed, or the release's shuffle before its 80/10/10 split
    return c
