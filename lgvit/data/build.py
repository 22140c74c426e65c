"""Train/val datasets from a data folder: `build_data` picks the IDX or ImageFolder reader and the normalisation."""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ..constants import IMAGENET_GRAY, IMAGENET_MEAN, IMAGENET_STD
from .batched import BatchTransform
from .folder import check_same_classes, image_folder, pil_mode
from .idx import DEFAULT_IDX_DIR, TensorImages, class_names, is_idx_dir, load_idx_split, resize_images
from .transforms import AugmentConfig, eval_transform, train_transform

# How each kind of data is prepared for evaluation, by `build_data` and (from a checkpoint's data settings)
# by `lgvit predict`: IDX images are resized whole; image files are resized to img_size / 0.875 and
# centre-cropped, bilinearly like the training crops.
HOLDOUT_SEED = 0  # the permutation that picks `--val-split` images: one fixed split for every run

EVAL_DEFAULTS: dict[str, dict] = {
    "idx": {"crop_pct": 1.0, "interpolation": "bilinear"},
    "folder": {"crop_pct": 0.875, "interpolation": "bilinear"},
}


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
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    skipped: list[str] = field(default_factory=list)
    val_from: str = "val"  # what the val split is: a folder's val/, the test split, or held-out training images

    def settings(self) -> dict:
        """What a checkpoint keeps to prepare images as this data's val split is prepared (`lgvit predict`)."""
        keys = ("kind", "img_size", "in_chans", "mean", "std", "crop_pct", "interpolation")
        return {key: getattr(self, key) for key in keys}


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


def data_kind(root: Path, train: bool = True) -> str | None:
    """'idx' for a Fashion-MNIST IDX folder (for evaluation a t10k split suffices), 'folder' for an ImageFolder
    tree (train/ or val/), None for neither."""
    if is_idx_dir(root) or (not train and any(root.glob("t10k-images-idx*-ubyte*"))):
        return "idx"
    if (root / "val").is_dir() or (root / "train").is_dir():
        return "folder"
    return None


def holdout_indices(n: int, val_split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): `val_split` of `n` training images held out for validation, the same ones for every
    run and seed (a fixed permutation, seed HOLDOUT_SEED), both index lists sorted."""
    if not 0 < val_split < n:
        raise ValueError(f"--val-split {val_split} must be between 1 and {n - 1} (the split has {n} training images)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[val_split:].sort().values, order[:val_split].sort().values


def _idx_bundle(
    root: Path,
    img_size: int,
    in_chans: int,
    augment: AugmentConfig | None,
    train: bool,
    norm: tuple | None,
    val_split: int,
) -> DataBundle:
    """In-memory IDX splits, resized once; normalised by the train split's statistics unless `norm` is given.

    With `val_split`, validation is that many held-out training images and the test (t10k) split is unused.
    """
    read_train = train or (norm is None and is_idx_dir(root))  # evaluation still normalises by the train split
    train_x, train_y = load_idx_split(root, "train") if read_train else (None, None)
    if val_split and train:
        keep, held = holdout_indices(len(train_y), val_split)
        (train_x, train_y), (val_x, val_y) = (train_x[keep], train_y[keep]), (train_x[held], train_y[held])
    else:
        val_x, val_y = load_idx_split(root, "val")
    val_x, train_x = resize_images(val_x, img_size), resize_images(train_x, img_size)
    if norm is None:
        pixels = (train_x if train_x is not None else val_x).float() / 255
        norm = (pixels.mean().item(),) * in_chans, (pixels.std().item(),) * in_chans
    mean, std = norm
    train_x = train_x if train else None
    num_classes = int(max(val_y.max(), train_y.max() if train_y is not None else 0)) + 1
    val_tf, val_batch = eval_transform(img_size, mean, std, resize=False), BatchTransform(mean, std)
    train_ds = None
    if train_x is not None:
        tf = train_transform(img_size, mean, std, augment, False) if augment else val_tf
        train_ds = TensorImages(train_x, train_y, in_chans, tf, BatchTransform(mean, std, augment))
    val_ds = TensorImages(val_x, val_y, in_chans, val_tf, val_batch)
    classes = class_names(root, num_classes)
    val_from = f"{val_split} held-out training images" if val_split and train else "the test split (t10k)"
    return DataBundle(
        train_ds,
        val_ds,
        classes,
        "idx",
        str(root),
        mean,
        std,
        img_size,
        in_chans,
        **EVAL_DEFAULTS["idx"],
        val_from=val_from,
    )


def _folder_bundle(
    root: Path,
    img_size: int,
    in_chans: int,
    augment: AugmentConfig | None,
    train: bool,
    prep: dict,
    norm: tuple | None,
    val_split: int,
) -> DataBundle:
    """ImageFolder splits read from files per image; ImageNet normalisation unless `norm` is given.

    With `val_split`, validation is that many held-out images of train/ (evaluation-transformed) and val/ is unused.
    """
    mean, std = norm or ((IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else IMAGENET_GRAY)
    pil_mode(in_chans)
    bad: list[str] = []
    val_tf = eval_transform(img_size, mean, std, **prep)
    held_out = val_split and train
    val_ds = image_folder(root / ("train" if held_out else "val"), in_chans, val_tf, bad)
    train_ds = None
    if train:
        tf = train_transform(img_size, mean, std, augment, True) if augment else val_tf
        train_ds = image_folder(root / "train", in_chans, tf, bad if not held_out else [])
        check_same_classes(train_ds.classes, val_ds.classes, root)
    classes = list(val_ds.classes)
    val_from = "val/"
    if held_out:
        keep, held = holdout_indices(len(train_ds), val_split)
        train_ds, val_ds = Subset(train_ds, keep.tolist()), Subset(val_ds, held.tolist())
        val_from = f"{val_split} held-out images of train/"
    return DataBundle(
        train_ds,
        val_ds,
        classes,
        "folder",
        str(root),
        mean,
        std,
        img_size,
        in_chans,
        **prep,
        skipped=bad,
        val_from=val_from,
    )


def build_data(
    data: str | None,
    img_size: int,
    in_chans: int,
    augment: AugmentConfig | None = None,
    train: bool = True,
    crop_pct: float | None = None,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    interpolation: str | None = None,
    val_split: int = 0,
) -> DataBundle:
    """Train/val datasets from `data` (IDX folder or ImageFolder tree; default: Debian's Fashion-MNIST).

    Args:
        img_size: side of the square images the model sees.
        in_chans: 1 or 3; images of any mode are converted.
        augment: training augmentation, or None for evaluation transforms on both splits.
        train: False reads only the val split (evaluation).
        crop_pct, interpolation: how image files are resized and centre-cropped at evaluation, e.g. a
            checkpoint's (default: EVAL_DEFAULTS['folder']); IDX images are always resized whole.
        norm: (mean, std) to normalise with, e.g. a checkpoint's; default: the IDX train split's
            statistics, ImageNet's for image files.
        val_split: hold this many training images out (a fixed choice, `holdout_indices`) and validate on
            them instead of the test split / val/ (0: no hold-out). Only with `train`.
    """
    root = resolve_data_dir(data)
    kind = data_kind(root, train)
    if kind == "idx":
        return _idx_bundle(root, img_size, in_chans, augment, train, norm, val_split)
    if kind == "folder":
        prep = dict(EVAL_DEFAULTS["folder"])
        prep.update({k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation)) if v is not None})
        return _folder_bundle(root, img_size, in_chans, augment, train, prep, norm, val_split)
    raise FileNotFoundError(
        f"{root} is neither a Fashion-MNIST IDX folder (train-images-idx3-ubyte[.gz], t10k-...) "
        "nor an ImageFolder tree (train/ and val/ of class folders)"
    )
