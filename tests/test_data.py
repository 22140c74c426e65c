"""Datasets: IDX files (gzipped or raw), ImageFolder trees of any image size and mode, and their errors."""

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgvit.data import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, AugmentConfig, build_data, read_idx

SHAPES = ("top", "bottom", "vertical", "square")  # flip-invariant classes a tiny model learns in a few steps


def pattern_images(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) uint8 noisy images of the SHAPES classes and their (n,) labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPES)
    images = rng.integers(0, 70, (n, size, size)).astype(np.uint8)
    a, b, c = size // 7, size // 2, size - size // 7
    for img, label in zip(images, labels, strict=True):
        region = {
            0: np.s_[a : a + 3, a:c],
            1: np.s_[c - 3 : c, a:c],
            2: np.s_[a:c, b - 2 : b + 2],
            3: np.s_[b - 5 : b + 5, b - 5 : b + 5],
        }[int(label)]
        img[region] = 230
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 `array` (magic 0x0800 + ndim, big-endian dims), gzipped if the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_dir(root: Path, n_train: int = 256, n_val: int = 128, gz: bool = True, names: bool = True) -> Path:
    """A Fashion-MNIST-layout folder of pattern images (train / t10k), with classes.txt."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_val, 1)):
        images, labels = pattern_images(n, seed=seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    if names:
        (root / "classes.txt").write_text("\n".join(SHAPES) + "\n")
    return root


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_image_folder(root: Path, per_class: int = 12, corrupt: bool = True) -> Path:
    """train/ and val/ of SHAPES class folders: JPEG/PNG/WebP in modes L, RGB, RGBA, P and 16-bit, sizes 20-61 px.

    With `corrupt`, train/top/broken.jpg is not an image.
    """
    modes = ("RGB", "L", "RGBA", "P", "I;16")
    exts = (".jpg", ".png", ".png", ".png", ".png", ".webp")
    for split, seed in (("train", 0), ("val", 1)):
        images, labels = pattern_images(per_class * len(SHAPES), size=48, seed=seed)
        for i, (arr, label) in enumerate(zip(images, labels, strict=True)):
            side = 20 + (7 * i) % 42
            img = Image.fromarray(arr).resize((side, side + i % 5))
            mode, ext = modes[i % len(modes)], exts[i % len(exts)]
            img = img.convert("RGB") if mode != "L" else img
            if mode == "I;16":
                img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 256)
                ext = ".png"
            elif mode in ("RGBA", "P"):
                img = img.convert(mode)
                ext = ".png" if ext == ".jpg" else ext
            elif ext == ".jpg" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            _save(img, root / split / SHAPES[label] / f"{i}{ext}")
    if corrupt:
        (root / "train" / "top" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def test_idx_gz_and_raw_read_the_same(tmp_path: Path) -> None:
    images, labels = pattern_images(10)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b", images)
    write_idx(tmp_path / "labels", labels)
    assert torch.equal(read_idx(tmp_path / "a.gz"), torch.from_numpy(images))
    assert torch.equal(read_idx(tmp_path / "b"), read_idx(tmp_path / "a.gz"))
    assert read_idx(tmp_path / "labels").tolist() == labels.tolist()


def test_idx_bad_files_raise(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 zip, not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "whole", pattern_images(4)[0])
    (tmp_path / "cut").write_bytes((tmp_path / "whole").read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_classes_and_channels(tmp_path: Path, gz: bool) -> None:
    root = make_idx_dir(tmp_path / "shapes", 16, 8, gz=gz)
    data = build_data(str(root), 28, 1, AugmentConfig())
    assert data.kind == "idx" and data.classes == list(SHAPES)
    assert len(data.train) == 16 and len(data.val) == 8
    x, y = data.train[5]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 5 % 4
    rgb = build_data(str(root), 32, 3, None)
    x, _ = rgb.val[0]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grayscale repeated


def test_idx_class_names_from_folder_name(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "fashion-mnist", 20, 10, names=False)
    images, labels = pattern_images(20)
    write_idx(root / "train-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    assert build_data(str(root), 28, 1).classes == list(FASHION_MNIST_CLASSES)
    plain = make_idx_dir(tmp_path / "digits", 8, 4, names=False)
    assert build_data(str(plain), 28, 1).classes == ["0", "1", "2", "3"]


def test_image_folder_any_size_and_mode_skips_corrupt(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "tree")
    with pytest.warns(UserWarning, match="broken.jpg"):
        data = build_data(str(root), 32, 3, AugmentConfig("trivial", 9, 0.25))
    assert data.kind == "folder" and data.classes == sorted(SHAPES)
    assert [Path(p).name for p in data.skipped] == ["broken.jpg"]
    assert len(data.train) == len(data.val) == 48
    for ds in (data.train, data.val):
        for i in range(0, 48, 5):
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and torch.isfinite(x).all() and 0 <= y < 4
    with warnings.catch_warnings(record=True):
        gray = build_data(str(root), 28, 1)
    assert gray.val[3][0].shape == (1, 28, 28)


def test_bad_data_paths_raise_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        build_data(str(tmp_path / "missing"), 28, 1)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a Fashion-MNIST IDX folder .* nor an ImageFolder"):
        build_data(str(tmp_path / "plain"), 28, 1)
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no readable images"):
        build_data(str(empty), 28, 1)
    with pytest.raises(ValueError, match="1 .grayscale. or 3 .RGB."):
        build_data(str(make_image_folder(tmp_path / "t", 2, corrupt=False)), 28, 4)


def test_mismatched_classes_raise(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "tree", per_class=2, corrupt=False)
    (root / "val" / "square").rename(root / "val" / "circle")
    with pytest.raises(ValueError, match=r"only in train: \['square'\]; only in val: \['circle'\]"):
        build_data(str(root), 28, 3)


@pytest.mark.skipif(not DEFAULT_IDX_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    data = build_data(None, 28, 1, None)
    assert data.classes == list(FASHION_MNIST_CLASSES)
    assert (len(data.train), len(data.val)) == (60000, 10000)
    assert abs(data.mean[0] - 0.286) < 0.01 and abs(data.std[0] - 0.353) < 0.01
