"""Image: CIFAR-10 as sequences of 1024 gray pixels (Krizhevsky 2009; LRA, Tay et al. 2020, §3.4).

Ten classes. Each 32x32 colour image is converted to gray and read row by row
into 1024 tokens. Gray is the ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B,
rounded half up to an integer, computed exactly as (299 R + 587 G + 114 B + 500) // 1000.
Choice: the LRA code's `tf.image.rgb_to_grayscale` weighs by 0.2989/0.5870/0.1140 in
float and truncates after scaling by 255.5/255: over all 2^24 colours it is one level
lower on 26% of them and equal on the rest (emulated in tests/test_data_image.py).
As in the LRA code, a token is the gray level itself (vocabulary 256, no offset): a
black pixel is token 0 and real, every length is 1024, and the model's padding mask
comes from the lengths, never from the token value.

Sources:
  archive  the official cifar-10-python.tar.gz (pickled batches data_batch_1..5 and
           test_batch), read from the tar stream without unpacking; the pickles are
           loaded by an unpickler that builds only arrays, lists and dicts, never
           other objects; --path, config.data.path or $LRA_CIFAR10_ARCHIVE
  tfds     tfds `cifar10`, already built; --path is then the tfds data_dir

Splits, as in the LRA code: train[:90%] (45,000), validation train[90%:] (5,000),
test (10,000), in the source's order of the train images: tfds's stored order (the
split LRA used) or data_batch_1..5 for the archive, so the two sources hold out
different validation images. Sizes smoke and cpu subsample each split (`subsets`).
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from lra import data
from lra.data import subsets, tfds_source
from lra.errors import LRAError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

log = logging.getLogger(__name__)

NUM_CLASSES = 10
SOURCES = ("archive", "tfds")
ARCHIVE_ENV = "LRA_CIFAR10_ARCHIVE"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
VOCAB_SIZE = 256
SIDE = 32
SEQ_LEN = SIDE * SIDE
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

Images = dict[str, tuple[np.ndarray, np.ndarray]]


def variant(config) -> str:
    d = config.data
    counts = (d.num_train, d.num_val, d.num_test)
    name = f"val{d.val_fraction:g}"
    return name + (f"-seed{d.seed}-n{'.'.join(map(str, counts))}" if any(counts) else "")


@data.task("image", column="Image", vocab_size=VOCAB_SIZE, order=3)
def prepare(config, source: str, path: str | None):
    if config.data.max_len != SEQ_LEN:
        raise LRAError(f"config.data.max_len={config.data.max_len!r}: image sequences are "
                       f"always {SEQ_LEN} pixels; set it to {SEQ_LEN}")
    fraction = config.data.val_fraction
    if not 0 < fraction < 1:
        raise LRAError(f"config.data.val_fraction={fraction!r}: expected 0 < fraction < 1")
    images = _read_tfds(path) if source == "tfds" else read_archive(_locate(config, path))
    train_pixels, train_labels = images["train"]
    cut = round((1 - fraction) * len(train_labels))
    pools = {
        "train": (train_pixels[:cut], train_labels[:cut]),
        "val": (train_pixels[cut:], train_labels[cut:]),
        "test": images["test"],
    }
    counts = subsets.requested_counts(config)
    splits = {}
    for split, (pixels, labels) in pools.items():
        rows = subsets.subsample(len(labels), counts[split], config.data.seed, split)
        inputs = to_gray(pixels[rows]).reshape(len(rows), SEQ_LEN).astype(np.int32)
        splits[split] = {"inputs": inputs, "lengths": np.full(len(rows), SEQ_LEN, np.int32),
                         "labels": labels[rows].astype(np.int32)}
    meta = {"vocab_size": VOCAB_SIZE, "num_classes": NUM_CLASSES, "max_len": SEQ_LEN,
            "gray": "(299 R + 587 G + 114 B + 500) // 1000"}
    return splits, meta


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8[..., 3] RGB -> uint8[...] BT.601 luma, rounded half up, exact in integers."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)


def _locate(config, path: str | None) -> Path:
    """cifar-10-python.tar.gz named by `path` or $LRA_CIFAR10_ARCHIVE, or inside that folder."""
    command = (f"lra data prepare image --size {config.size} --source archive "
               f"--path /path/to/cifar-10-python.tar.gz")
    where = data.given_path("image", path, ARCHIVE_ENV, "CIFAR-10 archive",
                            f"download {URL} and run: {command}")
    for candidate in (where, where / "cifar-10-python.tar.gz"):
        if candidate.is_file():
            return candidate
    raise LRAError(f"image: no CIFAR-10 archive at {where} (looked for the file and for "
                   f"{where / 'cifar-10-python.tar.gz'}); download {URL} and run: {command}")


def read_archive(archive_path: Path) -> Images:
    """{"train": (uint8[50000, 32, 32, 3], labels), "test": ...} from cifar-10-python.tar.gz."""
    wanted = {name for names in BATCHES.values() for name in names}
    batches = {}
    try:
        with tarfile.open(archive_path, "r|gz") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile():
                    batches[name] = _load_batch(archive.extractfile(member).read(),
                                                f"{archive_path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise LRAError(
            f"{archive_path}: not a readable gzip tar archive ({type(err).__name__}: {err}); "
            f"download it again from {URL}"
        ) from err
    missing = sorted(wanted - set(batches))
    if missing:
        raise LRAError(f"{archive_path}: no {', '.join(missing)} in cifar-10-batches-py/; "
                       f"is this cifar-10-python.tar.gz from {URL}?")
    images = {}
    for split, names in BATCHES.items():
        pixels = np.concatenate([batches[name][0] for name in names])
        labels = np.concatenate([batches[name][1] for name in names])
        images[split] = (pixels, labels)
    log.info("read %d train and %d test images from %s",
             len(images["train"][1]), len(images["test"][1]), archive_path)
    return images


class _ArrayUnpickler(pickle.Unpickler):
    """Loads only what a CIFAR-10 batch holds: dicts, lists, bytes, numbers and numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return self._ALLOWED[(module, name)]


def _load_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8[N, 32, 32, 3], int64[N]) from one pickled batch {b"data": [N, 3072], b"labels"}."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[b"labels"], np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * SEQ_LEN or len(labels) != len(data):
            raise ValueError(f"data {data.shape}, {len(labels)} labels")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
            raise ValueError("labels outside 0..9")
    except Exception as err:  # a corrupt pickle fails in many ways (KeyError, EOFError, ...)
        raise LRAError(f"{where}: not a CIFAR-10 python batch ({type(err).__name__}: {err}); "
                       f"download {URL} again") from err
    # rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def _read_tfds(data_dir: str | None) -> Images:
    images = {}
    for split in ("train", "test"):
        data = tfds_source.load_split("image", "cifar10", split, data_dir)
        images[split] = (np.asarray(data["image"], np.uint8), np.asarray(data["label"], np.int64))
    return images
