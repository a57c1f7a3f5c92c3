"""The default ("lra") Pathfinder style has the statistics of the images the LRA ran on.

ORIGINAL holds figures measured on 500 easy and 500 hard 32 px images of Linsley et
al.'s own snakes2.py/snakes.py (github.com/drewlinsley/pathfinder), run with OpenCV and
the scipy.misc resize/save it was written for, at the parameters of the LRA code's
Pathfinder32 docstring. The statistics are computed here from the images and their ink
layers only; the same pins fail on the clean style.
"""

import math

import numpy as np
import pytest
from scipy import ndimage

from lra.data import pathfinder_clean, pathfinder_draw, pathfinder_snakes

# statistic: (original's value, tolerance for the sample sizes below)
ORIGINAL = {
    "easy": {"distractors": (3.13, 0.45), "lit": (77.2, 7.0), "brightness": (1.262, 0.06),
             "pieces": (2.87, 0.35), "scale": (1.077, 0.015)},
    "hard": {"distractors": (1.11, 0.3), "lit": (128.1, 12.0), "brightness": (1.256, 0.08),
             "scale": (1.064, 0.025)},
}
SAMPLES = {"easy": 300, "hard": 100}
EIGHT = np.ones((3, 3), bool)


def _statistics(images, targets, distractors, counts, near_marker) -> dict:
    """images uint8 [N, H, W]; targets bool [N, 2, H, W] and distractors bool [N, H, W]:
    the pixels each contour's ink reaches; counts: distractor contours per image."""
    img = images.astype(np.float64)
    target, other = targets.any(1), distractors
    lit = img >= 16  # above the Lanczos halo (1..12)
    t_only = target & ~other & ~near_marker & lit
    d_only = other & ~target & ~near_marker & lit
    return {
        "distractors": float(np.mean(counts)),
        "lit": float((images >= 64).sum((1, 2)).mean()),
        "brightness": float(img[d_only].mean() / img[t_only].mean()),
        # components of both targets' ink, 8-connected, per target
        "pieces": float(np.mean([ndimage.label(t, EIGHT)[1] for t in target]) / 2),
    }


def _violations(stats: dict, difficulty: str) -> list[str]:
    return [f"{k}={stats[k]:.3f}, original {v} +- {tol}"
            for k, (v, tol) in ORIGINAL[difficulty].items() if abs(stats[k] - v) > tol]


def _lra(difficulty):
    style = pathfinder_draw.STYLES[32]
    length = pathfinder_draw.CONTOUR_LENGTHS[difficulty]
    out = pathfinder_snakes.draw(np.random.default_rng(11), SAMPLES[difficulty], style, length,
                                 layers=True)
    near = np.zeros(out["images"].shape, bool)
    for i, pair in enumerate(out["markers"].astype(int)):
        for y, x in pair:  # the marker disks (radius 1.5) and their halo
            near[i, max(y - 3, 0):y + 3, max(x - 3, 0):x + 3] = True
    return out, near


@pytest.fixture(scope="module", params=["easy", "hard"])
def lra(request):
    return request.param, *_lra(request.param)


def test_lra_style_has_the_original_statistics(lra):
    difficulty, out, near = lra
    layers = out["layers"]
    stats = _statistics(out["images"], layers[:, :2] > 0, layers[:, 2] > 0, out["distractors"],
                        near)
    stats["scale"] = float(out["scale"].mean())
    assert _violations(stats, difficulty) == []


def test_clean_style_fails_the_same_pins():
    """The clean generator draws every distractor, at the targets' contrast: a
    different set of images, which these statistics tell apart."""
    style = pathfinder_draw.STYLES[32]
    out = pathfinder_clean.draw(np.random.default_rng(11), 300, style, 6, traces=True)
    trace = out["traces"]
    reach = [ndimage.binary_dilation(trace == c, EIGHT[None]) for c in (1, 2)]
    others = ndimage.binary_dilation(trace > 2, EIGHT[None])
    counts = [len(np.unique(t[t > 2])) for t in trace]
    near = np.zeros(trace.shape, bool)
    for i, pair in enumerate(np.rint(out["markers"]).astype(int)):
        for y, x in pair:
            near[i, max(y - 3, 0):y + 3, max(x - 3, 0):x + 3] = True
    stats = _statistics(out["images"], np.stack(reach, 1), others, counts, near)
    stats["scale"] = 1.0  # white markers: nothing is rescaled
    failed = {v.split("=")[0] for v in _violations(stats, "easy")}
    assert {"distractors", "lit", "brightness", "scale"} <= failed


def test_markers_sit_on_the_ends_of_the_target_contours(lra):
    """Label 1 iff both markers are on one target: the first on a target's seed tail, the
    second on the last paddle's head of the same (1) or the other (0) target."""
    _, out, _ = lra
    assert out["labels"].sum() == len(out["labels"]) // 2
    for label, (first, second), ids, layers in zip(
            out["labels"], out["markers"].astype(int), out["marker_contours"], out["layers"],
            strict=True):
        assert set(ids) <= {1, 2} and (label == 1) == (ids[0] == ids[1])
        assert layers[ids[0] - 1][tuple(first)] > 0 and layers[ids[1] - 1][tuple(second)] > 0
        assert math.dist(first, second) > 0


def test_only_up_left_seeds_survive_the_uint8_kernel():
    """The original's seed test keeps a paddle orientation (whole degrees) only from -150
    to -121 degrees at 32 px (measured with OpenCV on the original code): the first
    target and every distractor start up and to the left."""
    ok = [d for d in range(-180, 180)
          if pathfinder_snakes._seed_kernel(2, 0.5, 1, 2, d * math.pi / 180, 32) is not None]
    assert ok == list(range(-150, -120))


def test_dilation_pads_with_minus_infinity():
    kernel = np.zeros((3, 3), bool)
    kernel[2, 2] = True  # one tap, below-right of the anchor
    out = pathfinder_snakes._dilate(np.arange(16.0).reshape(4, 4), kernel)
    assert np.isneginf(out[3]).all() and np.isneginf(out[:, 3]).all()
    assert out[0, 0] == 5.0 and out[2, 2] == 15.0


def test_images_are_scaled_by_their_maximum(lra):
    _, out, _ = lra
    assert (out["images"].max(axis=(1, 2)) == 255).all()
    assert (out["images"].min(axis=(1, 2)) == 0).all()
    assert set(np.round(out["scale"], 4)) <= {1.0, 1.0431, 1.0588, 1.0667, 1.1529}


def test_path_x_draws_every_distractor():
    """At 128 px the thicker paddle keeps its anchor: the original drew all 17 distractor
    contours of an easy image, 539 pixels >= 64 per image (30 images, measured as above)."""
    out = pathfinder_snakes.draw(np.random.default_rng(5), 6, pathfinder_draw.STYLES[128], 6,
                                 layers=True)
    assert out["distractors"].mean() >= 16.5
    assert abs((out["images"] >= 64).sum((1, 2)).mean() - 539) < 60
