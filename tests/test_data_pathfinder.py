"""Pathfinder / Path-X: the generator's pictures, the release reader, configs."""

import math

import numpy as np
import pytest
from lra.configs import pathfinder as pathfinder_config
from lra.configs import pathx as pathx_config
from PIL import Image

from lra import data
from lra.data import pathfinder, pathfinder_clean, pathfinder_draw, store
from lra.errors import LRAError

EIGHT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shift(a, dy, dx):
    """a shifted by (dy, dx), zero-filled."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        a[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


def _flood(mask, start):
    """Pixels of `mask` 8-connected to `start`."""
    region = np.zeros_like(mask)
    region[start] = mask[start]
    while True:
        grown = region.copy()
        for dy, dx in EIGHT:
            grown |= _shift(region, dy, dx)
        grown &= mask
        if (grown == region).all():
            return region
        region = grown


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(1)
    return pathfinder_clean.draw(rng, 48, pathfinder_draw.STYLES[32], 6, traces=True)


def test_picture_grid_markers_and_paths(sample, tmp_path):
    images, labels = sample["images"], sample["labels"]
    grid = images.reshape(6, 8, 32, 32).transpose(0, 2, 1, 3).reshape(6 * 32, 8 * 32)
    Image.fromarray(grid).save(tmp_path / "pathfinder32.png")
    with Image.open(tmp_path / "pathfinder32.png") as saved:
        assert (np.asarray(saved) == grid).all()

    assert images.dtype == np.uint8 and images.shape == (48, 32, 32)
    assert labels.sum() == 24  # exactly balanced
    style = pathfinder_draw.STYLES[32]
    for img, label, markers, ids, trace in zip(
            images, labels, sample["markers"], sample["marker_contours"], sample["traces"],
            strict=True):
        first, second = (tuple(np.rint(m).astype(int)) for m in markers)
        assert img[first] == 255 and img[second] == 255  # both markers drawn, white
        assert math.dist(first, second) >= 2 * style.marker_radius
        assert trace[first] == ids[0] and trace[second] == ids[1]  # markers on contour ends
        assert set(ids) <= {1, 2}  # markers always sit on the target contours
        if label == 1:
            assert ids[0] == ids[1]
            assert _flood(trace == ids[0], first)[second]
        else:
            assert ids[0] != ids[1]
            # even through every contour drawn, the two markers are not connected
            assert not _flood(trace > 0, first)[second]


def test_contours_never_touch_and_ink_stays_on_them(sample):
    for img, trace in zip(sample["images"], sample["traces"], strict=True):
        for dy, dx in EIGHT:
            other = _shift(trace, dy, dx)
            assert not ((trace > 0) & (other > 0) & (trace != other)).any()
        near = trace > 0
        for _ in range(2):
            near = near | np.any([_shift(near, dy, dx) for dy, dx in EIGHT], axis=0)
        assert (img[~near] == 0).all()  # paddles lie on the contours (markers too)
        assert (trace > 2).any()  # distractors were drawn


def test_distractor_paddles_override_the_style():
    style = pathfinder_draw.style_of(32, 0)
    assert style.distractor_paddles == 0 and pathfinder_draw.style_of(32) is pathfinder_draw.STYLES[32]
    out = pathfinder_clean.draw(np.random.default_rng(2), 8, style, 6, traces=True)
    assert out["traces"].max() == 2  # the two targets, no distractor contour
    for style in pathfinder_draw.DRAWERS:
        bare, _, _ = pathfinder_draw.generate(8, 32, 6, 2, style=style, distractor_paddles=0,
                                              workers=1)
        full, _, _ = pathfinder_draw.generate(8, 32, 6, 2, style=style, workers=1)
        assert (bare > 0).sum() < (full > 0).sum()


def test_contour_geometry_follows_the_paper():
    """Paddles of length L, gaps of 2 margins bending at the pivot, turns within
    pi / (2 continuity), candidates never on the wall."""
    rng = np.random.default_rng(0)
    for size in (32, 128):
        style = pathfinder_draw.STYLES[size]
        n = 16
        board = pathfinder_clean._Board(n, style, rng.choice(np.asarray(style.margins), n))
        c = pathfinder_clean._Contour(board, 1, 0, 9)
        c.seed(rng, np.arange(n), rng.uniform(size / 3, 2 * size / 3, (n, 16, 2)))
        while c.active.any():
            c.step(rng)
        done = np.flatnonzero(c.done)
        assert len(done) >= n // 2
        m = board.margin[done, None]
        length = np.linalg.norm(c.head[done] - c.start[done], axis=-1)
        assert np.allclose(length, style.paddle_length, atol=1e-3)
        gap_in = np.linalg.norm(c.pivot[done, 1:] - c.head[done, :-1], axis=-1)
        gap_out = np.linalg.norm(c.start[done, 1:] - c.pivot[done, 1:], axis=-1)
        assert np.allclose(gap_in, m, atol=1e-3) and np.allclose(gap_out, m, atol=1e-3)
        turn = np.diff(c.theta[done], axis=1)
        turn = np.abs((turn + np.pi) % (2 * np.pi) - np.pi)
        assert turn.max() <= np.pi / (2 * style.continuity) + 1e-3
        inside = c.head[done] >= style.padding - 0.5
        assert inside.all() and (c.head[done] <= size - 0.5 - style.padding).all()


@pytest.mark.parametrize("style", ["lra", "clean"])
@pytest.mark.parametrize("size", [32, 64, 128])
def test_sizes(size, style):
    images, labels, margins = pathfinder_draw.generate(4, size, 6, 0, style=style, workers=1)
    assert images.shape == (4, size, size) and images.dtype == np.uint8
    assert sorted(labels) == [0, 0, 1, 1]
    assert set(margins) <= set(pathfinder_draw.STYLES[size].margins)
    if style == "clean":
        assert ((images == 255).sum(axis=(1, 2)) >= 2).all()  # the two white markers
    else:
        assert (images.max(axis=(1, 2)) == 255).all()  # scaled by each image's maximum


def test_hard_path_x_contours_are_longer():
    rng = np.random.default_rng(0)
    style = pathfinder_draw.STYLES[128]
    easy = pathfinder_clean.draw(rng, 4, style, 6, traces=True)["traces"]
    hard = pathfinder_clean.draw(rng, 4, style, 14, traces=True)["traces"]
    assert (hard == 1).sum() > 1.8 * (easy == 1).sum()


def test_reproducible_whatever_the_workers(monkeypatch):
    one = pathfinder_draw.generate(24, 32, 9, [7, 1], workers=1)
    again = pathfinder_draw.generate(24, 32, 9, [7, 1], workers=1)
    other = pathfinder_draw.generate(24, 32, 9, [7, 2], workers=1)
    assert all((a == b).all() for a, b in zip(one, again, strict=True))
    assert not (one[0] == other[0]).all()
    monkeypatch.setattr(pathfinder_draw, "CHUNK", 8)
    split = pathfinder_draw.generate(24, 32, 9, [7, 1], workers=1)
    spawned = pathfinder_draw.generate(24, 32, 9, [7, 1], workers=2)
    assert all((a == b).all() for a, b in zip(split, spawned, strict=True))
    both = pathfinder_draw.generate_splits([8, 24], 32, 9, 7, workers=2)  # split k: [7, k]
    assert all((a == b).all() for a, b in zip(both[1], split, strict=True))
    first = pathfinder_draw.generate(8, 32, 9, [7, 0], workers=1)
    assert all((a == b).all() for a, b in zip(both[0], first, strict=True))


# --- the release layout -------------------------------------------------------------


@pytest.fixture()
def release(tmp_path):
    """21 generated images written in the release layout, 8 per folder."""
    images, labels, margins = pathfinder_draw.generate(21, 32, 6, 3, workers=1)
    folder = pathfinder.write_release(tmp_path / "lra_release", images, labels, "easy",
                                      margins=margins, per_folder=8)
    return folder, images, labels


def test_release_layout_round_trip(release):
    folder, images, labels = release
    assert folder.parts[-2:] == ("pathfinder32", "curv_baseline")
    assert sorted(p.name for p in (folder / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    line = (folder / "metadata" / "1.npy").read_text().splitlines()[0].split()
    assert line[:4] == ["imgs/1", "sample_8.png", "8", str(labels[8])]
    got, got_labels, skipped = pathfinder.read_release(folder, 32)
    assert skipped == 0 and (got == images).all() and (got_labels == labels).all()


def test_release_skips_empty_images_and_splits_80_10_10(release, tmp_path):
    folder, images, labels = release
    (folder / "imgs" / "0" / "sample_3.png").write_bytes(b"")
    c = pathfinder_config.get_config("size=smoke")
    c.data.source = "release"
    splits, meta = pathfinder.prepare(c, "release", str(tmp_path / "lra_release"))
    assert meta["skipped_empty"] == 1 and meta["max_len"] == 1024 and meta["vocab_size"] == 256
    assert {k: len(v["labels"]) for k, v in splits.items()} == {"train": 16, "val": 2, "test": 2}
    rows = np.concatenate([v["inputs"] for v in splits.values()])
    kept = np.delete(images, 3, axis=0).reshape(20, -1)
    assert sorted(map(bytes, rows)) == sorted(map(bytes, kept))  # a permutation of the rest
    for v in splits.values():
        assert v["inputs"].shape[1] == 1024 and (v["lengths"] == 1024).all()
        assert set(v["labels"]) <= {0, 1}
    again, _ = pathfinder.prepare(c, "release", str(folder.parent))  # pathfinder32/ itself
    assert (again["train"]["inputs"] == splits["train"]["inputs"]).all()


def test_release_errors_name_the_file(release):
    folder, _, _ = release
    png = folder / "imgs" / "1" / "sample_9.png"
    whole = png.read_bytes()
    png.write_bytes(whole[:60])
    with pytest.raises(LRAError, match="sample_9.png: cannot decode PNG"):
        pathfinder.read_release(folder, 32)
    png.write_bytes(whole)
    meta = folder / "metadata" / "2.npy"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(lines[:2] + ["imgs/2 sample_18.png 18 yes"] + lines[3:]))
    with pytest.raises(LRAError, match=r"2\.npy:3: malformed metadata line"):
        pathfinder.read_release(folder, 32)
    meta.write_text("\n".join(lines[:2] + ["imgs/2 sample_99.png 99 1"]))
    with pytest.raises(LRAError, match="sample_99.png: cannot read the image listed at .*2.npy:3"):
        pathfinder.read_release(folder, 32)
    with pytest.raises(LRAError, match="expected 64x64"):
        pathfinder.read_release(folder, 64)
    with pytest.raises(LRAError, match="no pathfinder32/curv_contour_length_14/metadata"):
        pathfinder.release_folder(str(folder.parent.parent), 32, "hard")
    with pytest.raises(LRAError, match="data.path is empty"):
        pathfinder.release_folder("", 32, "easy")


def test_release_reads_numpy_metadata(release):
    """The generator's own metadata files are numpy string arrays."""
    folder, images, labels = release
    for f in (folder / "metadata").iterdir():
        rows = [line.split() for line in f.read_text().splitlines()]
        with open(f, "wb") as out:
            np.save(out, np.array(rows))
    got, got_labels, _ = pathfinder.read_release(folder, 32)
    assert (got == images).all() and (got_labels == labels).all()


# --- configs and the task contract ----------------------------------------------------


@pytest.mark.parametrize("module", [pathfinder_config, pathx_config])
@pytest.mark.parametrize("size", ["smoke", "cpu", "nystrom", "lra"])
def test_configs(module, size):
    c = module.get_config(f"size={size}")
    resolution, difficulty = pathfinder.settings(c)
    assert c.data.max_len == resolution**2 and c.data.source == "generate"
    if size in ("nystrom", "lra"):
        assert difficulty == "hard"
        assert resolution == (128 if module is pathx_config else 32)


def test_settings_errors_name_the_key():
    c = pathfinder_config.get_config("size=smoke")
    c.data.resolution = 48
    with pytest.raises(LRAError, match="data.resolution=48"):
        pathfinder.variant(c)
    c = pathfinder_config.get_config("size=smoke")
    c.data.difficulty = "medium"
    with pytest.raises(LRAError, match="data.difficulty='medium'"):
        pathfinder.variant(c)
    c = pathx_config.get_config("size=lra")
    c.data.max_len = 4096
    with pytest.raises(LRAError, match="set data.max_len=16384"):
        pathfinder.variant(c)
    c = pathfinder_config.get_config("size=smoke")
    c.data.distractor_paddles = -1
    with pytest.raises(LRAError, match="data.distractor_paddles=-1"):
        pathfinder.variant(c)
    c = pathfinder_config.get_config("size=smoke")
    c.data.style = "snakes"
    with pytest.raises(LRAError, match="data.style='snakes' is not valid; valid: lra, clean"):
        pathfinder.variant(c)


def test_variants_differ():
    base = pathfinder_config.get_config("size=smoke")
    names = {pathfinder.variant(base)}
    for key, value in [("difficulty", "hard"), ("seed", 1), ("num_train", 65),
                       ("source", "release"), ("resolution", 64), ("distractor_paddles", 0),
                       ("style", "clean")]:
        c = pathfinder_config.get_config("size=smoke")
        c.data[key] = value
        c.data.max_len = c.data.resolution**2
        names.add(pathfinder.variant(c))
    assert len(names) == 8


def test_open_dataset_prepares_generated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path))
    c = pathx_config.get_config("size=smoke")
    path = data.open_dataset(c)
    meta = store.read_meta(path)
    assert meta["counts"] == {"train": 64, "val": 32, "test": 32}
    assert meta["num_classes"] == 2 and meta["difficulty"] == "hard"
    train = store.read_split(path, "train")
    assert train["inputs"].shape == (64, 1024) and train["inputs"].max() == 255
    assert train["labels"].sum() == 32
    val = store.read_split(path, "val")["inputs"]
    assert not np.array_equal(val, train["inputs"][:32])  # splits drawn from other seeds
