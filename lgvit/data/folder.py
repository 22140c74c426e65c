"""ImageFolder trees (`train/` and `val/` of class folders) through torchvision, skipping unreadable images."""

import warnings
from functools import partial
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

MODES = {1: "L", 3: "RGB"}


def pil_mode(in_chans: int) -> str:
    if in_chans not in MODES:
        raise ValueError(f"images can be read as 1 (grayscale) or 3 (RGB) channels, not in_chans={in_chans}")
    return MODES[in_chans]


def load_image(path: str, mode: str) -> Image.Image:
    """Any JPEG/PNG/WebP/... in any mode (palette, RGBA, 16-bit, CMYK) as an image of `mode`."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "I;16" or img.mode == "I":  # 16/32-bit grayscale: scale to 8 bits first
            img = img.point(lambda v: v / 256).convert("L")
        return img.convert(mode)


def _readable(path: str, bad: list[str]) -> bool:
    """Whether `path` has an image extension and opens; unreadable files are warned about and recorded."""
    if not path.lower().endswith(IMG_EXTENSIONS):
        return False
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", stacklevel=2)
        bad.append(path)
        return False


def image_folder(root: Path, in_chans: int, transform, bad: list[str]) -> ImageFolder:
    """An ImageFolder of `root` whose images come as `in_chans` channels; skipped files are added to `bad`."""
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: an ImageFolder tree needs {root.parent}/train and /val")
    try:
        return ImageFolder(
            str(root),
            transform=transform,
            loader=partial(load_image, mode=pil_mode(in_chans)),
            is_valid_file=partial(_readable, bad=bad),
        )
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{root} holds no readable images in class folders ({e}); expected {root}/<class>/<image>.jpg"
        ) from e


def check_same_classes(train: list[str], val: list[str], root: Path) -> None:
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise ValueError(
            f"{root}/train and {root}/val have different class folders (only in train: {only_train or '-'}; "
            f"only in val: {only_val or '-'}): give both splits the same classes"
        )
