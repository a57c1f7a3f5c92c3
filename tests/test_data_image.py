"""Image (CIFAR-10) data: the release archive reader, gray levels, splits and errors."""

import io
import os
import pickle
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from lra.configs import image as image_config

from lra import data
from lra.data import image, store
from lra.errors import LRAError

PER_BATCH = 4  # 5 train batches: 20 images, so train[:90%] is 18 and validation 2


def batch_dict(pixels: np.ndarray, labels: list[int]) -> dict:
    """The official batch format: rows of 1024 red, 1024 green, 1024 blue, each row-major."""
    rows = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), 3072)
    return {b"batch_label": b"training batch", b"labels": labels, b"data": rows,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}


def pickled(batch: dict, legacy_numpy: bool) -> bytes:
    raw = pickle.dumps(batch, protocol=2)
    if legacy_numpy:  # the official files name numpy.core.multiarray (pickled by numpy 1.x)
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    return raw


def make_images(seed: int, count: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return pixels, [int(x) for x in rng.integers(0, 10, count)]


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def official_members() -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, list[int]]]]:
    images = {f"data_batch_{i}": make_images(i, PER_BATCH) for i in range(1, 6)}
    images["test_batch"] = make_images(9, 5)
    images["test_batch"][0][0] = 0  # an all-black image: 1024 zero tokens, all real
    members = {name: pickled(batch_dict(*images[name]), legacy_numpy=i % 2 == 0)
               for i, name in enumerate(images)}
    members["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
    members["readme.html"] = b"<html></html>"
    return members, images


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    monkeypatch.delenv(image.ARCHIVE_ENV, raising=False)
    members, images = official_members()
    return write_archive(tmp_path / "cifar-10-python.tar.gz", members), images


def smoke_config(**data_values):
    c = image_config.get_config("size=smoke")
    c.data.update({"num_train": 0, "num_val": 0, "num_test": 0, **data_values})
    return c


def reference_gray(pixels: np.ndarray) -> np.ndarray:
    """0.299 R + 0.587 G + 0.114 B rounded half up, in exact rational arithmetic."""
    from fractions import Fraction
    weights = (Fraction(299, 1000), Fraction(587, 1000), Fraction(114, 1000))
    flat = pixels.reshape(-1, 3).tolist()
    out = [int(sum(w * c for w, c in zip(weights, p, strict=True)) + Fraction(1, 2))
           for p in flat]
    return np.array(out).reshape(pixels.shape[:-1])


def test_gray_levels_are_bt601_rounded_half_up():
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                       [0, 0, 250], [10, 20, 30]], np.uint8)
    gray = image.to_gray(pixels)
    assert gray.tolist() == [76, 150, 29, 255, 0, 29, 18]  # (0, 0, 250): 28.5 rounds up
    rng = np.random.default_rng(0)
    random = rng.integers(0, 256, (2000, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image.to_gray(random), reference_gray(random))


def test_gray_differs_from_the_lra_tensorflow_conversion_by_at_most_one_level():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (20_000, 3), dtype=np.uint8)
    # tf.image.rgb_to_grayscale on uint8: to [0, 1], weigh, back by truncating x * 255.5
    unit = pixels.astype(np.float32) / np.float32(255)
    luma = unit @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    tf_gray = (luma * np.float32(255.5)).astype(np.int32)
    difference = np.abs(image.to_gray(pixels).astype(np.int32) - tf_gray)
    assert difference.max() == 1 and difference.mean() < 0.5


def test_counts_splits_tokens_and_raster_order(release):
    archive, images = release
    splits, meta = image.prepare(smoke_config(), "archive", str(archive))
    assert meta["vocab_size"] == 256 and meta["num_classes"] == 10 and meta["max_len"] == 1024
    train_pixels = np.concatenate([images[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((images[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    expected = {
        "train": (train_pixels[:18], train_labels[:18]),
        "val": (train_pixels[18:], train_labels[18:]),
        "test": images["test_batch"],
    }
    for split, (pixels, labels) in expected.items():
        arrays = splits[split]
        assert arrays["labels"].tolist() == list(labels)
        assert np.all(arrays["lengths"] == 1024)
        np.testing.assert_array_equal(arrays["inputs"],
                                      image.to_gray(pixels).reshape(len(pixels), 1024))
    assert np.all(splits["test"]["inputs"][0] == 0)  # black pixels are token 0 ...
    assert splits["test"]["lengths"][0] == 1024  # ... and still all real


def test_channel_planes_and_row_major_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    members, _ = official_members()
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    pixels[0, :, :, 0] = np.arange(1024).reshape(32, 32) % 256  # red varies along the raster
    pixels[0, 0, 1, 2] = 255  # one blue pixel at row 0, column 1
    members["test_batch"] = pickled(batch_dict(pixels, [3]), legacy_numpy=True)
    archive = write_archive(tmp_path / "c.tar.gz", members)
    splits, _ = image.prepare(smoke_config(), "archive", str(archive))
    row = splits["test"]["inputs"][0]
    red_only = (299 * (np.arange(1024) % 256) + 500) // 1000
    assert row[0] == red_only[0] and row[2:].tolist() == red_only[2:].tolist()
    assert row[1] == (299 * 1 + 114 * 255 + 500) // 1000


def test_subsampling_and_store_round_trip(release):
    archive, _ = release
    c = smoke_config(num_train=5, num_val=1, num_test=3)
    c.data.path = str(archive)
    path = data.prepare(c)
    assert data.open_dataset(c) == path
    assert store.read_meta(path)["counts"] == {"train": 5, "val": 1, "test": 3}
    full, _ = image.prepare(smoke_config(), "archive", str(archive))
    small = store.read_split(path, "train")
    full_rows = {row.tobytes() for row in full["train"]["inputs"]}
    assert all(row.tobytes() in full_rows for row in np.asarray(small["inputs"], np.int32))
    again, _ = image.prepare(c, "archive", str(archive))
    np.testing.assert_array_equal(again["train"]["inputs"], small["inputs"])


def test_archive_inside_a_folder_and_from_environment(release, monkeypatch):
    archive, _ = release
    splits, _ = image.prepare(smoke_config(), "archive", str(archive.parent))
    assert len(splits["val"]["labels"]) == 2
    monkeypatch.setenv(image.ARCHIVE_ENV, str(archive))
    splits, _ = image.prepare(smoke_config(), "archive", None)
    assert len(splits["test"]["labels"]) == 5


def test_tfds_source_keeps_its_order(release, monkeypatch):
    _, images = release
    module = types.ModuleType("tensorflow_datasets")
    tfds_images = {"train": make_images(5, 10), "test": make_images(6, 3)}

    def load(name, split, batch_size, data_dir, download):
        assert (name, batch_size, download, data_dir) == ("cifar10", -1, False, "/tfds")
        pixels, labels = tfds_images[split]
        return {"image": pixels, "label": np.array(labels), "id": np.arange(len(labels))}

    module.load, module.as_numpy = load, lambda tree: tree
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    splits, _ = image.prepare(smoke_config(), "tfds", "/tfds")
    train_pixels, train_labels = tfds_images["train"]
    assert splits["val"]["labels"].tolist() == train_labels[9:]
    np.testing.assert_array_equal(splits["train"]["inputs"],
                                  image.to_gray(train_pixels[:9]).reshape(9, 1024))


def test_pickles_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    members, _ = official_members()
    members["data_batch_3"] = pickle.dumps({b"data": Exploit()}, protocol=2)
    archive = write_archive(tmp_path / "evil.tar.gz", members)
    with pytest.raises(LRAError, match=r"evil.tar.gz:cifar-10-batches-py/data_batch_3: not a "
                                       r"CIFAR-10 python batch.*refusing to load"):
        image.prepare(smoke_config(), "archive", str(archive))
    assert not marker.exists()


def test_bad_batches_and_archives_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "prepared"))
    members, _ = official_members()
    wrong_shape = dict(members, data_batch_2=pickle.dumps(
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    no_labels = dict(members, data_batch_2=pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8)}, protocol=2))
    cut = dict(members, data_batch_2=members["data_batch_2"][:100])
    for i, bad in enumerate((wrong_shape, no_labels, cut)):
        archive = write_archive(tmp_path / f"bad{i}.tar.gz", bad)
        with pytest.raises(LRAError, match=rf"bad{i}.tar.gz:cifar-10-batches-py/data_batch_2: "
                                           r"not a CIFAR-10 python batch"):
            image.prepare(smoke_config(), "archive", str(archive))
    missing = {k: v for k, v in members.items() if k != "data_batch_5"}
    archive = write_archive(tmp_path / "missing.tar.gz", missing)
    with pytest.raises(LRAError, match=r"missing.tar.gz: no data_batch_5"):
        image.prepare(smoke_config(), "archive", str(archive))
    not_gzip = tmp_path / "junk.tar.gz"
    not_gzip.write_bytes(b"\x1f\x8b but not really gzip")
    with pytest.raises(LRAError, match=rf"{not_gzip}: not a readable gzip tar archive"):
        image.prepare(smoke_config(), "archive", str(not_gzip))


def test_missing_archive_and_bad_config(tmp_path, release):
    archive, _ = release
    with pytest.raises(LRAError, match=r"image: no CIFAR-10 archive at .*nowhere.*"
                                       r"lra data prepare image --size smoke --source archive"):
        image.prepare(smoke_config(), "archive", str(tmp_path / "nowhere"))
    with pytest.raises(LRAError, match=r"LRA_CIFAR10_ARCHIVE.*lra data prepare image"):
        image.prepare(smoke_config(), "archive", None)
    with pytest.raises(LRAError, match=r"config.data.max_len=512"):
        image.prepare(smoke_config(max_len=512), "archive", str(archive))


def test_configs_per_size():
    configs = {s: image_config.get_config(f"size={s}") for s in ("smoke", "cpu", "nystrom", "lra")}
    assert all(c.data.max_len == 1024 and c.data.source == "archive" for c in configs.values())
    lra = configs["lra"]
    assert (lra.model.num_layers, lra.model.emb_dim, lra.model.mlp_dim, lra.model.num_heads) == (
        1, 128, 128, 8)
    assert (lra.model.dropout, lra.model.attention_dropout) == (0.3, 0.2)
    assert (lra.train.batch_size, lra.train.steps, lra.train.warmup_steps) == (256, 35_000, 175)
    assert lra.train.schedule == "cosine" and lra.train.weight_decay == 0.0
    assert configs["nystrom"].train.batch_size == 256
