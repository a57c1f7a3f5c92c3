"""Positive control for Pathfinder: can a plain CNN learn the generated images?

    python scripts/pathfinder_cnn.py --difficulty easy --style lra \
        --out results/cpu/pathfinder/cnn-easy-lra.json

Six 3x3 convolutions with batch norm and ReLU, a 2x2 max-pool after every second one,
a dense head (256, ReLU); Adam 1e-3, batch 64, pixels standardised with the training
set's mean and deviation. Trains on `--train` images of the 32 px set (drawn with
`lra.data`, so the same images `lra train` reads), keeps the epoch with the best
validation accuracy and reports the test accuracy of that epoch. A model that sees the image as an image
should leave chance on data that holds the task; if it does and a sequence model does
not, the recipe is at fault, not the data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from lra.configs.pathfinder import get_config

from lra import data
from lra.data import store


class CNN(nnx.Module):
    def __init__(self, widths: tuple[int, ...], rngs: nnx.Rngs):
        chans = (1, *widths)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs)
                               for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.norms = nnx.List([nnx.BatchNorm(w, rngs=rngs) for w in widths])
        side = 32 // 2 ** (len(widths) // 2)
        self.hidden = nnx.Linear(side * side * widths[-1], 256, rngs=rngs)
        self.head = nnx.Linear(256, 2, rngs=rngs)

    def __call__(self, x):
        x = x[..., None]
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = nnx.relu(norm(conv(x)))
            if i % 2 == 1:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


def load(args) -> tuple[dict, dict]:
    c = get_config("model=softmax,size=cpu")
    c.data.difficulty, c.data.style = args.difficulty, args.style
    c.data.num_train, c.data.num_val, c.data.num_test = args.train, args.val, args.val
    path = data.open_dataset(c)
    splits = {s: store.read_split(path, s) for s in store.SPLITS}
    images = {s: np.asarray(v["inputs"], np.float32).reshape(-1, 32, 32) for s, v in splits.items()}
    mean, std = images["train"].mean(), images["train"].std()
    return ({s: (x - mean) / std for s, x in images.items()},
            {s: np.asarray(v["labels"]) for s, v in splits.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--difficulty", default="easy", choices=("easy", "intermediate", "hard"))
    p.add_argument("--style", default="lra", choices=("lra", "clean"))
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--val", type=int, default=2_000, help="validation and test images each")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--minutes", type=float, default=30.0,
                   help="stop after the epoch past this many minutes of training")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--widths", default="16,16,32,32,64,64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    if len(widths) % 2 or 32 % 2 ** (len(widths) // 2):
        p.error(f"--widths {args.widths}: need an even number of layers, at most 10")
    start = time.perf_counter()
    x, y = load(args)
    data_seconds, start = round(time.perf_counter() - start, 1), time.perf_counter()
    model = CNN(widths, nnx.Rngs(args.seed))
    opt = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, (logits.argmax(-1) == yb).mean()
        (loss, acc), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return loss, acc

    @nnx.jit
    def hits(model, xb, yb):
        return jnp.sum(model(xb).argmax(-1) == yb)

    def accuracy(split: str) -> float:
        model.eval()
        n = len(y[split])
        total = sum(int(hits(model, x[split][i:i + 500], y[split][i:i + 500]))
                    for i in range(0, n, 500))
        model.train()
        return total / n

    rng = np.random.default_rng(args.seed)

    history, best = [], {"val_acc": -1.0}
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y["train"]))
        stats = [step(model, opt, x["train"][rows], y["train"][rows])
                 for rows in np.split(order[: len(order) // args.batch * args.batch],
                                      len(order) // args.batch)]
        loss, acc = (float(np.mean([float(s[i]) for s in stats])) for i in (0, 1))
        row = {"epoch": epoch, "train_loss": round(loss, 4), "train_acc": round(acc, 4),
               "val_acc": accuracy("val"), "seconds": round(time.perf_counter() - start, 1)}
        if row["val_acc"] > best["val_acc"]:
            best = {**row, "test_acc": accuracy("test")}
        history.append(row)
        print(json.dumps(row), flush=True)
        if row["seconds"] > 60 * args.minutes:
            break
    result = {"command": " ".join(["python", *sys.argv]),
              "model": f"cnn-{'-'.join(map(str, widths))}-bn", "task": "pathfinder32",
              "difficulty": args.difficulty, "style": args.style, "train_images": args.train,
              "val_images": args.val, "test_images": args.val, "batch": args.batch,
              "lr": args.lr, "seed": args.seed, "best_epoch": best["epoch"],
              "val_acc": best["val_acc"], "test_acc": best["test_acc"],
              "train_acc": best["train_acc"], "seconds": history[-1]["seconds"],
              "data_seconds": data_seconds,
              "device": str(jax.devices()[0]), "jax": jax.__version__, "history": history}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
