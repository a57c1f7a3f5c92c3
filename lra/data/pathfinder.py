"""Pathfinder and Path-X (LRA, Tay et al. 2020, §3.4): are the two markers joined by a path?

Two classes; an image of `data.resolution` x `data.resolution` pixels (32 for
Pathfinder, 128 for Path-X) becomes the row-major sequence of its pixel values, each
a token id in 0..255: every pixel is a real token, so lengths always equal the
sequence length. `data.difficulty` picks the contour length: easy (6 paddles,
`curv_baseline`), intermediate (9, `curv_contour_length_9`), hard (14,
`curv_contour_length_14`).

Sources:
  generate  images drawn by `lra.data.pathfinder_draw` (Linsley et al. 2018's
            generator, LRA parameters) in `data.style` ("lra": as the LRA release drew
            them, the default; "clean": a harder set without the original's artefacts):
            `data.num_train/num_val/num_test` images, seed `data.seed`; the default
            source, so the harness works offline.
  release   the LRA release (`lra_release.gz`): `data.path` holds `pathfinderN/` (or is
            it), laid out as `<difficulty folder>/imgs/<k>/sample_<i>.png` plus
            `<difficulty folder>/metadata/<k>.npy`, text despite the name, one image a
            line: `imgs/<k> sample_<i>.png <i> <label> ...` (fields 0, 1 and 3 are
            read, as lra_benchmarks/data/pathfinder.py reads them). Empty image files
            are skipped, as the LRA input pipeline filters them out; the rest is
            shuffled with `data.seed` and split 80/10/10 (the LRA's proportions;
            its own cut followed the TFDS order instead of a seeded shuffle).
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lra import data
from lra.data import pathfinder_draw
from lra.data.store import SPLITS
from lra.errors import LRAError

log = logging.getLogger(__name__)

NUM_CLASSES = 2
SOURCES = ("generate", "release")
VOCAB_SIZE = 256
FOLDERS = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9",
           "hard": "curv_contour_length_14"}
SPLIT_CUTS = (0.8, 0.9)  # train [:80%], val [80%:90%], test [90%:] as in the LRA pipeline


def settings(config) -> tuple[int, str]:
    """(resolution, difficulty) of `config`, validated."""
    d = config.data
    resolution, difficulty = d.resolution, d.difficulty
    if resolution not in pathfinder_draw.STYLES:
        valid = ", ".join(map(str, pathfinder_draw.STYLES))
        raise LRAError(f"data.resolution={resolution!r} is not supported; valid: {valid}")
    if difficulty not in FOLDERS:
        raise LRAError(f"data.difficulty={difficulty!r} is not valid; valid: {', '.join(FOLDERS)}")
    if d.max_len < resolution**2:
        raise LRAError(f"data.max_len={d.max_len} is shorter than the {resolution}x{resolution} "
                       f"image; set data.max_len={resolution**2}")
    if d.source == "generate" and d.style not in pathfinder_draw.DRAWERS:
        raise LRAError(f"data.style={d.style!r} is not valid; valid: "
                       f"{', '.join(pathfinder_draw.DRAWERS)}")
    extra = d.distractor_paddles
    if extra is not None and (isinstance(extra, bool) or not isinstance(extra, int) or extra < 0):
        raise LRAError(f"data.distractor_paddles={extra!r} must be a count >= 0, or None for "
                       "the LRA value of the resolution")
    return resolution, difficulty


def variant(config) -> str:
    """Folder name of the prepared data: source, size, difficulty, seed and counts."""
    resolution, difficulty = settings(config)
    d = config.data
    name = f"{d.source}-{resolution}px-{difficulty}-seed{d.seed}"
    if d.source == "generate":
        name += (f"-n{d.num_train}-{d.num_val}-{d.num_test}"
                 f"-{d.style}-v{pathfinder_draw.VERSION[d.style]}")
        if d.distractor_paddles is not None:
            name += f"-d{d.distractor_paddles}"
    return name


@data.task("pathfinder", column="Pathfinder", vocab_size=VOCAB_SIZE, order=4)
@data.task("pathx", column="Path-X", vocab_size=VOCAB_SIZE, in_average=False, order=5)
def prepare(config, source: str, path: str | None):
    """(splits, meta) drawn by the generator or read from the release folder under `path`."""
    resolution, difficulty = settings(config)
    meta = {"vocab_size": VOCAB_SIZE, "num_classes": NUM_CLASSES, "max_len": resolution**2,
            "resolution": resolution, "difficulty": difficulty}
    if source == "generate":
        length = pathfinder_draw.CONTOUR_LENGTHS[difficulty]
        style = pathfinder_draw.style_of(resolution, config.data.distractor_paddles)
        drawn = pathfinder_draw.generate_splits(
            [int(config.data[f"num_{split}"]) for split in SPLITS], resolution, length,
            config.data.seed, style=config.data.style,
            distractor_paddles=config.data.distractor_paddles)
        splits = {split: _arrays(images, labels)
                  for split, (images, labels, _) in zip(SPLITS, drawn, strict=True)}
        meta["generator"] = {"style": config.data.style,
                             "version": pathfinder_draw.VERSION[config.data.style],
                             "contour_length": length,
                             "paddle_length": style.paddle_length,
                             "margins": list(style.margins), "continuity": style.continuity,
                             "distractor_paddles": style.distractor_paddles}
        return splits, meta
    folder = release_folder(path, resolution, difficulty)
    images, labels, skipped = read_release(folder, resolution)
    meta.update(release=str(folder), skipped_empty=skipped)
    return split_release(images, labels, config.data.seed), meta


def _arrays(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Store arrays: each image as the row-major sequence of its pixels."""
    n, length = len(images), images.shape[1] * images.shape[2]
    return {"inputs": images.reshape(n, length),
            "lengths": np.full(n, length, np.int32),
            "labels": labels.astype(np.int32)}


def split_release(images: np.ndarray, labels: np.ndarray, seed: int
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Shuffle with `seed`, then cut 80/10/10 into train/val/test store arrays."""
    order = np.random.default_rng(seed).permutation(len(images))
    parts = np.split(order, [int(len(images) * cut) for cut in SPLIT_CUTS])
    return {name: _arrays(images[rows], labels[rows])
            for name, rows in zip(SPLITS, parts, strict=True)}


def release_folder(path: str | None, resolution: int, difficulty: str) -> Path:
    """The difficulty folder of the release under `path` (which holds or is pathfinderN)."""
    if not path:
        raise LRAError("data.path is empty; pass --path to the extracted LRA release "
                       f"(the folder holding pathfinder{resolution}/)")
    base = Path(path).expanduser()
    for root in (base / f"pathfinder{resolution}", base):
        folder = root / FOLDERS[difficulty]
        if (folder / "metadata").is_dir():
            return folder
    raise LRAError(f"{base}: no pathfinder{resolution}/{FOLDERS[difficulty]}/metadata/ here; "
                   f"pass the folder of the LRA release that holds pathfinder{resolution}/")


def _file_order(file: Path) -> tuple:
    """Metadata files in numeric order (0.npy, 1.npy, ..., 10.npy), others after."""
    return (0, int(file.stem), "") if file.stem.isdigit() else (1, 0, file.stem)


def _metadata_lines(file: Path) -> list[str]:
    """The lines of a metadata file: text, or a numpy string array (the generator's own)."""
    data = file.read_bytes()
    if data.startswith(b"\x93NUMPY"):
        rows = np.load(io.BytesIO(data), allow_pickle=False)
        return [" ".join(map(str, row)) for row in np.atleast_2d(rows)]
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LRAError(f"{file}: metadata is neither text nor a numpy array ({e})") from None


def read_metadata(folder: Path) -> list[tuple[Path, int, str]]:
    """(image path, label, 'file:line') for every line of folder/metadata/*.npy."""
    files = sorted((folder / "metadata").glob("*.npy"), key=_file_order)
    if not files:
        raise LRAError(f"{folder}/metadata: no *.npy metadata files; is this the LRA release?")
    entries = []
    for file in files:
        for number, line in enumerate(_metadata_lines(file), 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise LRAError(f"{file}:{number}: malformed metadata line {line[:80]!r}; "
                               "expected '<imgs folder> <png name> <index> <label 0|1> ...'")
            entries.append((folder / fields[0] / fields[1], int(fields[3]), f"{file}:{number}"))
    return entries


def decode_png(path: Path, resolution: int, where: str) -> np.ndarray | None:
    """The grayscale pixels of a PNG, or None for an empty file (skipped, as in the LRA)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LRAError(f"{path}: cannot read the image listed at {where} ({e.strerror})") from None
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            pixels = np.asarray(image.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise LRAError(f"{path}: cannot decode PNG ({e}); re-extract the release") from None
    if pixels.shape != (resolution, resolution):
        h, w = pixels.shape
        raise LRAError(f"{path}: image is {w}x{h}, expected {resolution}x{resolution} "
                       "(data.resolution)")
    return pixels


def read_release(folder: Path, resolution: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Images (uint8 [N, r, r]) and labels of a release folder, and how many were empty."""
    entries = read_metadata(folder)
    images = np.zeros((len(entries), resolution, resolution), np.uint8)
    present = np.zeros(len(entries), bool)

    def load(i: int) -> None:
        pixels = decode_png(entries[i][0], resolution, entries[i][2])
        if pixels is not None:
            images[i], present[i] = pixels, True

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(load, range(len(entries))))
    skipped = int((~present).sum())
    if skipped:
        log.info("%s: skipped %d empty image files", folder, skipped)
    labels = np.array([label for _, label, _ in entries], np.int32)
    return images[present], labels[present], skipped


def write_release(root: str | Path, images: np.ndarray, labels: np.ndarray, difficulty: str,
                  *, margins: np.ndarray | None = None, per_folder: int = 1000) -> Path:
    """Write images in the release layout under root/pathfinderN/<difficulty folder>/
    (PNG files and text metadata, the fields of Linsley et al.'s generator); returns
    the difficulty folder."""
    resolution = images.shape[1]
    style = pathfinder_draw.STYLES[resolution]
    length = pathfinder_draw.CONTOUR_LENGTHS[difficulty]
    _, distractor = style.distractors(length)
    margins = np.full(len(images), style.margins[0]) if margins is None else margins
    folder = Path(root) / f"pathfinder{resolution}" / FOLDERS[difficulty]
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, len(images), per_folder)):
        (folder / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(start, min(start + per_folder, len(images))):
            name = f"sample_{i}.png"
            Image.fromarray(images[i]).save(folder / "imgs" / str(k) / name)
            lines.append(f"imgs/{k} {name} {i} {int(labels[i])} {style.continuity} {length} "
                         f"{distractor} {style.paddle_length} {style.thickness} {margins[i]} 1")
        (folder / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return folder
