"""ImageFolder trees (`train/` and `val/` of class folders) through torchvision, skipping unreadable images.

Every image goes through `load_image`: EXIF orientation applied, any mode converted. The scan that builds a
dataset skips (and counts) files that are not images, are truncated, or exceed PIL's decompression-bomb limit;
it decodes fully only what a cheap check cannot clear (see `check_image`).
"""

import warnings
from functools import partial
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

MODES = {1: "L", 3: "RGB"}
_JPEG_EOI = b"\xff\xd9"  # the end-of-image marker every complete JPEG ends with (give or take padding)


class UnreadableImage(ValueError):
    """An image file that cannot be decoded; the message names the file, the problem and the fix."""


def pil_mode(in_chans: int) -> str:
    if in_chans not in MODES:
        raise ValueError(f"images can be read as 1 (grayscale) or 3 (RGB) channels, not in_chans={in_chans}")
    return MODES[in_chans]


def _problem(path: str, e: Exception) -> UnreadableImage:
    """The UnreadableImage for `path` failing with `e`, in words a user can act on."""
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        what = (
            f"too many pixels, a possible decompression bomb ({e}); if you trust the file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS"
        )
    elif not Path(path).is_file():
        what = "no such file"
    elif Path(path).stat().st_size == 0:
        what = "the file is empty"
    elif isinstance(e, UnidentifiedImageError):
        what = "not an image file PIL can read"
    else:
        what = f"{type(e).__name__}: {e}"
    return UnreadableImage(f"cannot read image {path}: {what}; replace or remove the file")


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def load_image(path: str, mode: str) -> Image.Image:
    """Any JPEG/PNG/WebP/... in any mode (palette, RGBA, 16-bit, CMYK) as an upright image of `mode`.

    The EXIF orientation is applied, so a rotated photo is seen as it is shown. A file that cannot be
    decoded (not an image, truncated, over PIL's decompression-bomb limit) raises UnreadableImage.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as e:
        raise _problem(path, e) from e
    if img.mode == "I;16" or img.mode == "I":  # 16/32-bit grayscale: scale to 8 bits first
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert(mode)


def _jpeg_complete(path: str) -> bool:
    """Whether the JPEG at `path` ends with its end-of-image marker: a truncated one does not."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 16))
        return _JPEG_EOI in f.read()


def check_image(path: str) -> None:
    """Raises UnreadableImage unless `path` decodes.

    Cheap where that is safe: `verify()` checks the structure (a PNG's every chunk CRC), and a JPEG that
    ends with its end-of-image marker is taken as whole. Anything else (a JPEG without the marker, WebP,
    GIF, BMP, TIFF, ...) is decoded fully, once, which also catches truncation that `verify()` misses.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format
                img.verify()
            if fmt == "PNG" or (fmt == "JPEG" and _jpeg_complete(path)):
                return
            with Image.open(path) as img:
                img.load()
    except _DECODE_ERRORS as e:
        raise _problem(path, e) from e


def _readable(path: str, bad: list[str]) -> bool:
    """Whether `path` has an image extension and decodes; unreadable files are warned about and recorded."""
    if not path.lower().endswith(IMG_EXTENSIONS):
        return False
    try:
        check_image(path)
        return True
    except UnreadableImage as e:
        warnings.warn(f"skipping: {e}", stacklevel=2)
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
