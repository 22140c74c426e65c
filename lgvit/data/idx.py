"""Fashion-MNIST style IDX files (`train-images-idx3-ubyte[.gz]`, ...), read into memory as uint8 tensors,
resized once and served as a dataset of in-memory images (`TensorImages`).

torchvision's MNIST readers need its own folder layout and unzipped files; this reads the IDX
format (magic, dims, data, big-endian) directly from the layout Debian's dataset package ships.
"""

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..files import atomic_write

DEFAULT_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = {"train": "train", "val": "t10k"}
_REFETCH = (
    "download it again (Fashion-MNIST: sudo apt-get install --reinstall dataset-fashion-mnist) "
    "or pass --data with another folder"
)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (raw or gzipped) as a tensor of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path} is corrupt ({type(e).__name__}: {e}): {_REFETCH}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}): {_REFETCH}")
    ndim, dtype = data[3], np.dtype(_DTYPES[data[2]])
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    found = max(0, len(data) - offset)
    if found != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(
            f"{path} is truncated or corrupt: its header says {dims} values of {dtype.itemsize} bytes, "
            f"it holds {found} bytes of data: {_REFETCH}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="))).reshape(dims)  # (N, *dims[1:])


def write_idx(path: str | Path, t: torch.Tensor) -> None:
    """A uint8 tensor as one IDX file (magic 0x08 = unsigned byte, then its sizes), gzipped if `path` ends in
    .gz, written atomically: `read_idx` gives it back. Images are (N, H, W), labels (N,)."""
    if t.dtype != torch.uint8:
        raise ValueError(f"write_idx writes uint8 tensors (IDX type 0x08), got {t.dtype}: convert it first")
    path = Path(path)
    data = bytes([0, 0, 0x08, t.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in t.shape)
    data += t.contiguous().cpu().numpy().tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def find_idx(root: Path, prefix: str, kind: str) -> Path:
    """`{prefix}-{kind}-idx?-ubyte` or its .gz in `root`."""
    for name in sorted(root.glob(f"{prefix}-{kind}-idx*-ubyte*")):
        if name.suffix in ("", ".gz"):
            return name
    raise FileNotFoundError(
        f"no {prefix}-{kind}-idx*-ubyte[.gz] file in {root}: pass --data with a Fashion-MNIST IDX folder "
        "or an ImageFolder tree (train/ and val/ of class folders)"
    )


def is_idx_dir(root: Path) -> bool:
    return root.is_dir() and any(root.glob("train-images-idx*-ubyte*"))


def class_names(root: Path, num_classes: int) -> list[str]:
    """Names from `classes.txt` (one a line) if present, Fashion-MNIST's for a fashion folder, else digits."""
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if len(names) != num_classes:
            raise ValueError(f"{listed} lists {len(names)} classes but the labels have {num_classes}")
        return names
    if "fashion" in root.resolve().name.lower() and num_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_classes)]


def load_idx_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, H, W) uint8, labels (N,) int64) of the 'train' or 'val' (t10k) split."""
    images = read_idx(find_idx(root, SPLITS[split], "images"))
    labels = read_idx(find_idx(root, SPLITS[split], "labels")).long()
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: {split} images {tuple(images.shape)} and labels {tuple(labels.shape)} do not pair")
    return images.unsqueeze(1), labels  # (N, 1, H, W)


def resize_images(images: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """(N, C, h, w) uint8 images resized once to (N, C, size, size), so per-image transforms need not."""
    if images is None or images.shape[-1] == images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)  # (N, C, size, size)


class TensorImages(Dataset):
    """(N, C, H, W) uint8 images held in memory with labels; grayscale is repeated to `in_chans`.

    `transform` prepares one image (`ds[i]`); `batch_transform`, if given, the same for a whole uint8 batch
    (`lgvit.data.batched.InMemoryLoader`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        in_chans: int,
        transform: Callable,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.shape[1] not in (1, in_chans):
            raise ValueError(f"images have {images.shape[1]} channels; the model wants {in_chans}")
        self.images, self.targets, self.in_chans, self.transform = images, labels, in_chans, transform
        self.batch_transform = batch_transform

    def raw(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `indices` as a (len(indices), in_chans, H, W) batch, untransformed."""
        return self.images[indices].expand(-1, self.in_chans, -1, -1)  # (B, C, H, W)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].expand(self.in_chans, -1, -1)  # (C, H, W)
        return self.transform(x), int(self.targets[i])
