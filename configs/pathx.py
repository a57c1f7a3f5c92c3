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

size=cpu and size=smoke are Pathfinder's model and training on the hard contours drawn at
32 pixels (1024 tokens): 16,384-token softmax attention does not train on two CPU cores.
"""

from lra.configs import common, pathfinder

SIZES = {
    "smoke": dict(pathfinder.SIZES["smoke"],
                  data=dict(resolution=32, max_len=1024, num_train=64, num_val=32, num_test=32)),
    "cpu": dict(pathfinder.SIZES["cpu"],
                data=dict(resolution=32, max_len=1024, num_train=20_000, num_val=1000,
                          num_test=1000)),
    "nystrom": pathfinder.SIZES["nystrom"],
    "lra": dict(
        data=dict(),
        model=dict(num_layers=1, emb_dim=32, mlp_dim=32, num_heads=2, pooling="mean",
                   pos_emb="learned", dropout=0.1, attention_dropout=0.1),
        train=dict(batch_size=64, steps=500_000, lr=1e-3, schedule="cosine", warmup_steps=2500,
                   weight_decay=0.0, grad_clip=1.0, eval_every=2500),
    ),
}


def get_config(arg: str | None = None):
    return common.finish(pathfinder.data_config(common.base_config("pathx", arg), 128), SIZES)
