"""Is prepared Pathfinder data learnable at all? A small CNN, trained on its pixels.

    PYTHONPATH=. python scripts/pathfinder_cnn_probe.py DATASET_DIR [--steps 5000]

A positive control for the transformer runs: a CNN sees the image as an image, so if it
leaves chance and the sequence models do not, the data is fine and the recipe is not.
Prints validation accuracy every --eval-every steps as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class CNN(nnx.Module):
    """3x3 convolutions with layer norm and GELU, a 2x2 max-pool after every second one (so
    the receptive field spans the image), global max-pool, linear head."""

    def __init__(self, width: int, depth: int, rngs: nnx.Rngs):
        chans = [1] + [width] * depth
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in pairs])
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(depth)])
        self.head = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x):
        x = x[..., None]
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = nnx.gelu(norm(conv(x)))
            if i % 2 == 1 and x.shape[1] > 1:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(x.max(axis=(1, 2)))


def load(folder: Path, split: str):
    x = np.load(folder / f"{split}.inputs.npy", mmap_mode="r")
    side = int(round(x.shape[1] ** 0.5))
    return x.reshape(-1, side, side), np.load(folder / f"{split}.labels.npy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=500)
    args = p.parse_args()
    (xt, yt), (xv, yv) = load(args.dataset, "train"), load(args.dataset, "val")
    model = CNN(args.width, args.depth, nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def correct(model, x, y):
        return jnp.sum(model(x).argmax(-1) == y)

    scale = lambda x: jnp.asarray(x, jnp.float32) / 255.0
    rng, start = np.random.default_rng(0), time.perf_counter()
    for i in range(1, args.steps + 1):
        idx = np.sort(rng.integers(0, len(xt), args.batch))
        loss = step(model, opt, scale(xt[idx]), jnp.asarray(yt[idx]))
        if i % args.eval_every == 0 or i == args.steps:
            hits = sum(int(correct(model, scale(xv[j:j + 500]), jnp.asarray(yv[j:j + 500])))
                       for j in range(0, len(xv), 500))
            print(json.dumps(dict(step=i, train_loss=float(loss), val_accuracy=hits / len(xv),
                                  seconds=round(time.perf_counter() - start, 1))), flush=True)


if __name__ == "__main__":
    main()
