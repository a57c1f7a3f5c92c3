"""Pathfinder images: the LRA's drawing parameters and the two ways to draw them.

Linsley et al. (2018) draw two circular markers and contours of short *paddles*; the
label says whether the markers sit at the two ends of one contour. The LRA release
(Tay et al. 2020, §3.4) drew Pathfinder (32 px) and Path-X (128 px) with Linsley et
al.'s snakes2 generator at the per-size parameters of the LRA code's docstrings
(`lra_benchmarks/data/pathfinder.py`), held in `STYLES`. Two drawing styles:

  lra    (default) `pathfinder_snakes`: the original procedure, artefacts included, so
         the images have the statistics of the LRA's (about 3 of the 10 distractors asked
         for at 32 px easy, brighter than the targets, soft Lanczos strokes, per-image
         max scaling). Use it to compare with published numbers.
  clean  `pathfinder_clean`: every contour asked for, same contrast, crisp strokes, any
         orientation. A different and much harder task: a plain CNN that reaches 85% on
         the lra style stays near chance on it with the LRA's distractors.

`generate` draws either in chunks seeded independently, so the result does not depend
on the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from lra.data import pathfinder_clean, pathfinder_snakes

CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}
DRAWERS = {"lra": pathfinder_snakes.draw, "clean": pathfinder_clean.draw}
CHUNK = 2048  # images per independently seeded chunk of `generate`
VERSION = {"lra": 1, "clean": 1}  # bump when a change alters the images drawn from a seed


@dataclasses.dataclass(frozen=True)
class Style:
    """Drawing parameters of one image size (pixels, except continuity and contrasts)."""

    size: int
    paddle_length: int
    thickness: float
    margins: tuple[int, ...]  # one is drawn per image
    marker_radius: float
    seed_distance: int
    continuity: float
    padding: int
    distractor_paddles: int  # distractor contours = this // distractor length
    snake_contrast: float  # every contour; markers are 1
    paddle_contrast: float = 1.0  # target contours only (lra style), every contour (clean)
    antialias: int = 2
    batch: int = 256  # images drawn together (clean style)

    def distractors(self, contour_length: int) -> tuple[int, int]:
        """(distractor contours asked for, paddles per distractor contour)."""
        length = max(1, contour_length // 3)
        return self.distractor_paddles // length, length


# The LRA generation parameters (lra_benchmarks/data/pathfinder.py docstrings); what
# they leave out keeps the generator's defaults (paddle_length 5, padding 22,
# seed_distance 27, paddle contrast 1).
STYLES = {
    32: Style(32, 2, 0.5, (1,), 1.5, 7, 1.0, 1, 20, 2.0, 0.75, batch=1024),
    64: Style(64, 5, 1.0, (1,), 2.5, 12, 1.8, 1, 22, 0.8, batch=512),
    128: Style(128, 5, 1.5, (2, 3), 3.0, 20, 1.8, 1, 35, 0.9, batch=256),
    256: Style(256, 5, 2.0, (3,), 5.0, 27, 1.8, 22, 30, 1.0, batch=64),
}


def style_of(size: int, distractor_paddles: int | None = None) -> Style:
    """The LRA parameters of `size`, with `distractor_paddles` replacing its own when given."""
    style = STYLES[size]
    if distractor_paddles is None:
        return style
    return dataclasses.replace(style, distractor_paddles=int(distractor_paddles))


def _chunk(job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seed, index, n, size, contour_length, distractor_paddles, drawing = job
    style = style_of(size, distractor_paddles)
    out = DRAWERS[drawing](np.random.default_rng([*seed, index]), n, style, contour_length)
    return out["images"], out["labels"], out["margin"]


def generate(n: int, size: int, contour_length: int, seed, *, style: str = "lra",
             distractor_paddles: int | None = None, workers: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` images (uint8 [n, size, size]), their labels (int32 [n]) and paddle margins,
    drawn in `style` ("lra" | "clean"), reproducible from `seed` (an int or a sequence of
    ints) whatever the number of worker processes: chunk i of CHUNK images is drawn from
    the seed sequence [*seed, i]. `distractor_paddles` overrides the LRA value."""
    return generate_splits([n], size, contour_length, seed, style=style,
                           distractor_paddles=distractor_paddles, workers=workers, nested=False)[0]


def generate_splits(counts, size: int, contour_length: int, seed, *, style: str = "lra",
                    distractor_paddles: int | None = None, workers: int | None = None,
                    nested: bool = True) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`generate(counts[k], ..., seed=[*seed, k])` for every k, all chunks drawn by one pool
    of workers (`nested=False`: one split, from `seed` itself)."""
    if style not in DRAWERS:
        raise ValueError(f"style={style!r}; valid: {', '.join(DRAWERS)}")
    seed = [int(x) for x in np.atleast_1d(seed)]
    jobs, owner = [], []
    for k, n in enumerate(counts):
        base = [*seed, k] if nested else seed
        for i, start in enumerate(range(0, n, CHUNK)):
            jobs.append((base, i, min(CHUNK, n - start), size, contour_length,
                         distractor_paddles, style))
            owner.append(k)
    workers = min(len(jobs), workers or (os.cpu_count() or 1))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_chunk, jobs))
    else:
        parts = [_chunk(job) for job in jobs]
    out = []
    for k in range(len(counts)):
        mine = [p for p, o in zip(parts, owner, strict=True) if o == k]
        if not mine:
            out.append((np.zeros((0, size, size), np.uint8), np.zeros(0, np.int32),
                        np.zeros(0, np.int64)))
        else:
            out.append(tuple(np.concatenate([p[i] for p in mine]) for i in range(3)))
    return out
