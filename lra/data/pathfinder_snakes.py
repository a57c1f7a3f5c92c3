"""Pathfinder images as the LRA drew them (`style="lra"`, the default).

The LRA release (Tay et al. 2020, §3.4) drew Pathfinder and Path-X with Linsley et al.'s
"snakes2" generator (github.com/drewlinsley/pathfinder, snakes2.py and snakes.py), run
under Python 2 with scipy.misc and OpenCV, at the parameters of the LRA code's
Pathfinder docstrings. This module draws images by the same procedure, one image at a
time, so that what a model sees has the original's statistics, artefacts included:

* Paddles are 1-pixel-wide PIL lines at `antialias` x the resolution, Lanczos-resized
  to the image (scipy.misc.imresize: bytes in, bytes out), times a contrast. A paddle's
  *mask* is the same line dilated by a disk of radius margin x antialias, resized alike.
* A contour grows from its seed paddle: the next pivot lies paddle_length + 2 margin
  past the last pivot; the next paddle's head is drawn from the integer pixels of a
  circle of radius paddle_length + margin about it, each weighted by
  (1 - dilated mask) cos²(min(continuity |turn|, π/2)); the paddle is kept if the
  occupancy mask plus its mask stays below 1.8 (three tries). A contour's newest
  paddle joins the mask only when the next one is placed.
* A seed paddle's tail is drawn uniformly from the pixels left free by dilating the
  mask with the paddle's own mask as kernel. The original casts that float kernel to
  uint8, so only its saturated pixels survive, and OpenCV pads a float image with a
  huge negative value; for most orientations the surviving kernel misses its anchor,
  some border pixel sees only padding, no pixel counts as free and the seed fails.
  Seeding therefore succeeds only for orientations near -135 degrees (the kernel runs
  through its anchor from one pixel below-right of it): the first target and every
  distractor start in that direction. `_dilate` keeps this behaviour.
* Two target contours start `seed_distance` apart inside a central square (the mask
  closed within 2 seed distances of the border); the second seed is not checked
  against the mask. Either failing restarts both.
* Distractor contours (a third as long) get five tries each and are left out when all
  fail, which is most of the time (about a third of those asked for are drawn at 32 px).
* Paddles get snake contrast x paddle contrast (targets) or snake contrast alone
  (distractors): at 32 px 1.5 and 2.0, so distractors are brighter. Markers are disks
  of value 1. The saved image is scaled by its own maximum (scipy.misc.imsave), so the
  brightest pixel is 255 and the markers are not the brightest thing in the image.

Kept from the original although they look like slips: the first target's last paddle
never joins the mask (distractors may touch it); the pivot of a reversed orientation
goes through `flip`, as the original's branch does, because ceil() of a coordinate
shifted by sin(±π) ~ ±1e-16 differs. Not kept: labels are drawn exactly balanced, and
two target contours are redrawn until they fit (the original retried forever too).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import Image, ImageDraw

SEED_TRIES = 3  # max_paddle_retrial 2: seed and paddle placements tried per contour step
DISTRACTOR_TRIES = 5  # max_distractor_contour_retrial 4
STOP_AVAILABILITY = 0.01  # a distractor is not seeded once < 1% of the mask is free
FULL = 1.8  # a paddle may not push mask + its mask to this
PAIR_TRIES = 10_000  # target pairs tried before giving up (never reached in practice)


def _translate(p, theta: float, dist: float) -> tuple[int, int]:
    return (int(math.ceil(p[0] + dist * math.sin(theta))),
            int(math.ceil(p[1] + dist * math.cos(theta))))


def _flip(theta: float) -> float:
    return theta + math.pi if theta < 0 else theta - math.pi


@functools.lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x**2 + y**2 <= radius**2


def _dilate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Grey dilation as OpenCV computes it for a float image: anchor at the kernel's
    centre, outside the image -inf; a pixel whose kernel only reaches outside is -inf."""
    ky, kx = kernel.shape
    h, w = image.shape
    padded = np.full((h + ky - 1, w + kx - 1), -np.inf)
    padded[ky // 2:ky // 2 + h, kx // 2:kx // 2 + w] = image
    out = np.full((h, w), -np.inf)
    for i, j in zip(*np.nonzero(kernel), strict=True):
        np.maximum(out, padded[i:i + h, j:j + w], out=out)
    return out


def _bytescale(x: np.ndarray) -> np.ndarray:
    """scipy.misc.bytescale: min..max -> 0..255, rounded half up (all-equal -> 0)."""
    lo, span = float(x.min()), float(x.max() - x.min()) or 1.0
    return (np.clip((x - lo) * (255.0 / span), 0, 255) + 0.5).astype(np.uint8)


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    """scipy.misc.imresize(..., interp='lanczos'): bytes, PIL Lanczos, bytes."""
    if image.dtype != np.uint8:
        image = _bytescale(image)
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


@functools.lru_cache(maxsize=65536)
def _paddle(length: int, thickness: float, margin: int, aa: int, theta: float):
    """A paddle from the centre of a (2R+1)² patch, R = length + ceil(thickness) + margin:
    (line, mask) as uint8 patches (divide by 255)."""
    reach = length + math.ceil(thickness) + margin
    side, centre = 2 * reach * aa + 1, reach * aa
    head = _translate((centre, centre), theta, length * aa)
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).line([(centre, centre), (head[1], head[0])], fill=255,
                                width=round(thickness * aa))
    line = np.asarray(canvas)
    mask = np.where(_dilate(line.astype(np.float64), _disk(margin * aa)) > 0, 255, 0)
    return _resize(line, 2 * reach + 1), _resize(mask.astype(np.uint8), 2 * reach + 1)


@functools.lru_cache(maxsize=4096)
def _seed_kernel(length: int, thickness: float, margin: int, aa: int, theta: float, size: int):
    """The seed test's dilation kernel: the paddle's mask drawn from one pixel below-right
    of the centre of a (2 (length + margin) + 1)² patch, cast to uint8 (only saturated
    pixels survive); None when OpenCV's padding would leave some pixel of a size² image
    at -inf, which fails the seed whatever the mask holds."""
    side = 2 * (length + margin) + 1
    _, mask = _paddle(length, thickness, margin, aa, theta)
    kernel = np.zeros((side, side), bool)
    img, patch = _window(mask.shape[0] // 2, (length + margin + 1,) * 2, (side, side))
    kernel[img] = mask[patch] == 255
    return kernel if _dilate(np.zeros((size, size)), kernel).min() >= 0 else None


@functools.lru_cache(maxsize=64)
def _ring(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dy, dx) of candidate heads: a circle of radius `step`, one pixel of arc
    apart."""
    angles = np.arange(0, 360, 360.0 / (2 * step * math.pi)) * math.pi / 180
    return step * np.sin(angles), step * np.cos(angles)


def _window(r: int, at, shape) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of an image of `shape` and of a (2r+1)² patch centred on pixel `at`."""
    y0, x0 = at[0] - r, at[1] - r
    ys, xs = min(max(y0, 0), shape[0]), min(max(x0, 0), shape[1])
    ye, xe = max(min(y0 + 2 * r + 1, shape[0]), ys), max(min(x0 + 2 * r + 1, shape[1]), xs)
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))


@dataclasses.dataclass
class _Paddle:
    """A paddle placed in the image: its window, ink (times contrast) and mask there."""

    at: tuple[slice, slice]
    ink: np.ndarray
    mask: np.ndarray


class _Image:
    """One image being drawn: its occupancy mask (0..1, the padding is 1)."""

    def __init__(self, rng: np.random.Generator, style, margin: int):
        self.rng, self.style, self.margin = rng, style, margin
        s, p = style.size, style.padding
        self.shape = (s, s)
        self.framed = np.zeros((s + 2 * margin, s + 2 * margin))  # 0 outside: see extend
        self.mask = self.framed[margin:margin + s, margin:margin + s]
        self.mask[:p], self.mask[-p:], self.mask[:, :p], self.mask[:, -p:] = 1, 1, 1, 1

    def paddle(self, at, theta: float, contrast: float) -> _Paddle:
        st = self.style
        line, mask = _paddle(st.paddle_length, st.thickness, self.margin, st.antialias,
                             float(theta))
        img, patch = _window(line.shape[0] // 2, at, self.shape)
        return _Paddle(img, line[patch] * (contrast / 255.0), mask[patch] / 255.0)

    def occupy(self, paddle: _Paddle) -> None:
        np.maximum(self.mask[paddle.at], paddle.mask, out=self.mask[paddle.at])

    def inside(self, p) -> bool:
        return 0 <= p[0] < self.shape[0] and 0 <= p[1] < self.shape[1]

    def seed(self, closed: np.ndarray, contrast: float):
        """A seed paddle whose tail is free in `closed` after the seed test's dilation:
        (paddle, pivot, theta, tail), or None."""
        st, rng = self.style, self.rng
        for _ in range(SEED_TRIES):
            theta = int(rng.integers(-180, 180)) * math.pi / 180
            kernel = _seed_kernel(st.paddle_length, st.thickness, self.margin, st.antialias,
                                  theta, st.size)
            if kernel is None:
                return None
            free = np.flatnonzero(_dilate(closed, kernel) <= 0.3)
            if not len(free):
                return None
            tail = divmod(int(free[rng.integers(len(free))]), st.size)
            head = _translate(tail, theta, st.paddle_length)
            pivot = _translate(head, _flip(theta), st.paddle_length + self.margin)
            if self.inside(head) and self.inside(pivot):
                return self.paddle(tail, theta, contrast), pivot, theta, tail
        return None

    def extend(self, pivot, theta: float, contrast: float):
        """The next paddle of a contour: (paddle, pivot, theta, head) or None."""
        st, m, size = self.style, self.margin, self.style.size
        pivot = _translate(pivot, theta, st.paddle_length + 2 * m)
        dy, dx = _ring(st.paddle_length + m)
        ys, xs = pivot[0] + dy, pivot[1] + dx
        ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        if not ok.any():
            return None
        flat = np.unique(ys[ok].astype(np.int64) * size + xs[ok].astype(np.int64))
        hy, hx = np.divmod(flat, size)
        turns = np.arctan2(hy - pivot[0], hx - pivot[1])
        turn = np.abs(turns - theta)
        turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * st.continuity, math.pi / 2)
        # The mask dilated by a disk of radius m, at the candidate heads only; the frame's
        # zeros change no maximum (the mask is >= 0 and the disk's centre is inside).
        oy, ox = np.nonzero(_disk(m))
        dilated = self.framed[hy[:, None] + oy, hx[:, None] + ox].max(1)
        weight = (1 - dilated) * np.maximum(np.cos(turn), 0) ** 2
        total = weight.sum()
        if total < 1e-4:
            return None
        cmf = np.cumsum(weight / total)
        for _ in range(SEED_TRIES):
            pick = int(np.argmax(cmf - self.rng.random() > 0))
            head = (int(hy[pick]), int(hx[pick]))
            paddle = self.paddle(head, _flip(float(turns[pick])), contrast)
            if paddle.mask.size == 0 or (self.mask[paddle.at] + paddle.mask).max() < FULL:
                return paddle, pivot, float(turns[pick]), head
        return None


def _ink(canvas: np.ndarray, paddle: _Paddle) -> None:
    np.maximum(canvas[paddle.at], paddle.ink, out=canvas[paddle.at])


def _targets(img: _Image, length: int):
    """Two target contours: (ink [2, H, W], tails, heads) or None (redraw both)."""
    st, rng, sd = img.style, img.rng, img.style.seed_distance
    contrast = st.snake_contrast * st.paddle_contrast
    closed = img.mask.copy()
    closed[:2 * sd], closed[-2 * sd:], closed[:, :2 * sd], closed[:, -2 * sd:] = 1, 1, 1, 1
    first = img.seed(closed, contrast)
    if first is None:
        return None
    for _ in range(SEED_TRIES):  # the second seed: seed_distance away, never tested
        theta = int(rng.integers(-180, 180)) * math.pi / 180
        away = int(rng.integers(0, 360)) * math.pi / 180
        tail = (int(np.round(first[3][0] + sd * math.sin(away))),
                int(np.round(first[3][1] + sd * math.cos(away))))
        head = _translate(tail, theta, st.paddle_length)
        pivot = _translate(head, _flip(theta), st.paddle_length + img.margin)
        if img.inside(head) and img.inside(pivot):
            break
    else:
        return None
    grown = [first, (img.paddle(tail, theta, contrast), pivot, theta, tail)]
    ink = np.zeros((2, *img.shape))
    for k in range(2):
        _ink(ink[k], grown[k][0])
    for _ in range(length - 1):
        for k in range(2):
            last, grown[k] = grown[k][0], img.extend(*grown[k][1:3], contrast)
            if grown[k] is None:
                return None
            img.occupy(last)
            _ink(ink[k], grown[k][0])
    img.occupy(grown[1][0])  # the first target's last paddle never joins the mask
    return ink, (first[3], tail), (grown[0][3], grown[1][3])


def _distractor(img: _Image, length: int, ink: np.ndarray) -> bool:
    """Draw one distractor contour of `length` paddles into `ink` and the mask; False
    (nothing drawn) if it does not fit."""
    contrast = img.style.snake_contrast
    if (img.mask <= 0.3).mean() < STOP_AVAILABILITY:
        return False
    closed = img.mask.copy()
    closed[0], closed[-1], closed[:, 0], closed[:, -1] = 1, 1, 1, 1
    grown = img.seed(closed, contrast)
    if grown is None:
        return False
    saved, paddles = img.mask.copy(), [grown[0]]
    for _ in range(length - 1):
        last, grown = grown[0], img.extend(*grown[1:3], contrast)
        if grown is None:
            img.mask[...] = saved
            return False
        img.occupy(last)
        paddles.append(grown[0])
    img.occupy(grown[0])
    for paddle in paddles:
        _ink(ink, paddle)
    return True


def _disk_image(shape, centre, radius: float, aa: int) -> np.ndarray:
    """A marker: a disk drawn at antialias x, Lanczos-resized, in 0..1."""
    y, x = np.ogrid[-centre[0] * aa:(shape[0] - centre[0]) * aa,
                    -centre[1] * aa:(shape[1] - centre[1]) * aa]
    big = (x**2 + y**2 <= (radius * aa) ** 2).astype(np.float64)
    return _resize(big, shape[0]) / 255.0


def draw_one(rng: np.random.Generator, style, contour_length: int, label: int,
             count: int, length: int) -> dict:
    """One image with `count` distractor contours of `length` paddles asked for."""
    margin = int(rng.choice(np.asarray(style.margins)))
    for _ in range(PAIR_TRIES):
        img = _Image(rng, style, margin)
        targets = _targets(img, contour_length)
        if targets is not None:
            break
    else:
        raise RuntimeError(f"no two target contours fit a {style.size} px image")
    ink, tails, heads = targets
    drawn = np.zeros(img.shape)
    kept = sum(any(_distractor(img, length, drawn) for _ in range(DISTRACTOR_TRIES))
               for _ in range(count))
    first = int(rng.integers(0, 2))
    second = first if label == 1 else 1 - first
    markers = (tails[first], heads[second])
    dots = np.maximum(*(_disk_image(img.shape, m, style.marker_radius, style.antialias)
                        for m in markers))
    image = np.maximum(np.maximum(ink.max(0), drawn), dots)
    return {"image": _bytescale(image), "margin": margin,
            "markers": np.asarray(markers, np.float32),
            "marker_contours": np.array([first + 1, second + 1]),
            "layers": np.concatenate([ink, drawn[None]]).astype(np.float32),
            "distractors": kept, "scale": float(image.max())}


def draw(rng: np.random.Generator, n: int, style, contour_length: int, *,
         layers: bool = False) -> dict:
    """`n` images, half of each label (odd n: one more 0), in random order.

    Keys as `pathfinder_clean.draw`: `images` uint8 [n, H, W], `labels`, `margin`,
    `markers` [n, 2, 2] (y, x), `marker_contours` [n, 2] (target 1 or 2 under each
    marker); with `layers`, also `layers` float32 [n, 3, H, W] (each target's ink and
    the distractors' ink, before the per-image scaling), `distractors` [n] (contours
    drawn) and `scale` [n] (the maximum each image was divided by).
    """
    count, length = style.distractors(contour_length)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int32)
    drawn = [draw_one(rng, style, contour_length, int(y), count, length) for y in labels]
    out = {"images": np.stack([d["image"] for d in drawn]) if n else
           np.zeros((0, style.size, style.size), np.uint8),
           "labels": labels, "margin": np.array([d["margin"] for d in drawn], np.int64)}
    keys = ["markers", "marker_contours"] + (["layers", "distractors", "scale"] if layers else [])
    for key in keys:
        out[key] = np.stack([np.asarray(d[key]) for d in drawn]) if n else np.zeros(0)
    return out
