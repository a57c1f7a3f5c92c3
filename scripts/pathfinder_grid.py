"""Side-by-side picture of the two Pathfinder drawing styles.

    python scripts/pathfinder_grid.py --out results/cpu/pathfinder/styles.png

Rows: lra easy, lra hard, clean easy, clean hard (32 px, 8 images each, 4x enlarged,
labels 1 on the left half of each row).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from lra.data import pathfinder_draw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-row", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = []
    for style in ("lra", "clean"):
        for difficulty in ("easy", "hard"):
            length = pathfinder_draw.CONTOUR_LENGTHS[difficulty]
            images, labels, _ = pathfinder_draw.generate(
                args.per_row, 32, length, [args.seed, length], style=style, workers=1)
            images = images[np.argsort(-labels, kind="stable")]
            rows.append(np.concatenate([np.pad(i, 1, constant_values=96) for i in images], 1))
    grid = np.concatenate(rows, 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.Resampling.NEAREST
                                 ).save(args.out)


if __name__ == "__main__":
    main()
