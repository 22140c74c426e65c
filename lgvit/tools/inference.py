"""Models and transforms from `lgvit train` checkpoints (or pretrained weights) for eval and predict."""

from dataclasses import dataclass

import torch
from torch import nn

from ..convert import CheckpointError
from ..data import eval_transform, load_image, pil_mode
from ..factory import create_model
from ..registry import get_spec
from ..training.checkpoint import load_checkpoint

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


def from_checkpoint(path: str, weights: str = "auto") -> Loaded:
    """The model of a training checkpoint: its EMA or raw weights ('auto': whichever validated best)."""
    ckpt = load_checkpoint(path)
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
    data = ckpt["data"]
    mean, std = tuple(data["mean"]), tuple(data["std"])
    label = f"{path} ({kind} weights, epoch {ckpt['epoch']})"
    return Loaded(model.eval(), list(ckpt["classes"]), data["img_size"], data["in_chans"], mean, std, 1.0, label)


def from_pretrained(name: str, source: str, labels: list[str] | None) -> Loaded:
    """A registered model with pretrained weights (tag, file or hub id) and its evaluation preprocessing."""
    spec = get_spec(name)
    model = create_model(name, pretrained=source).eval()
    cfg = model.pretrained_cfg
    classes = labels or [str(i) for i in range(model.num_classes)]
    if len(classes) != model.num_classes:
        raise ValueError(f"--labels lists {len(classes)} names but {name} has {model.num_classes} classes")
    size = cfg["input_size"][-1] if spec.tags else spec.native_size
    in_chans = model.in_chans
    mean, std = tuple(cfg["mean"])[:in_chans], tuple(cfg["std"])[:in_chans]
    return Loaded(model, classes, size, in_chans, mean, std, cfg["crop_pct"], f"{name} from {source}")


@torch.no_grad()
def predict_images(loaded: Loaded, paths: list[str], topk: int) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file, any size or mode."""
    transform = eval_transform(loaded.img_size, loaded.mean, loaded.std, loaded.crop_pct)
    mode = pil_mode(loaded.in_chans)
    out = []
    for path in paths:
        x = transform(load_image(path, mode)).unsqueeze(0)  # (1, C, H, W)
        probs = loaded.model(x).softmax(-1)[0]
        p, i = probs.topk(min(topk, len(probs)))
        out.append([(loaded.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist(), strict=True)])
    return out
