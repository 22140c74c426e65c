"""The training recipe as one dataclass; every field is also a `lgvit train` flag."""

import argparse
import ast
import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import get_args, get_type_hints

from ..data.transforms import AUGMENTS, AugmentConfig
from ..dense.detection import DETECTORS
from ..dense.segmenter import HEADS
from .distributed import DEVICE_HELP

TASKS = ("classify", "detect", "segment")  # lgvit.training.tasks runs each through the loop
_AUGMENT = AugmentConfig()  # the augmentation defaults, written once in lgvit.data.transforms


def _opt(default, help: str, **flag) -> dataclasses.Field:  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    """Defaults are the `make demo` recipe: GC ViT on Fashion-MNIST, >= 90% in minutes on 2 CPU cores."""

    model: str = _opt("gcvit_fmnist", "registered model name (lgvit models)")
    model_kwargs: str | None = _opt(
        None, "model config overrides as KEY=VALUE pairs, e.g. 'embed_dim=48 depths=(2,2,2)' (saved in checkpoints)"
    )
    data: str | None = _opt(None, "IDX folder or ImageFolder tree (default /usr/share/datasets/fashion-mnist)")
    output: str | None = _opt(None, "output folder for checkpoints and the report (default runs/MODEL)")
    pretrained: str | None = _opt(None, "fine-tune from a tag, file or hub id; the head is replaced if needed")
    num_classes: int | None = _opt(None, "classifier size (default: the dataset's classes)")
    in_chans: int | None = _opt(None, "image channels, 1 or 3 (default: the model's)")
    img_size: int | None = _opt(None, "training and evaluation image side (default: the model's native size)")
    epochs: int = _opt(13, "epochs")
    batch_size: int = _opt(128, "images per optimizer step and process (before accumulation)")
    val_split: int = _opt(
        0,
        "hold out this many training images as the validation split that picks best.pt, and leave the test split"
        " to `lgvit eval` (0: validate on the test split / val/)",
    )
    val_every: int = _opt(1, "validate every N epochs (and after the last)")
    batch_augment: bool = _opt(
        True, "augment in-memory (IDX) images a batch at a time with torch ops (the per-image pipeline's policy)"
    )
    workers: int = _opt(
        0,
        "data-loading processes; 0 loads in the training process (fastest for in-memory IDX data, and resume"
        " is exact at any step); use 1+ for image folders",
    )
    lr: float = _opt(3e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-5, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = _opt(0.2, "linear warm-up length in epochs (may be fractional)")
    weight_decay: float = _opt(0.05, "AdamW weight decay (never on norms, biases, bias tables)")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy")
    mixup: float = _opt(0.0, "MixUp alpha (0 = off)")
    cutmix: float = _opt(0.0, "CutMix alpha (0 = off); with both on, one is picked per batch")
    augment: str = _opt(_AUGMENT.augment, "per-image augmentation", choices=AUGMENTS)
    magnitude: int = _opt(_AUGMENT.magnitude, "RandAugment magnitude")
    erase_prob: float = _opt(_AUGMENT.erase_prob, "random-erasing probability")
    drop_path: float | None = _opt(None, "stochastic-depth rate (default: the model's)")
    ema_decay: float = _opt(0.998, "EMA decay per optimizer step (0 = no EMA); the EMA is evaluated too")
    clip_grad: float = _opt(1.0, "gradient-norm clipping (0 = off)")
    accum_steps: int = _opt(1, "gradient accumulation: batches per optimizer step")
    amp: str = _opt(
        "auto", "autocast dtype (auto: bf16 on a GPU that has it, else none)", choices=("auto", "none", "bf16", "fp16")
    )
    channels_last: bool = _opt(False, "channels-last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    seed: int = _opt(0, "random seed; the same seed and flags repeat a run")
    threads: int | None = _opt(
        None, "CPU threads per process (default: the cores per process less one per loader worker)"
    )
    device: str = _opt("auto", DEVICE_HELP)
    resume: str | None = _opt(None, "continue from a checkpoint (no value: OUTPUT/last.pt)", nargs="?", const="auto")
    # dense prediction (lgvit.training.tasks, docs/dense.md); --model (alias --backbone) names the backbone
    task: str = _opt("classify", "what to train: an image classifier, a detector or a segmenter", choices=TASKS)
    detector: str = _opt("fasterrcnn", "with --task detect: torchvision's detector on the backbone", choices=DETECTORS)
    fpn: int = _opt(128, "with --task detect/segment: the FPN's width (the segmentation head's too)")
    seg_head: str = _opt(
        "fpn",
        "with --task segment: Semantic-FPN (fpn), or with Panoptic-DeepLab's instance centres and offsets (panoptic:"
        " each predicted object's pixels take one class; needs instances, as the Fashion scenes have)",
        choices=HEADS,
    )
    backbone_lr_mult: float = _opt(
        1.0,
        "with --task detect/segment: the backbone's stages learn at --lr times this (the FPN and heads at --lr;"
        " e.g. 0.1 to keep a --pretrained backbone close to its weights)",
    )
    group_sizes: bool = _opt(
        True,
        "with --task detect/segment: batch training images of similar height and width together, so that padded"
        " batches hold less padding (docs/dense.md)",
    )
    scene_size: int = _opt(192, "Fashion scenes' longest side; each side is uniform in [size/2, size]")
    train_scenes: int = _opt(10_000, "Fashion scenes to train on (built from the train garments)")
    val_scenes: int = _opt(1_000, "Fashion scenes to validate on (built from the test garments)")


def parse_model_kwargs(text: str | None) -> dict:
    """'embed_dim=48 depths=(2,2,2)' -> {'embed_dim': 48, 'depths': (2, 2, 2)}: Python literals only."""
    kwargs = {}
    for pair in (text or "").split():
        key, sep, value = pair.partition("=")
        try:
            if not (sep and key.isidentifier()):
                raise ValueError
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(
                f"--model-kwargs: cannot read {pair!r}; write KEY=VALUE with a Python literal value, "
                "pairs separated by spaces, e.g. 'embed_dim=48 depths=(2,2,2)'"
            ) from None
    return kwargs


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per TrainConfig field, typed from its annotation; booleans get --x/--no-x."""
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        help_text = f"{meta.pop('help')} (default: {f.default})"
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        if isinstance(kind, types.UnionType):  # `X | None`
            kind = next(a for a in get_args(kind) if a is not type(None))
        parser.add_argument(flag, type=kind, default=f.default, help=help_text, **meta)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def check_config(cfg: TrainConfig) -> None:
    """Raises a ValueError naming the flag for values no run can use."""
    positive = {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "accum_steps": cfg.accum_steps,
        "val_every": cfg.val_every,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.lr <= 0:
        raise ValueError(f"--lr must be positive, got {cfg.lr}")
    if not (0 < cfg.backbone_lr_mult < math.inf):
        raise ValueError(f"--backbone-lr-mult must be a positive number, got {cfg.backbone_lr_mult}")
    if cfg.seg_head != "fpn" and cfg.task != "segment":
        raise ValueError(f"--seg-head chooses a segmenter's head: drop it for --task {cfg.task}")
    if cfg.backbone_lr_mult != 1 and cfg.task == "classify":
        raise ValueError(
            "--backbone-lr-mult is for --task detect/segment (the stages under an FPN and a head): drop it, "
            "or lower --lr, to fine-tune a classifier"
        )
    if not 0 <= cfg.ema_decay < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    _check_kwargs_against_flags(parse_model_kwargs(cfg.model_kwargs), cfg)
    if cfg.workers < 0 or cfg.warmup_epochs < 0 or cfg.val_split < 0 or not 0 <= cfg.label_smoothing < 1:
        raise ValueError("--workers, --warmup-epochs and --val-split must be >= 0 and --label-smoothing in [0, 1)")


def _check_kwargs_against_flags(kwargs: dict, cfg: TrainConfig) -> None:
    """--model-kwargs may not say otherwise than a flag that sets the same model field."""
    flags = {"num_classes": cfg.num_classes, "in_chans": cfg.in_chans, "drop_path_rate": cfg.drop_path}
    for key, value in flags.items():
        if value is not None and key in kwargs and kwargs[key] != value:
            flag = "--drop-path" if key == "drop_path_rate" else "--" + key.replace("_", "-")
            raise ValueError(
                f"--model-kwargs {key}={kwargs[key]!r} conflicts with {flag} {value}: give the value once, "
                f"with {flag} (drop {key} from --model-kwargs)"
            )
