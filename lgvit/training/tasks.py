"""The tasks `lgvit train` runs through its one loop: `--task classify` (the loop's own data, model and
evaluation) and the dense tasks `detect` and `segment` (docs/dense.md).

A `Task` names an evaluation's metrics and the one that picks best.pt. A `DenseTask` also says how its data,
model and batches are built, what a batch's loss is, how it is evaluated and what its report shows; the loop
(`loop.py`) calls these at its dispatch points and keeps everything else (optimizer, schedule, EMA, autocast,
clipping, resume, SIGTERM, DDP, bars, metrics files, checkpoints) for every task.
"""

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..constants import IMAGENET_GRAY, IMAGENET_MEAN, IMAGENET_STD
from ..data import DEFAULT_IDX_DIR, CocoFolder, FashionScenes, LabelMapFolder, SceneConfig
from ..data.idx import is_idx_dir
from ..dense import create_segmenter
from ..dense.detection import DETECTORS, DetectionCollate, create_detector, detection_loss
from ..dense.metrics import (
    DETECTION_METRICS,
    MASK_METRICS,
    SEGMENTATION_METRICS,
    evaluate_detection,
    evaluate_segmentation,
)
from ..dense.segmentation import SegmentationCollate, segmentation_loss
from .config import TASKS, TrainConfig
from .distributed import Dist, gather_objects
from .engine import StepOptions, autocast

_STATS_SCENES = 64  # the train scenes whose pixels give the scenes' mean and std


class Task:
    """What the loop reads of a task: an evaluation's scalars (`metrics`: the row's val_<k> and ema_<k>) and the
    one (higher is better) that picks best.pt."""

    dense = False
    loss = None  # classification's loss is the loop's own cross-entropy

    def __init__(self, name: str, metrics: tuple[str, ...], score: str) -> None:
        self.name, self.metrics, self.score = name, metrics, score

    def eval_batch(self, batch_size: int) -> int:
        """The val batch size for a requested `batch_size`: that size (a segmenter overrides it)."""
        return batch_size


CLASSIFY = Task("classify", ("loss", "top1", "top5"), "top1")


@dataclass
class DenseData:
    """A dense task's train and val datasets, with what the model, the checkpoint and the report need of them."""

    train: Dataset | None
    val: Dataset | None  # None: settings only (`load_dense` for predict)
    classes: list[str]  # classes[0] is the background
    kind: str  # 'scenes', 'coco' or 'labelmap'
    root: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int  # the detectors' resize: each image's longer side
    in_chans: int
    skipped: list[str] = field(default_factory=list)

    def settings(self) -> dict:
        """What a checkpoint keeps to prepare images as this data's are (`lgvit eval`)."""
        return {k: getattr(self, k) for k in ("kind", "img_size", "in_chans", "mean", "std")}


def make_task(cfg: TrainConfig) -> Task:
    """CLASSIFY, or the DenseTask of `cfg.task`; a ValueError names a flag the task cannot use."""
    if cfg.task not in TASKS:
        raise ValueError(f"--task {cfg.task!r} is not a task lgvit trains: choose one of {', '.join(TASKS)}")
    return CLASSIFY if cfg.task == "classify" else DenseTask(cfg)


def default_output(cfg: TrainConfig) -> str:
    """runs/MODEL for classification, runs/MODEL_DETECTOR or runs/MODEL_segment for the dense tasks."""
    suffix = {"classify": "", "detect": f"_{cfg.detector}", "segment": "_segment"}.get(cfg.task, "")
    return f"runs/{cfg.model}{suffix}"


class DenseTask(Task):
    """`--task detect` (torchvision's `--detector` on the backbone `--model`/`--backbone`) or `--task segment`
    (`lgvit.create_segmenter`), on the Fashion scenes (an IDX folder) or a COCO / label-map folder (`--data`)."""

    dense = True

    def __init__(self, cfg: TrainConfig) -> None:
        _check_dense_flags(cfg)
        if cfg.task == "detect":
            super().__init__(
                cfg.task, DETECTION_METRICS + (MASK_METRICS if cfg.detector == "maskrcnn" else ()), "map50"
            )
        else:
            super().__init__(cfg.task, SEGMENTATION_METRICS, "miou")
        self.cfg = cfg

    def eval_batch(self, batch_size: int) -> int:
        """The val batch size: `batch_size` for detectors, 1 for the segmenter. A padded batch changes a
        segmenter's predictions (GC ViT's global query pools over the padding: 58.75 mIoU one scene at a time,
        59.88 in padded batches of 16, docs/dense.md), so its scores would depend on the batch size; mmseg
        validates one image at a time too."""
        return batch_size if self.name == "detect" else 1

    @property
    def panoptic(self) -> bool:
        """Whether the segmenter has the instance head: its train data carries instance maps."""
        return self.name == "segment" and self.cfg.seg_head == "panoptic"

    @property
    def masks(self) -> bool:
        """Whether the detector segments too (Mask R-CNN): its data carries masks and it is scored on them."""
        return self.cfg.detector == "maskrcnn"

    def data(self, train: bool = True) -> DenseData:
        """The train (if `train`) and val sets of `cfg.data`: scenes from an IDX folder, else a dense folder."""
        root = Path(self.cfg.data) if self.cfg.data else DEFAULT_IDX_DIR
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root}: no such folder")
        if is_idx_dir(root) or (not train and any(root.glob("t10k-images-idx*-ubyte*"))):
            return self._scenes(root, train)
        return self._folders(root, train)

    def _scenes(self, root: Path, train: bool) -> DenseData:
        cfg, chans = self.cfg, self.cfg.in_chans or 1
        scenes = SceneConfig(min_side=max(28, cfg.scene_size // 2), max_side=cfg.scene_size)
        args = dict(root=root, seed=cfg.seed, config=scenes, in_chans=chans)
        val = FashionScenes(split="val", task=self.name, num_scenes=cfg.val_scenes, **args)
        first = FashionScenes(split="train", task=self.name, num_scenes=_STATS_SCENES, **args)
        pixels = torch.cat([first[i][0].flatten() for i in range(_STATS_SCENES)])
        mean, std = (round(pixels.mean().item(), 4),) * chans, (round(pixels.std().item(), 4),) * chans
        # a panoptic head trains on the instances too; it is validated on the label maps alone
        task = "panoptic" if self.panoptic else self.name
        train_ds = FashionScenes(split="train", task=task, num_scenes=cfg.train_scenes, **args) if train else None
        size = cfg.img_size or cfg.scene_size
        return DenseData(train_ds, val, list(val.classes), "scenes", str(root), mean, std, size, chans)

    def _folders(self, root: Path, train: bool) -> DenseData:
        """root/train/ and root/val/, each a COCO folder (detect) or a label-map folder (segment)."""
        cfg, chans = self.cfg, self.cfg.in_chans or 3
        layout = "images/ + instances.json" if self.name == "detect" else "images/ + labels/"
        for split in ("train", "val") if train else ("val",):
            if not (root / split).is_dir():
                raise FileNotFoundError(
                    f"--data {root} is neither Fashion-MNIST IDX files (for the scenes) nor a dense folder: "
                    f"it needs {split}/ holding {layout}"
                )
        if self.name == "detect":
            val, train_ds = CocoFolder(root / "val", self.masks, chans), None
            if train:
                train_ds = CocoFolder(root / "train", self.masks, chans)
                if train_ds.classes != val.classes:
                    raise ValueError(f"{root}: train/ and val/ list different categories; give both the same")
            classes = val.classes
        else:
            if cfg.num_classes is None:
                raise ValueError("label maps do not say how many classes they have: pass --num-classes N")
            if self.panoptic and train:
                raise ValueError(
                    f"--seg-head panoptic learns from instances, and the label maps of {root} have none: "
                    "use --seg-head fpn (or the Fashion scenes)"
                )
            val = LabelMapFolder(root / "val", chans)
            train_ds = LabelMapFolder(root / "train", chans) if train else None
            classes = [str(i) for i in range(cfg.num_classes)]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if chans == 3 else IMAGENET_GRAY
        kind = "coco" if self.name == "detect" else "labelmap"
        return DenseData(train_ds, val, classes, kind, str(root), mean, std, cfg.img_size or 512, chans)

    def model(self, overrides: dict, data: DenseData) -> nn.Module:
        """The detector or segmenter; `overrides` are the backbone's config fields (num_classes: the head's)."""
        cfg = self.cfg
        backbone = {k: v for k, v in overrides.items() if k != "num_classes"}
        num_classes = overrides["num_classes"]
        if self.name == "segment":
            black = [-m / s for m, s in zip(data.mean, data.std, strict=True)]  # the collate's padding, normalised
            return create_segmenter(
                cfg.model,
                num_classes,
                head=cfg.seg_head,
                pretrained=cfg.pretrained,
                fpn=cfg.fpn,
                head_channels=cfg.fpn,
                pad_value=black,
                **backbone,
            )
        size, mean, std = data.img_size, data.mean, data.std
        return create_detector(
            cfg.detector, cfg.model, num_classes, size, mean, std, cfg.fpn, cfg.pretrained, **backbone
        )

    def collate(self, data: DenseData) -> DetectionCollate | SegmentationCollate:
        """The batches of both splits: lists for the detectors (which normalise), padded tensors for the segmenter."""
        if self.name == "detect":
            return DetectionCollate(masks=self.masks)
        return SegmentationCollate(data.mean, data.std)

    def loss(self, model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's loss, its count of correct images: the summed pixel accuracy; 0 for detection)."""
        if self.name == "segment":
            return segmentation_loss(model, x, y)
        return detection_loss(model, x, y), torch.zeros(())

    def evaluate(self, model: nn.Module, loader, num_classes: int, opts: StepOptions, d: Dist) -> dict:
        """The task's metrics (engine.evaluate's signature) and its per-class lists (a segmenter's 'class_iou', a
        detector's 'class_ap50'); torchmetrics sums the processes' shards."""
        amp = partial(autocast, opts)
        if self.name == "segment":
            return evaluate_segmentation(model, loader, num_classes, opts.device, amp)
        gather = partial(gather_objects, d=d)
        return evaluate_detection(model, loader, opts.device, amp, masks=self.masks, gather=gather)

    def epoch_line(self, row: dict, epochs: int) -> str:
        """One line per epoch: train loss, the val metrics (and the EMA's score), speed."""
        shown = ", ".join(f"{k} {row[f'val_{k}']:.2f}" for k in self.metrics if k != "loss" and f"val_{k}" in row)
        ema = f" | EMA {self.score} {row[f'ema_{self.score}']:.2f}" if f"ema_{self.score}" in row else ""
        val = f"val {shown}" if shown else "not validated (--val-every)"
        return (
            f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} | {val}{ema} | "
            f"{row['img_s']:.1f} img/s, {row['epoch_seconds']:.0f} s"
        )

    def resume_mismatch(self, ckpt: dict) -> str | None:
        """Why `ckpt` cannot continue this run (another task or detector), or None."""
        old = {"group_sizes": False, **(ckpt.get("train_config") or {})}  # runs before --group-sizes: ungrouped
        for key in ("task", "detector", "fpn", "seg_head", "backbone_lr_mult", "group_sizes"):
            saved = old.get(key, getattr(TrainConfig, key, None))
            if saved != getattr(self.cfg, key):
                flag = key.replace("_", "-")
                if isinstance(saved, bool):  # a --x/--no-x flag
                    return f"the checkpoint was trained with --{'' if saved else 'no-'}{flag}: resume with it"
                return f"the checkpoint was trained with --{flag} {saved}, not {getattr(self.cfg, key)}"
        return None


def _check_dense_flags(cfg: TrainConfig) -> None:
    """The dense tasks' own errors, before any data is read."""
    if cfg.task == "detect" and cfg.detector not in DETECTORS:
        raise ValueError(f"--detector {cfg.detector!r} is not one lgvit trains: choose one of {', '.join(DETECTORS)}")
    if cfg.mixup or cfg.cutmix:
        raise ValueError(f"--mixup and --cutmix mix classification labels: drop them for --task {cfg.task}")
    if cfg.channels_last and cfg.task == "detect":
        raise ValueError("--channels-last: the detectors take lists of differently sized images; drop the flag")
    if cfg.fpn < 1 or cfg.scene_size < 28 or cfg.train_scenes < 1 or cfg.val_scenes < 1:
        raise ValueError(
            "--fpn, --train-scenes and --val-scenes must be at least 1 and --scene-size at least 28 (a garment's "
            f"side), not {cfg.fpn}, {cfg.train_scenes}, {cfg.val_scenes}, {cfg.scene_size}"
        )


def dense_config(ckpt: dict, data: str | None, val_scenes: int | None = None) -> TrainConfig:
    """The TrainConfig a dense checkpoint was trained with (fields it lacks at their defaults), on `data` and
    with `val_scenes` validation scenes if given."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in (ckpt.get("train_config") or {}).items() if k in names}
    scenes = {} if val_scenes is None else {"val_scenes": val_scenes}
    # pretrained=None: the checkpoint holds every weight, so its backbone's source file need not exist here
    return dataclasses.replace(
        TrainConfig(**saved), data=data or saved.get("data"), resume=None, pretrained=None, **scenes
    )


def is_dense(ckpt: dict) -> bool:
    """Whether a training checkpoint holds a detector or segmenter (`--task detect|segment`)."""
    return (ckpt.get("train_config") or {}).get("task", "classify") != "classify"


def load_dense(
    ckpt: dict, path: str, weights: str, data: str | None, with_val: bool = True, val_scenes: int | None = None
) -> tuple[DenseTask, nn.Module, DenseData]:
    """A dense checkpoint's task, model (in eval mode; `weights`: auto, model or ema) and data settings (the
    checkpoint's normalisation, size and classes), with the val split of `data` (or of the data it trained on)
    if `with_val`, else none (`val` None). `val_scenes`: that many Fashion val scenes instead of the training's
    (the first ones are the same scenes)."""
    if weights not in ("auto", "model", "ema"):
        raise ValueError(f"--weights must be auto, model or ema, not {weights!r}")
    kind = ckpt["best"].get("weights", "model") if weights == "auto" else weights
    if kind == "ema" and ckpt.get("ema") is None:
        raise ValueError(f"{path} has no EMA weights (trained with --ema-decay 0): use --weights model")
    task, saved, classes = DenseTask(dense_config(ckpt, data, val_scenes)), ckpt["data"], list(ckpt["classes"])
    val, root = None, str(task.cfg.data or DEFAULT_IDX_DIR)
    if with_val:
        found = task.data(train=False)
        if found.classes != classes:
            raise ValueError(
                f"{found.root} has classes {found.classes[:5]}... but {path} was trained on {classes[:5]}...: "
                "evaluate on data with the same classes"
            )
        if val_scenes is not None and found.kind != "scenes":
            raise ValueError(f"--val-scenes sets how many Fashion scenes to score; {found.root} is a folder: drop it")
        val, root = found.val, found.root
    mean, std = tuple(saved["mean"]), tuple(saved["std"])
    settings = DenseData(None, val, classes, saved["kind"], root, mean, std, saved["img_size"], saved["in_chans"])
    model = task.model(ckpt["model_overrides"], settings)
    model.load_state_dict(ckpt["ema"]["module"] if kind == "ema" else ckpt["model"])
    return task, model.eval(), settings
