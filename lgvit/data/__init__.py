"""Datasets for training and evaluation: Fashion-MNIST IDX files or ImageFolder trees."""

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..constants import IMAGENET_GRAY, IMAGENET_MEAN, IMAGENET_STD
from .folder import check_same_classes, image_folder, load_image, pil_mode
from .idx import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, class_names, is_idx_dir, load_idx_split, read_idx
from .transforms import AUGMENTS, eval_transform, mix_transform, train_transform

__all__ = [
    "AUGMENTS",
    "DEFAULT_IDX_DIR",
    "FASHION_MNIST_CLASSES",
    "AugmentConfig",
    "DataBundle",
    "TensorImages",
    "build_data",
    "eval_transform",
    "load_image",
    "mix_transform",
    "pil_mode",
    "read_idx",
    "resolve_data_dir",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; `build_data(..., augment=None)` gives evaluation transforms only."""

    augment: str = "trivial"
    magnitude: int = 9
    erase_prob: float = 0.25


@dataclass
class DataBundle:
    """Train and val datasets with what a model and a report need to know about them."""

    train: Dataset | None
    val: Dataset
    classes: list[str]
    kind: str  # 'idx' or 'folder'
    root: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int
    in_chans: int
    skipped: list[str] = field(default_factory=list)


class TensorImages(Dataset):
    """(N, C, H, W) uint8 images held in memory with labels; grayscale is repeated to `in_chans`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, in_chans: int, transform) -> None:
        if images.shape[1] not in (1, in_chans):
            raise ValueError(f"images have {images.shape[1]} channels; the model wants {in_chans}")
        self.images, self.targets, self.in_chans, self.transform = images, labels, in_chans, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].expand(self.in_chans, -1, -1)  # (C, H, W)
        return self.transform(x), int(self.targets[i])


def resolve_data_dir(data: str | None) -> Path:
    """`data` or the Debian Fashion-MNIST folder; a missing path raises with what to do."""
    root = Path(data) if data else DEFAULT_IDX_DIR
    if root.is_dir():
        return root
    if data:
        raise FileNotFoundError(f"--data {data}: no such folder")
    raise FileNotFoundError(
        f"no dataset at {DEFAULT_IDX_DIR}: install it (sudo apt-get install dataset-fashion-mnist) "
        "or pass --data DIR (Fashion-MNIST IDX files, or an ImageFolder tree with train/ and val/)"
    )


def _resize(images: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """(N, C, h, w) uint8 images resized once to (N, C, size, size), so per-image transforms need not."""
    if images is None or images.shape[-1] == images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)  # (N, C, size, size)


def _idx_bundle(
    root: Path, img_size: int, in_chans: int, augment: AugmentConfig | None, train: bool, norm: tuple | None
) -> DataBundle:
    val_x, val_y = load_idx_split(root, "val")
    read_train = train or (norm is None and is_idx_dir(root))  # evaluation still normalises by the train split
    train_x, train_y = load_idx_split(root, "train") if read_train else (None, None)
    val_x, train_x = _resize(val_x, img_size), _resize(train_x, img_size)
    if norm is None:
        pixels = (train_x if train_x is not None else val_x).float() / 255
        norm = (pixels.mean().item(),) * in_chans, (pixels.std().item(),) * in_chans
    mean, std = norm
    train_x = train_x if train else None
    num_classes = int(max(val_y.max(), train_y.max() if train_y is not None else 0)) + 1
    train_ds = None
    if train_x is not None:
        tf = (
            train_transform(img_size, mean, std, augment.augment, augment.magnitude, augment.erase_prob, False)
            if augment
            else eval_transform(img_size, mean, std, 1.0, resize=False)
        )
        train_ds = TensorImages(train_x, train_y, in_chans, tf)
    val_ds = TensorImages(val_x, val_y, in_chans, eval_transform(img_size, mean, std, 1.0, resize=False))
    classes = class_names(root, num_classes)
    return DataBundle(train_ds, val_ds, classes, "idx", str(root), mean, std, img_size, in_chans)


def _folder_bundle(
    root: Path,
    img_size: int,
    in_chans: int,
    augment: AugmentConfig | None,
    train: bool,
    crop_pct: float,
    norm: tuple | None,
) -> DataBundle:
    mean, std = norm or ((IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else IMAGENET_GRAY)
    pil_mode(in_chans)
    bad: list[str] = []
    val_ds = image_folder(root / "val", in_chans, eval_transform(img_size, mean, std, crop_pct), bad)
    train_ds = None
    if train:
        tf = (
            train_transform(img_size, mean, std, augment.augment, augment.magnitude, augment.erase_prob, True)
            if augment
            else eval_transform(img_size, mean, std, crop_pct)
        )
        train_ds = image_folder(root / "train", in_chans, tf, bad)
        check_same_classes(train_ds.classes, val_ds.classes, root)
    return DataBundle(train_ds, val_ds, list(val_ds.classes), "folder", str(root), mean, std, img_size, in_chans, bad)


def build_data(
    data: str | None,
    img_size: int,
    in_chans: int,
    augment: AugmentConfig | None = None,
    train: bool = True,
    crop_pct: float = 0.875,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> DataBundle:
    """Train/val datasets from `data` (IDX folder or ImageFolder tree; default: Debian's Fashion-MNIST).

    Args:
        img_size: side of the square images the model sees.
        in_chans: 1 or 3; images of any mode are converted.
        augment: training augmentation, or None for evaluation transforms on both splits.
        train: False reads only the val split (evaluation).
        crop_pct: centre-crop fraction for image files at evaluation.
        norm: (mean, std) to normalise with, e.g. a checkpoint's; default: the IDX train split's
            statistics, ImageNet's for image files.
    """
    root = resolve_data_dir(data)
    if is_idx_dir(root) or (not train and any(root.glob("t10k-images-idx*-ubyte*"))):
        return _idx_bundle(root, img_size, in_chans, augment, train, norm)
    if (root / "val").is_dir() or (root / "train").is_dir():
        return _folder_bundle(root, img_size, in_chans, augment, train, crop_pct, norm)
    raise FileNotFoundError(
        f"{root} is neither a Fashion-MNIST IDX folder (train-images-idx3-ubyte[.gz], t10k-...) "
        "nor an ImageFolder tree (train/ and val/ of class folders)"
    )
