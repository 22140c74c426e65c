"""Train and evaluation transforms (torchvision transforms v2), the augmentation choices and their defaults
(`AUGMENTS`, `AugmentConfig`, also the `lgvit train` defaults), and the batch-level MixUp/CutMix."""

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

AUGMENTS = ("trivial", "randaug", "none")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; `build_data(..., augment=None)` gives evaluation transforms only.

    The defaults are the `lgvit train` defaults (TrainConfig takes them from here).
    """

    augment: str = "none"  # one of AUGMENTS
    magnitude: int = 9  # RandAugment magnitude
    erase_prob: float = 0.0  # random-erasing probability


def _augment(name: str, magnitude: int) -> list[v2.Transform]:
    if name == "trivial":
        return [v2.TrivialAugmentWide()]
    if name == "randaug":
        return [v2.RandAugment(num_ops=2, magnitude=magnitude)]
    if name == "none":
        return []
    raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTS)}")


def train_transform(
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: AugmentConfig,
    from_files: bool,
) -> v2.Compose:
    """Random crop (resized for image files, padded for in-memory images already at img_size), flip, augment, erase."""
    if from_files:
        crop = [v2.ToImage(), v2.RandomResizedCrop(img_size, scale=(0.25, 1.0), antialias=True)]
    else:
        crop = [v2.RandomCrop(img_size, padding=max(1, img_size // 14))]
    return v2.Compose(
        [
            *crop,
            v2.RandomHorizontalFlip(),
            *_augment(augment.augment, augment.magnitude),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.RandomErasing(p=augment.erase_prob, value=0) if augment.erase_prob > 0 else v2.Identity(),
        ]
    )


def eval_transform(
    img_size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_pct: float, resize: bool = True
) -> v2.Compose:
    """Resize the short side to img_size / crop_pct and centre-crop img_size (if `resize`), scale, normalise."""
    sizing = [v2.Resize(round(img_size / crop_pct), antialias=True), v2.CenterCrop(img_size)] if resize else []
    return v2.Compose(
        [
            v2.ToImage(),
            *sizing,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def mix_transform(num_classes: int, mixup: float, cutmix: float) -> v2.Transform | None:
    """MixUp and/or CutMix (one of them, chosen per batch) on (images, labels); None when both alphas are 0."""
    options = [v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []
    options += [v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else []
    if not options:
        return None
    return options[0] if len(options) == 1 else v2.RandomChoice(options)
