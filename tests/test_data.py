"""Datasets: IDX files (gzipped or raw), ImageFolder trees of any image size and mode, and their errors."""

import gzip
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgvit.constants import IMAGENET_MEAN, IMAGENET_STD
from lgvit.data import (
    DEFAULT_IDX_DIR,
    FASHION_MNIST_CLASSES,
    AugmentConfig,
    UnreadableImage,
    build_data,
    eval_transform,
    read_idx,
    transform_for,
)
from lgvit.data import write_idx as save_idx

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


def test_the_library_writes_idx_files_byte_for_byte(tmp_path: Path) -> None:
    """`lgvit.data.write_idx` writes what the hand-made writer above does (gzipped or not), atomically, and
    refuses what IDX type 0x08 cannot hold."""
    images, labels = pattern_images(6, size=9)
    for name in ("a.gz", "b"):
        save_idx(tmp_path / "lib" / name, torch.from_numpy(images))
        write_idx(tmp_path / name, images)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(tmp_path / "lib" / name, "rb") as f, opener(tmp_path / name, "rb") as g:
            assert f.read() == g.read()
    save_idx(tmp_path / "labels.gz", torch.from_numpy(labels.astype(np.uint8)))
    assert read_idx(tmp_path / "labels.gz").tolist() == labels.tolist()
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["a.gz", "b"]  # no temporary file left
    with pytest.raises(ValueError, match="uint8.*float32"):
        save_idx(tmp_path / "x", torch.zeros(2, 3))


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


def _photo(w: int = 40, h: int = 24, seed: int = 0) -> Image.Image:
    """A smooth, asymmetric RGB image (gradients and a blob), so a rotation or resize changes its pixels."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx / 5 + yy / 7)], -1)
    arr = arr + rng.normal(0, 8, arr.shape)
    arr[h // 4 : h // 2, w // 8 : w // 3] = (250, 20, 20)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def save_rotated_jpeg(path: Path, upright: Path, orientation: int = 6) -> None:
    """A JPEG at `path` whose stored pixels are rotated, with the EXIF orientation that shows them upright;
    `upright` gets those pixels, rotated back by hand, as a lossless PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: the viewer rotates 90 degrees clockwise
    _photo().transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        stored.load()
        stored.transpose(Image.Transpose.ROTATE_270).save(upright)


def test_load_image_applies_exif_orientation_in_predict_and_folders(tmp_path: Path) -> None:
    from lgvit.data import load_image

    save_rotated_jpeg(tmp_path / "val" / "a" / "photo.jpg", tmp_path / "upright.png")
    (tmp_path / "train").mkdir()
    shutil.copytree(tmp_path / "val" / "a", tmp_path / "train" / "a")
    seen, upright = load_image(str(tmp_path / "val" / "a" / "photo.jpg"), "RGB"), Image.open(tmp_path / "upright.png")
    assert seen.size == upright.size == (40, 24)
    assert np.array_equal(np.asarray(seen), np.asarray(upright.convert("RGB")))
    data = build_data(str(tmp_path), 32, 3, train=False)
    expected = eval_transform(32, data.mean, data.std, data.crop_pct, data.interpolation)(upright.convert("RGB"))
    assert torch.equal(data.val[0][0], expected)


def _timm_reference(cfg: dict, img: Image.Image) -> torch.Tensor:
    timm_data = pytest.importorskip("timm.data")
    config = timm_data.resolve_data_config(pretrained_cfg=cfg)
    return timm_data.create_transform(**config, is_training=False)(img)


@pytest.mark.parametrize(
    "cfg",
    [
        {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875},  # GC ViT's
        {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.9},  # Swin-like
        {"input_size": (3, 64, 64), "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 1.0},
        {"input_size": (3, 96, 96), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0, "crop_mode": "squash"},
        {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"},
    ],
)
def test_transform_for_matches_timm(cfg: dict) -> None:
    cfg = {"interpolation": "bicubic", "crop_mode": "center", "num_classes": 1000} | cfg  # MaxViT 384: squash
    model = torch.nn.Identity()
    model.pretrained_cfg = cfg
    img = _photo(301, 257)
    ours, theirs = transform_for(model)(img), _timm_reference(cfg, img)
    assert ours.shape == theirs.shape == (3, *cfg["input_size"][1:])
    assert (ours - theirs).abs().mean() < 1e-4


def test_transform_for_needs_the_preprocessing() -> None:
    model = torch.nn.Identity()
    model.pretrained_cfg = {"num_classes": 10}
    with pytest.raises(ValueError, match="no input_size, mean, std in its pretrained_cfg"):
        transform_for(model)
    model.pretrained_cfg = {"input_size": (1, 28, 28), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    with pytest.raises(ValueError, match="1 input channels but mean"):
        transform_for(model)
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        eval_transform(28, (0.5,), (0.5,), 0.875, "cubic")


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def test_truncated_jpeg_and_decompression_bombs_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_image_folder(tmp_path / "tree", per_class=2, corrupt=False)
    whole = _jpeg_bytes(_photo(64, 48))
    (root / "train" / "top" / "cut.jpg").write_bytes(whole[: len(whole) * 4 // 5])  # cut in the pixel data
    with Image.open(root / "train" / "top" / "cut.jpg") as img:
        img.verify()  # which does not notice
    (root / "train" / "top" / "padded.jpg").write_bytes(whole + b"\0" * 100)  # trailing bytes: still a good JPEG
    _photo(110, 100).save(root / "train" / "bottom" / "bomb.png")  # 11000 pixels
    _photo(80, 70).save(root / "train" / "bottom" / "big.png")  # 5600 pixels: over the limit, under twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # PIL refuses over 2x, warns over 1x; the tree's are < 4000
    with pytest.warns(UserWarning, match="skipping") as caught:
        data = build_data(str(root), 16, 3, AugmentConfig())
    assert sorted(Path(p).name for p in data.skipped) == ["big.png", "bomb.png", "cut.jpg"]
    messages = " ".join(str(w.message) for w in caught)
    assert "truncated" in messages and "decompression bomb" in messages and "MAX_IMAGE_PIXELS" in messages
    names = [Path(p).name for p, _ in data.train.samples]
    assert "padded.jpg" in names and len(data.train) == 9
    for i in range(len(data.train)):  # a whole epoch decodes
        assert data.train[i][0].shape == (3, 16, 16)


def test_image_broken_after_the_scan_names_the_file(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "tree", per_class=1, corrupt=False)
    data = build_data(str(root), 16, 3, AugmentConfig())
    path = Path(data.train.samples[0][0])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UnreadableImage, match=f"cannot read image {path}.*replace or remove the file"):
        data.train[0]


@pytest.mark.parametrize("damage", ["cut", "garbage", "crc"])
def test_corrupt_gz_idx_names_the_file(tmp_path: Path, damage: str) -> None:
    root = make_idx_dir(tmp_path / "shapes", 16, 8)
    path = root / "t10k-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    broken = {"cut": raw[: len(raw) // 2], "garbage": b"\x1f\x8b" + b"x" * 50, "crc": raw[:-8] + b"\0" * 8}[damage]
    path.write_bytes(broken)
    with pytest.raises(ValueError, match=f"{path} is (corrupt|truncated).*download it again"):
        build_data(str(root), 28, 1)


def test_transform_for_a_registered_model_matches_timm() -> None:
    timm_data = pytest.importorskip("timm.data")
    from lgvit import create_model

    model = create_model("gcvit_xxtiny")  # the in1k tag's settings: 224, crop 0.875, bicubic
    img = _photo(250, 300)
    theirs = timm_data.create_transform(**timm_data.resolve_data_config(model=model), is_training=False)(img)
    assert (transform_for(model)(img) - theirs).abs().mean() < 1e-4
