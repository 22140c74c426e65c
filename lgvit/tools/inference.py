"""Models and transforms from `lgvit train` checkpoints (or pretrained weights) for eval and predict.

A checkpoint's images are prepared as its data's val split was (`DataBundle.settings()`, kept in the
checkpoint); pretrained weights' as their `pretrained_cfg` says. Both go through `lgvit.data.eval_transform`.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2

from ..convert import CheckpointError
from ..data import (
    EVAL_DEFAULTS,
    UnreadableImage,
    data_kind,
    eval_config,
    eval_transform,
    imagenet_classes,
    load_image,
    pad_class_names,
    pil_mode,
)
from ..factory import create_model
from ..registry import get_spec
from ..training.checkpoint import load_checkpoint
from ..training.tasks import is_dense

WEIGHTS = ("auto", "model", "ema")


@dataclass
class Loaded:
    """A model ready for inference, with its class names and image preparation."""

    model: nn.Module
    classes: list[str]
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    label: str  # where the weights came from
    interpolation: str = "bicubic"
    crop_mode: str = "center"

    def transform(self) -> v2.Compose:
        """The evaluation transform of these weights (the one `lgvit eval` uses on image files)."""
        return eval_transform(
            self.img_size, self.mean, self.std, self.crop_pct, self.interpolation, crop_mode=self.crop_mode
        )


@dataclass
class Prediction:
    """One image's top-k (class name, probability), or why the image could not be read."""

    path: str
    top: list[tuple[str, float]]
    error: str | None = None


def _checkpoint_prep(ckpt: dict, path: str) -> dict:
    """crop_pct and interpolation of the checkpoint's data: as stored, or (older checkpoints) its data kind's."""
    data = ckpt["data"]
    kind = data.get("kind")
    if kind is None:
        source = (ckpt.get("train_config") or {}).get("data")
        kind = "idx" if source is None else data_kind(Path(source))
    if kind not in EVAL_DEFAULTS:
        warnings.warn(
            f"{path} does not say how its images were prepared and its data folder is gone: "
            "preparing images as image files are (crop 0.875)",
            stacklevel=3,
        )
        kind = "folder"
    return {key: data.get(key, default) for key, default in EVAL_DEFAULTS[kind].items()}


def from_checkpoint(path: str, weights: str = "auto") -> Loaded:
    """The model of a training checkpoint: its EMA or raw weights ('auto': whichever validated best).

    The model's `pretrained_cfg` is set to the checkpoint's preprocessing and class names (`label_names`),
    so `lgvit.data.transform_for(model)` prepares images as `lgvit eval` does for that checkpoint.
    """
    ckpt = load_checkpoint(path)
    if is_dense(ckpt):  # lgvit eval and predict take these before coming here
        task = ckpt["train_config"]["task"]
        raise CheckpointError(
            f"{path} is a {task} checkpoint (`lgvit train --task {task}`), not a classifier: score it with "
            "`lgvit eval` and run it with `lgvit predict`"
        )
    if weights not in WEIGHTS:
        raise ValueError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    kind = ckpt["best"].get("weights", "model") if weights == "auto" else weights
    if kind == "ema" and ckpt.get("ema") is None:
        raise ValueError(f"{path} has no EMA weights (trained with --ema-decay 0): use --weights model")
    model = create_model(ckpt["model_name"], **ckpt["model_overrides"])
    sd = ckpt["ema"]["module"] if kind == "ema" else ckpt["model"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit {ckpt['model_name']}: {str(e).splitlines()[0]}") from e
    data, prep = ckpt["data"], _checkpoint_prep(ckpt, path)
    if len(ckpt["classes"]) > model.num_classes:
        raise CheckpointError(
            f"{path} lists {len(ckpt['classes'])} classes but its model has {model.num_classes} outputs: "
            "the checkpoint is inconsistent; use another one"
        )
    size, chans = data["img_size"], data["in_chans"]
    classes = pad_class_names(ckpt["classes"], model.num_classes)  # a head trained wider than the classes
    mean, std = tuple(data["mean"]), tuple(data["std"])
    model.pretrained_cfg = {
        "input_size": (chans, size, size),
        "mean": mean,
        "std": std,
        **prep,
        "crop_mode": "center",
        "num_classes": len(classes),
        "label_names": classes,
    }
    label = f"{path} ({kind} weights, epoch {ckpt['epoch']})"
    return Loaded(model.eval(), classes, size, chans, mean, std, prep["crop_pct"], label, prep["interpolation"])


def _class_names(name: str, source: str, model: nn.Module, labels: list[str] | None) -> list[str]:
    """--labels, else the names the weights carry, else ImageNet-1k's for an in1k tag, else class indices."""
    if labels:
        if len(labels) != model.num_classes:
            raise ValueError(f"--labels lists {len(labels)} names but {name} has {model.num_classes} classes")
        return labels
    carried = model.pretrained_cfg.get("label_names")
    if carried and len(carried) == model.num_classes:
        return list(carried)
    if source in get_spec(name).tags and source.endswith("in1k") and model.num_classes == 1000:
        return imagenet_classes()
    return [str(i) for i in range(model.num_classes)]


def from_pretrained(name: str, source: str, labels: list[str] | None, ema: bool = False) -> Loaded:
    """A registered model with pretrained weights (tag, file or hub id; `ema`: the file's EMA weights) and its
    evaluation preprocessing."""
    model = create_model(name, pretrained=source, pretrained_ema=ema).eval()
    fix = "predict with --checkpoint on its lgvit train checkpoint, or lgvit convert that checkpoint, which keeps it"
    try:
        prep = eval_config(model.pretrained_cfg, name)
    except ValueError as e:
        raise ValueError(f"{source}: {e.args[0].split(':')[0]}: {fix}") from e
    if len(prep["mean"]) != model.in_chans:
        raise ValueError(
            f"{source} carries no preprocessing for {name}'s {model.in_chans}-channel input "
            f"(its pretrained_cfg has mean {prep['mean']}): {fix}"
        )
    classes = _class_names(name, source, model, labels)
    label = f"{name} from {source}"
    return Loaded(
        model,
        classes,
        prep["img_size"],
        model.in_chans,
        prep["mean"],
        prep["std"],
        prep["crop_pct"],
        label,
        prep["interpolation"],
        prep["crop_mode"],
    )


def _non_finite(loaded: Loaded, path: str) -> CheckpointError:
    """The error for NaN/inf outputs: the weights' fault when they hold NaN/inf."""
    if any(not torch.isfinite(p).all() for p in loaded.model.state_dict().values() if p.is_floating_point()):
        return CheckpointError(
            f"{loaded.label}: its weights hold NaN/inf values, so its outputs are NaN (training diverged): "
            "use another checkpoint (an earlier one, or the other --weights) or retrain with a lower --lr"
        )
    return CheckpointError(f"{loaded.label} gives NaN/inf outputs for {path} although its weights are finite")


@torch.no_grad()
def predict_images(loaded: Loaded, paths: list[str], topk: int, device: torch.device | None = None) -> list[Prediction]:
    """Top-k (class name, probability) for each image file, any size or mode; an unreadable file gets its error.

    NaN/inf outputs raise CheckpointError rather than print NaN probabilities.
    """
    if not 1 <= topk <= len(loaded.classes):
        raise ValueError(f"--topk must be between 1 and the model's {len(loaded.classes)} classes, not {topk}")
    device = device or torch.device("cpu")
    model, transform, mode = loaded.model.to(device), loaded.transform(), pil_mode(loaded.in_chans)
    out = []
    for path in paths:
        try:
            image = load_image(path, mode)
        except UnreadableImage as e:
            out.append(Prediction(path, [], str(e)))
            continue
        logits = model(transform(image).unsqueeze(0).to(device)).float()[0]  # (num_classes,)
        if not torch.isfinite(logits).all():
            raise _non_finite(loaded, path)
        p, i = logits.softmax(-1).topk(topk)
        out.append(
            Prediction(path, [(loaded.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist(), strict=True)])
        )
    return out
