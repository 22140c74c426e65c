"""The in-memory images' transforms on whole batches (`BatchTransform`) and the batches themselves
(`InMemoryLoader`): `lgvit train`'s fast path on IDX data, the per-image pipeline's policy at batch speed.

The per-image pipeline (`train_transform`: padded random crop, flip, TrivialAugment/RandAugment, scale,
normalise, random erasing) calls a dozen torchvision transforms per image; on Fashion-MNIST that costs more
than a small model's forward (docs/training.md, "Where an epoch goes"). Here every image still gets its own
crop offset, flip and erasing box, drawn from the same distributions as torchvision's, with torch ops over
the batch. TrivialAugment and RandAugment are torchvision's own, called on chunks of `AUGMENT_CHUNK` images
that share one draw: each image's op and magnitude are distributed as before, but images of a chunk are
augmented alike.
"""

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .idx import TensorImages
from .transforms import AugmentConfig, augment_ops, crop_padding

AUGMENT_CHUNK = 8  # images that share one TrivialAugment / RandAugment draw
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10  # v2.RandomErasing's defaults

Batch = tuple[torch.Tensor, torch.Tensor]


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch cropped to H x W from its copy zero-padded by `pad`, at its own
    offset uniform in [0, 2 * pad] per axis (v2.RandomCrop(H, padding=pad) per image)."""
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2 pad, W + 2 pad)
    top, left = torch.randint(0, 2 * pad + 1, (2, B))
    rows = (top[:, None] + torch.arange(H))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left[:, None] + torch.arange(W))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(B)[:, None, None, None], torch.arange(C)[:, None, None], rows, cols]  # (B, C, H, W)


def random_flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch mirrored left-right with probability `p`."""
    flip = torch.rand(len(x)) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erase(x: torch.Tensor, p: float, value: float = 0.0) -> torch.Tensor:
    """v2.RandomErasing(p, value=value) with each image of a (B, C, H, W) batch its own draw.

    As torchvision does: up to ERASE_TRIES boxes of area uniform in ERASE_SCALE of the image and aspect
    log-uniform in ERASE_RATIO are drawn; the first that fits is placed uniformly; none fitting erases nothing.
    """
    B, _, H, W = x.shape
    area = H * W * torch.empty(B, ERASE_TRIES).uniform_(*ERASE_SCALE)
    log_ratio = torch.log(torch.tensor(ERASE_RATIO))
    aspect = torch.exp(torch.empty(B, ERASE_TRIES).uniform_(log_ratio[0].item(), log_ratio[1].item()))
    h, w = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()  # each (B, tries)
    fits = (h < H) & (w < W)
    first = fits.int().argmax(1, keepdim=True)  # (B, 1): the first box that fits
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # each (B,)
    top = (torch.rand(B) * (H - h + 1)).long()
    left = (torch.rand(B) * (W - w + 1)).long()
    erase = (torch.rand(B) < p) & fits.any(1)
    rows, cols = torch.arange(H), torch.arange(W)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    inside = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (B, H, W)
    return x.masked_fill(inside[:, None], value)


class BatchTransform:
    """uint8 (B, C, H, W) -> normalised float32 (B, C, H, W); with `augment`, the training augmentation of
    `train_transform` for in-memory images (see the module docstring for the one difference)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], augment: AugmentConfig | None = None) -> None:
        self.mean, self.std, self.augment = list(mean), list(std), augment
        ops = augment_ops(augment.augment, augment.magnitude) if augment is not None else []
        self.policy = v2.Compose(ops) if ops else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            x = random_flip(random_crop(x, crop_padding(x.shape[-1])))
            if self.policy is not None:
                x = torch.cat([self.policy(chunk) for chunk in x.split(AUGMENT_CHUNK)])
        x = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), self.mean, self.std)
        if self.augment is not None and self.augment.erase_prob > 0:
            x = random_erase(x, self.augment.erase_prob)
        return x


class InMemoryLoader:
    """Batches of a `TensorImages` dataset in the order of `indices`, transformed by its `batch_transform`
    (then `mix`, e.g. MixUp/CutMix): a DataLoader's (x, y) batches without a per-image call."""

    def __init__(
        self,
        ds: TensorImages,
        indices: Iterable[int],
        batch_size: int,
        drop_last: bool = False,
        mix: Callable[[torch.Tensor, torch.Tensor], Batch] | None = None,
    ) -> None:
        if ds.batch_transform is None:
            raise ValueError("InMemoryLoader needs a TensorImages dataset with a batch_transform")
        self.ds, self.indices, self.batch_size, self.drop_last, self.mix = ds, indices, batch_size, drop_last, mix

    def __len__(self) -> int:
        n = len(self.indices)  # a Sampler or a sequence
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.as_tensor(list(self.indices), dtype=torch.long)
        for chunk in order.split(self.batch_size):
            if self.drop_last and len(chunk) < self.batch_size:
                return
            x, y = self.ds.batch_transform(self.ds.raw(chunk)), self.ds.targets[chunk]
            yield self.mix(x, y) if self.mix is not None else (x, y)
