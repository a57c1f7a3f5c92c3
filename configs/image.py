"""Image: CIFAR-10 as 1024 gray pixels, 10 classes (LRA §3.4; data: lra/data/image.py).

size=lra is the LRA code's CIFAR-10 Transformer config (google-research/long-range-arena,
lra_benchmarks/image/configs/cifar10/base_cifar10_config.py and transformer_base.py):
1 layer, emb 128, MLP 128, 8 heads, CLS pooling, learned positions, dropout 0.3,
attention dropout 0.2, batch 256, lr 5e-4 with one epoch (175 steps) of linear warmup
then cosine decay, 200 epochs (35,000 steps), no weight decay, no gradient clipping,
evaluation every epoch. The LRA code projects to qkv_dim 64 (8 per head); the shared
encoder here has no separate qkv width, so heads are emb/heads = 16 wide.

size=nystrom is the Nystromformer/AdaMRA protocol (common.NYSTROM_MODEL/NYSTROM_TRAIN) with
the image values of mlpen/Nystromformer LRA/code/lra_config.py: batch 256, 35,000 steps,
175 warmup steps, evaluation every 175.

size=cpu uses all 45,000 training images but validates on 1000 and tests on 2000;
size=smoke 256/64/64 images. Sequences are always 1024 pixels.
"""

from lra.configs import common

SIZES = {
    "smoke": common.smoke(num_train=256, num_val=64, num_test=64),
    "cpu": dict(
        data=dict(num_val=1000, num_test=2000),
        model=common.CPU_MODEL,
        train=common.CPU_TRAIN,
    ),
    "nystrom": common.nystrom(batch_size=256, steps=35_000, warmup_steps=175, eval_every=175),
    "lra": dict(
        data=dict(),
        model=dict(num_layers=1, emb_dim=128, mlp_dim=128, num_heads=8, pooling="cls",
                   pos_emb="learned", dropout=0.3, attention_dropout=0.2),
        train=dict(batch_size=256, steps=35_000, lr=5e-4, schedule="cosine", warmup_steps=175,
                   weight_decay=0.0, grad_clip=0.0, eval_every=175),
    ),
}


def get_config(arg: str | None = None):
    c = common.base_config("image", arg)
    c.data.source = "archive"  # archive | tfds
    c.data.max_len = 1024  # 32 x 32 pixels, fixed
    c.data.val_fraction = 0.1  # validation = train[90%:], as in the LRA code
    return common.finish(c, SIZES)
