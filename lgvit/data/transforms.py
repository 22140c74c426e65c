"""Train and evaluation transforms (torchvision transforms v2), the augmentation choices and their defaults
(`AUGMENTS`, `AugmentConfig`, also the `lgvit train` defaults), a model's own evaluation transform
(`transform_for`), and the batch-level MixUp/CutMix."""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
    "lanczos": v2.InterpolationMode.LANCZOS,
}
CROP_MODES = ("center", "squash")
_CFG_KEYS = ("input_size", "mean", "std")  # a pretrained_cfg must hold these; crop_pct and interpolation default

AUGMENTS = ("trivial", "randaug", "none")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; `build_data(..., augment=None)` gives evaluation transforms only.

    The defaults are the `lgvit train` defaults (TrainConfig takes them from here).
    """

    augment: str = "none"  # one of AUGMENTS
    magnitude: int = 9  # RandAugment magnitude
    erase_prob: float = 0.0  # random-erasing probability


def crop_padding(img_size: int) -> int:
    """The zero padding of the random crop of in-memory images already at `img_size` (2 px at 28 px)."""
    return max(1, img_size // 14)


def augment_ops(name: str, magnitude: int) -> list[v2.Transform]:
    """The torchvision transforms of an `AUGMENTS` choice."""
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
        crop = [v2.RandomCrop(img_size, padding=crop_padding(img_size))]
    return v2.Compose(
        [
            *crop,
            v2.RandomHorizontalFlip(),
            *augment_ops(augment.augment, augment.magnitude),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.RandomErasing(p=augment.erase_prob, value=0) if augment.erase_prob > 0 else v2.Identity(),
        ]
    )


def eval_transform(
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    resize: bool = True,
    crop_mode: str = "center",
) -> v2.Compose:
    """Resize to floor(img_size / crop_pct) and centre-crop img_size (if `resize`), scale, normalise.

    crop_mode 'center' resizes the short side (keeping the aspect ratio), 'squash' both sides. A PIL image
    is resized by PIL, before it becomes a tensor, as timm's `create_transform` does.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], not {crop_pct}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if len(mean) != len(std) or min(std) <= 0:
        raise ValueError(f"mean {mean} and std {std} need one value per channel, std > 0")
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode {crop_mode!r} is not one of {', '.join(CROP_MODES)}")
    mode = INTERPOLATIONS[interpolation]
    side = math.floor(img_size / crop_pct)
    side = (side, side) if crop_mode == "squash" else side
    sizing = [v2.Resize(side, interpolation=mode, antialias=True), v2.CenterCrop(img_size)] if resize else []
    return v2.Compose([*sizing, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def eval_config(pretrained_cfg: dict[str, Any], name: str = "the model") -> dict[str, Any]:
    """`eval_transform`'s arguments from a pretrained_cfg (input_size, mean, std, crop_pct, interpolation, crop_mode).

    crop_pct, interpolation and crop_mode default to 0.875, bicubic and center (timm's defaults); the others
    must be there.
    """
    missing = [key for key in _CFG_KEYS if pretrained_cfg.get(key) is None]
    if missing:
        raise ValueError(
            f"{name} has no {', '.join(missing)} in its pretrained_cfg (no preprocessing is known for its weights): "
            "load weights that carry it, or build one with lgvit.data.eval_transform(img_size, mean, std)"
        )
    chans, size = pretrained_cfg["input_size"][0], pretrained_cfg["input_size"][-1]
    mean, std = tuple(pretrained_cfg["mean"]), tuple(pretrained_cfg["std"])
    if len(mean) != chans or len(std) != chans:
        raise ValueError(f"{name}'s pretrained_cfg has {chans} input channels but mean {mean} and std {std}")
    return {
        "img_size": int(size),
        "mean": mean,
        "std": std,
        "crop_pct": float(pretrained_cfg.get("crop_pct") or 0.875),
        "interpolation": pretrained_cfg.get("interpolation") or "bicubic",
        "crop_mode": pretrained_cfg.get("crop_mode") or "center",
    }


def transform_for(model: nn.Module) -> v2.Compose:
    """The evaluation transform of `model`'s weights, from `model.pretrained_cfg` (its size, mean/std, crop,
    crop mode and interpolation), like timm's `create_transform(**resolve_data_config(model=model))`.

    It takes a PIL image of the model's channel count (see `load_image`) or a uint8 tensor (C, H, W).
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        raise ValueError(f"{type(model).__name__} has no pretrained_cfg: use a model made by lgvit.create_model")
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    return eval_transform(**eval_config(cfg, name))


def mix_transform(num_classes: int, mixup: float, cutmix: float) -> v2.Transform | None:
    """MixUp and/or CutMix (one of them, chosen per batch) on (images, labels); None when both alphas are 0."""
    options = [v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []
    options += [v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else []
    if not options:
        return None
    return options[0] if len(options) == 1 else v2.RandomChoice(options)
