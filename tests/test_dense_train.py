"""`lgvit train --task detect|segment`, and `lgvit eval` and `lgvit predict` of its checkpoints: a short run
learns (against the untrained model on the same val scenes), resume equality for a detector, the report, the
errors."""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from test_train import StopAfter, _free_port
from torch.utils.data import Subset

from lgvit.cli import main
from lgvit.data import (
    SCENE_CLASSES,
    CocoFolder,
    FashionScenes,
    LabelMapFolder,
    SceneConfig,
    save_coco_folder,
    save_label_map_folder,
)
from lgvit.dense import create_segmenter
from lgvit.dense.backbone import body_parameters
from lgvit.dense.metrics import MASK_METRICS, evaluate_detection, evaluate_segmentation
from lgvit.dense.segmentation import IGNORE_INDEX
from lgvit.training.checkpoint import load_checkpoint, seed_all
from lgvit.training.config import TrainConfig, check_config, parse_model_kwargs
from lgvit.training.distributed import Dist
from lgvit.training.engine import StepOptions
from lgvit.training.loop import train, val_loader
from lgvit.training.optim import build_optimizer
from lgvit.training.tasks import load_dense, make_task

TINY = "embed_dim=16 depths=(1,1,1) num_heads=(1,2,4)"  # a 3-stage GC ViT of 0.2 M parameters
FAST = dict(
    model_kwargs=TINY,
    fpn=32,
    scene_size=64,
    val_scenes=16,
    batch_size=8,
    threads=1,
    lr=3e-3,
    warmup_epochs=0.2,
    drop_path=0.0,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _untrained(cfg: TrainConfig) -> dict:
    """The metrics of the model the run starts from (same seed, same val scenes), before any step."""
    task = make_task(cfg)
    data = task.data()
    seed_all(cfg.seed)
    overrides = {**parse_model_kwargs(cfg.model_kwargs), "num_classes": 11, "in_chans": 1, "drop_path_rate": 0.0}
    model = task.model(overrides, data)
    loader = val_loader(data.val, task.eval_batch(16), 0, Dist(), task.collate(data))
    return task.evaluate(model, loader, 11, StepOptions(torch.device("cpu")), Dist())


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = TrainConfig(
        task="detect",
        detector="retinanet",
        output=str(tmp_path_factory.mktemp("det")),
        train_scenes=64,
        epochs=2,
        ema_decay=0.9,
        **FAST,
    )
    return cfg, train(cfg, command="lgvit train --task detect (test)")


def test_a_short_detection_run_beats_the_untrained_detector_and_reports(detection_run) -> None:
    cfg, result = detection_run
    before = _untrained(cfg)
    history, out = result.history, result.output
    assert result.completed and [r["epoch"] for r in history] == [1, 2]
    # RetinaNet's epoch-mean loss over 8 steps at lr 3e-3 is not monotone (measured 4.7, 7.7, 1.2, 1.1 in 4
    # epochs, and 4.9, 13.6, 6.4, 1.3 in another batch order): the mAP gains below are what shows learning
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert result.best["map50"] == max(max(r["val_map50"], r["ema_map50"]) for r in history)
    assert result.best["map50"] > before["map50"] + 2  # measured: 0.0 untrained, 16-18 after 1-2 epochs
    assert result.best["map"] > before["map"]
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "![predictions](predictions.png)" in summary and f"**{result.best['map50']:.2f}**" in summary
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_map50"] for r in rows] == [r["val_map50"] for r in history]


def test_eval_of_the_best_detection_checkpoint_gives_its_metrics(detection_run, tmp_path: Path, capsys) -> None:
    _, result = detection_run
    ckpt = str(result.output / "best.pt")
    assert main(["eval", "--checkpoint", ckpt, "--output", str(tmp_path), "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["task"] == "detect" and report["images"] == 16
    for k in ("map", "map50", "map75", "mar100"):
        assert report[k] == pytest.approx(result.best[k], abs=1e-6), k
    assert f"map50 {report['map50']:.2f}" in printed and (tmp_path / "eval_predictions.png").is_file()
    # --val-scenes: more scenes than training validated on (the first 16 the same), scored the same way
    more = tmp_path / "more"
    assert main(["eval", "--checkpoint", ckpt, "--val-scenes", "24", "--output", str(more), "--batch-size", "16"]) == 0
    wider = json.loads((more / "eval.json").read_text())
    assert wider["images"] == 24 and wider["map50"] != report["map50"]
    assert main(["eval", "--checkpoint", ckpt, "--val-scenes", "0"]) == 2
    assert "--val-scenes must be at least 1, not 0" in capsys.readouterr().err
    assert main(["export", "--checkpoint", ckpt, "--output", str(tmp_path / "det.onnx")]) == 2  # classifiers only
    assert "is a detect checkpoint (`lgvit train --task detect`), not a classifier" in capsys.readouterr().err
    scene = tmp_path / "scene.png"
    image, target = FashionScenes(split="val", config=SceneConfig(min_side=32, max_side=64))[0]
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(scene)
    assert (
        main(["predict", str(scene), str(tmp_path / "none.png"), "--checkpoint", ckpt, "--output", str(tmp_path)]) == 2
    )
    captured = capsys.readouterr()
    assert f"{scene}: " in captured.out and "none.png" in captured.err and (tmp_path / "scene_pred.png").is_file()


def test_a_short_segmentation_run_beats_the_untrained_segmenter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(
        task="segment", output=str(tmp_path), train_scenes=64, epochs=2, ema_decay=0.0, val_every=2, **FAST
    )
    before = _untrained(cfg)
    result = train(cfg)
    last = result.history[-1]  # measured: mIoU 4.1 and pixel accuracy 28% untrained, 9.8 and 55% after 2 epochs
    assert "val_miou" not in result.history[0] and (tmp_path / "curves.png").is_file()  # --val-every 2
    assert last["val_miou"] > before["miou"] + 2 and last["val_pixel_acc"] > before["pixel_acc"]
    assert last["val_loss"] < before["loss"]
    assert (tmp_path / "predictions.png").is_file() and result.best["miou"] == max(
        r["val_miou"] for r in result.history if "val_miou" in r
    )
    scene = tmp_path / "scene.png"
    Image.fromarray((FashionScenes(split="val")[0][0][0] * 255).round().byte().numpy()).save(scene)
    assert main(["predict", str(scene), "--checkpoint", str(tmp_path / "best.pt")]) == 0
    assert "background" in capsys.readouterr().out and (tmp_path / "predict" / "scene_pred.png").is_file()


def test_a_short_panoptic_run_trains_saves_and_reloads(tmp_path: Path) -> None:
    """Two epochs of `lgvit train --task segment --seg-head panoptic` on tiny scenes lower the training loss; the
    best checkpoint reloads as the same panoptic segmenter, scores what the run measured, and refuses to resume
    as another head; the flag is refused for another task and for label maps, which have no instances."""
    cfg = TrainConfig(
        task="segment",
        seg_head="panoptic",
        output=str(tmp_path),
        train_scenes=32,
        epochs=2,
        ema_decay=0.0,
        **{**FAST, "val_scenes": 8},
    )
    result = train(cfg)
    first, last = result.history
    assert last["train_loss"] < first["train_loss"] and "val_miou" in last
    task, model, data = load_dense(load_checkpoint(tmp_path / "best.pt"), str(tmp_path / "best.pt"), "auto", None)
    assert model.instances is not None and task.panoptic
    loader = val_loader(data.val, task.eval_batch(16), 0, Dist(), task.collate(data))
    scored = task.evaluate(model, loader, 11, StepOptions(torch.device("cpu")), Dist())
    assert scored["miou"] == pytest.approx(result.best["miou"], abs=1e-6)
    with pytest.raises(ValueError, match="--seg-head panoptic, not fpn"):
        train(replace(cfg, seg_head="fpn", resume="auto"))
    with pytest.raises(ValueError, match="--seg-head chooses a segmenter's head: drop it for --task detect"):
        check_config(replace(cfg, task="detect"))
    for split in ("train", "val"):
        (tmp_path / "maps" / split).mkdir(parents=True)
    folder = replace(cfg, data=str(tmp_path / "maps"), num_classes=11)
    with pytest.raises(ValueError, match="--seg-head panoptic learns from instances.*use --seg-head fpn"):
        make_task(folder).data()


def test_a_stopped_and_resumed_detection_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    cfg = TrainConfig(
        task="detect", train_scenes=16, epochs=2, ema_decay=0.9, **{**FAST, "val_scenes": 4, "batch_size": 4}
    )
    straight = train(replace(cfg, output=str(tmp_path / "a")))
    stopped = train(replace(cfg, output=str(tmp_path / "b")), stop=StopAfter(2))  # 2 of epoch 1's 4 steps
    assert not stopped.completed
    assert (load_checkpoint(tmp_path / "b" / "last.pt")["epoch"], stopped.history) == (0, [])
    resumed = train(replace(cfg, output=str(tmp_path / "b"), resume="auto"))
    assert resumed.completed
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_map"] == b["val_map"] and a["ema_map"] == b["ema_map"]
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match="--detector fasterrcnn, not retinanet"):
        train(replace(cfg, output=str(tmp_path / "b"), detector="retinanet", resume="auto"))
    with pytest.raises(ValueError, match="--backbone-lr-mult 1.0, not 0.1"):
        train(replace(cfg, output=str(tmp_path / "b"), backbone_lr_mult=0.1, resume="auto"))
    with pytest.raises(ValueError, match="trained with --group-sizes: resume with it"):
        train(replace(cfg, output=str(tmp_path / "b"), group_sizes=False, resume="auto"))
    old = load_checkpoint(tmp_path / "b" / "last.pt")  # as an lgvit that decayed the bias tables grouped them
    groups = old["optimizer"]["param_groups"]
    groups[0]["params"].append(groups[1]["params"].pop())
    (tmp_path / "c").mkdir()
    torch.save(old, tmp_path / "c" / "last.pt")
    with pytest.raises(ValueError, match=r"groups its parameters otherwise \(\[\d+, \d+\] per group\)"):
        train(replace(cfg, output=str(tmp_path / "c"), resume="auto"))


def test_backbone_lr_mult_slows_only_the_backbone_stages(tmp_path: Path) -> None:
    """Adam's first step moves every parameter by about its learning rate: the stages by lr * mult, the FPN and
    head by lr; and `lgvit train --backbone-lr-mult` builds its optimizer that way."""
    model = create_segmenter("gcvit_fmnist", 11, fpn=32, **parse_model_kwargs(TINY))
    body = {id(p) for p in body_parameters(model)}
    assert body == {id(p) for p in model.backbone.body.parameters()} and len(body) < len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, 1e-2, 0.05, body_parameters(model), 0.1)
    assert optimizer.param_groups[0]["lr"] == 1e-2
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(before)  # each parameter once
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        lr = 1e-3 if id(p) in body else 1e-2
        decay = 1 - lr * 0.05 if p.ndim > 1 and not name.endswith("relative_position_bias_table") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * decay - lr, rtol=0, atol=1e-6)
    cfg = TrainConfig(task="segment", output=str(tmp_path), train_scenes=8, epochs=1, backbone_lr_mult=0.1, **FAST)
    train(cfg)
    groups = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert sorted({g["initial_lr"] for g in groups}) == pytest.approx([3e-4, 3e-3])


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(task="detect", output=str(tmp_path), train_scenes=8, epochs=1, **FAST)
    with pytest.raises(ValueError, match="--detector 'yolo' is not one lgvit trains: choose one of fasterrcnn"):
        train(replace(cfg, detector="yolo"))
    with pytest.raises(ValueError, match="--task 'pose' is not a task lgvit trains: choose one of classify"):
        train(replace(cfg, task="pose"))
    with pytest.raises(ValueError, match="deit_fmnist is a single-scale model"):
        train(replace(cfg, model="deit_fmnist", model_kwargs=None))
    with pytest.raises(ValueError, match="--mixup and --cutmix mix classification labels"):
        train(replace(cfg, mixup=0.2))
    with pytest.raises(ValueError, match="FCOS's head normalises with GroupNorm"):
        train(replace(cfg, detector="fcos"))
    with pytest.raises(ValueError, match="at least 28"):
        train(replace(cfg, scene_size=20))
    with pytest.raises(ValueError, match="--backbone-lr-mult must be a positive number, got 0"):
        train(replace(cfg, backbone_lr_mult=0.0))
    with pytest.raises(ValueError, match="--backbone-lr-mult is for --task detect/segment"):
        train(replace(cfg, task="classify", backbone_lr_mult=0.1))
    with pytest.raises(SystemExit):
        main(["train", "--task", "detect", "--detector", "yolo"])
    assert "invalid choice: 'yolo'" in capsys.readouterr().err
    assert main(["train", "--task", "segment", "--data", str(tmp_path), "--output", str(tmp_path / "r")]) == 2
    assert "neither Fashion-MNIST IDX files (for the scenes) nor a dense folder" in capsys.readouterr().err


class _Oracle(torch.nn.Module):
    """A 'detector' that returns each image's targets as its predictions (score 1), its masks as Mask R-CNN's
    (N, 1, H, W) probabilities, or with `empty_masks` masks that cover no pixel."""

    def __init__(self, targets: list[dict], empty_masks: bool = False) -> None:
        super().__init__()
        self.targets, self.empty_masks, self.seen = targets, empty_masks, 0

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        out = []
        for t in self.targets[self.seen : self.seen + len(images)]:
            masks = torch.zeros_like(t["masks"]) if self.empty_masks else t["masks"]
            out.append({**t, "scores": torch.ones(len(t["labels"])), "masks": masks[:, None].float()})
        self.seen += len(images)
        return out


def test_mask_map_scores_the_masks_apart_from_the_boxes() -> None:
    """Mask R-CNN's mask mAP (COCO's segm evaluation): 100 for the true masks, 0 for masks that miss every pixel
    while the boxes still score 100."""
    scenes = FashionScenes(split="val", task="detect", num_scenes=4, config=SceneConfig(min_side=32, max_side=64))
    items = [scenes[i] for i in range(len(scenes))]
    batches = [(img[None], [t]) for img, t in items]  # one image a batch: the scenes differ in size
    targets = [t for _, t in items]
    perfect = evaluate_detection(_Oracle(targets), batches, torch.device("cpu"), masks=True)
    assert all(perfect[k] == pytest.approx(100) for k in ("map", "map50", *MASK_METRICS)), perfect
    missed = evaluate_detection(_Oracle(targets, empty_masks=True), batches, torch.device("cpu"), masks=True)
    assert missed["map50"] == pytest.approx(100) and missed["mask_map50"] == 0 and missed["mask_map"] == 0
    assert set(evaluate_detection(_Oracle(targets), batches, torch.device("cpu"))) == {
        "map",
        "map50",
        "map75",
        "mar100",
        "map50_agnostic",
        "class_ap50",
    }


def test_detection_metrics_give_each_class_its_ap_and_the_boxes_theirs() -> None:
    """The true boxes with their labels score AP@.5 100 in each class of the ground truth (and no other); all
    labelled as a class the scenes lack they score 0, in mAP@.5 and in each class, while the class-agnostic
    mAP@.5 stays 100."""
    scenes = FashionScenes(split="val", task="detect", num_scenes=6, config=SceneConfig(min_side=32, max_side=64))
    items = [scenes[i] for i in range(len(scenes))]
    batches = [(img[None], [t]) for img, t in items]
    targets = [t for _, t in items]
    present = sorted({int(k) for t in targets for k in t["labels"]})
    assert 2 <= len(present) < 10, present  # some classes absent: they get no AP
    right = evaluate_detection(_Oracle(targets), batches, torch.device("cpu"))
    assert right["class_ap50"] == pytest.approx(dict.fromkeys(present, 100.0))
    assert right["map50_agnostic"] == pytest.approx(100)
    absent = min(set(range(1, 11)) - set(present))
    moved = [dict(t, labels=torch.full_like(t["labels"], absent)) for t in targets]
    wrong = evaluate_detection(_Oracle(moved), batches, torch.device("cpu"))
    assert wrong["map50"] == 0 and wrong["map50_agnostic"] == pytest.approx(100)
    assert wrong["class_ap50"] == dict.fromkeys(present, 0.0)  # each true class: only boxes of another class


class _Painter(torch.nn.Module):
    """A 'segmenter' whose logits pick, at each pixel, the class of `paint` there."""

    def __init__(self, paint: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.paint, self.num_classes = paint, num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.paint, self.num_classes).permute(0, 3, 1, 2).float()  # (B, classes, H, W)


def test_segmentation_metrics_give_each_class_its_iou() -> None:
    """Class 2 painted as class 1 on half its 10 pixels: IoU 50 for both (5 of the 10 pixels in the union of
    each), 100 for the untouched class 0, and their mean is the mIoU; ignored pixels count for nothing."""
    truth = torch.zeros(1, 4, 10, dtype=torch.int64)
    truth[0, 1, :5], truth[0, 2] = 1, 2  # 5 pixels of class 1, 10 of class 2, 25 of class 0
    paint = truth.clone()
    paint[0, 2, :5] = 1  # half of class 2 -> class 1
    truth[0, 3, :] = IGNORE_INDEX  # whatever is painted there is not scored
    paint[0, 3, :] = 1
    metrics = evaluate_segmentation(_Painter(paint, 3), [(torch.zeros(1, 1, 4, 10), truth)], 3, torch.device("cpu"))
    assert metrics["class_iou"] == pytest.approx([100.0, 50.0, 50.0])
    assert metrics["miou"] == pytest.approx(200 / 3) and metrics["pixel_acc"] == pytest.approx(100 * 25 / 30)


def test_scenes_saved_as_a_coco_folder_read_back_as_they_were(tmp_path: Path) -> None:
    scenes = FashionScenes(split="val", task="detect", num_scenes=3, config=SceneConfig(min_side=32, max_side=64))
    folder = CocoFolder(save_coco_folder(scenes, tmp_path, list(SCENE_CLASSES)), in_chans=1)
    assert folder.classes == list(SCENE_CLASSES) and len(folder) == 3
    for i in range(3):
        (want_image, want), (image, got) = scenes[i], folder[i]
        assert (image - want_image).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNGs
        assert torch.equal(got["boxes"], want["boxes"]) and torch.equal(got["labels"], want["labels"])
        assert torch.equal(got["masks"], want["masks"])
    maps = FashionScenes(split="val", task="segment", num_scenes=2, config=SceneConfig(min_side=32, max_side=64))
    folder = LabelMapFolder(save_label_map_folder(maps, tmp_path / "seg"), in_chans=1)
    assert all(torch.equal(folder[i][1], maps[i][1]) for i in range(2))


def test_coco_and_label_map_folders_train_and_evaluate_end_to_end(tmp_path: Path, capsys) -> None:
    """The real-data path of `lgvit train --task detect|segment --data DIR`: folders written from scenes, a Mask
    R-CNN with its mask mAP and a segmenter, each trained one epoch, then `lgvit eval` of the best checkpoint."""
    config = SceneConfig(min_side=32, max_side=64)
    for task, save in (("detect", save_coco_folder), ("segment", save_label_map_folder)):
        for split, n in (("train", 16), ("val", 8)):
            scenes = FashionScenes(split=split, task=task, num_scenes=n, config=config)
            save(scenes, tmp_path / task / split, *([list(SCENE_CLASSES)] if task == "detect" else []))
    common = {**FAST, "in_chans": 1, "img_size": 64, "epochs": 1, "ema_decay": 0.0}
    det = train(
        TrainConfig(
            task="detect", detector="maskrcnn", data=str(tmp_path / "detect"), output=str(tmp_path / "d"), **common
        )
    )
    seg = train(
        TrainConfig(
            task="segment", data=str(tmp_path / "segment"), num_classes=11, output=str(tmp_path / "s"), **common
        )
    )
    assert det.completed and seg.completed
    assert {f"val_{k}" for k in MASK_METRICS} <= set(det.history[-1]) and "val_miou" in seg.history[-1]
    for run, keys in ((det, ("map50", *MASK_METRICS)), (seg, ("miou", "pixel_acc"))):
        assert main(["eval", "--checkpoint", str(run.output / "best.pt"), "--output", str(run.output / "eval")]) == 0
        report = json.loads((run.output / "eval" / "eval.json").read_text())
        assert report["images"] == 8 and str(tmp_path) in report["data"]
        for k in keys:
            assert report[k] == pytest.approx(run.best[k], abs=1e-6), k
    report = json.loads((seg.output / "eval" / "eval.json").read_text())
    best = str(seg.output / "best.pt")
    assert main(["eval", "--checkpoint", best, "--batch-size", "3", "--output", str(seg.output / "e1")]) == 0
    assert json.loads((seg.output / "e1" / "eval.json").read_text()) == report  # any --batch-size: one at a time
    assert list(report["class_iou"]) == report["classes"] and len(report["classes"]) == 11  # the folder's: '0'-'10'
    assert list(report["class_iou"].values()) == pytest.approx(seg.best["class_iou"], abs=1e-6)
    assert "IoU per class (best weights)" in (seg.output / "summary.md").read_text()
    report = json.loads((det.output / "eval" / "eval.json").read_text())  # AP@.5 per class, by name
    by_name = {report["classes"][k]: v for k, v in det.best["class_ap50"].items()}
    assert by_name and report["class_ap50"] == pytest.approx(by_name, abs=1e-6)
    assert "AP@.5 per class (best weights) (the boxes whatever their class" in (det.output / "summary.md").read_text()
    assert "mask_map50" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", best, "--val-scenes", "4", "--output", str(seg.output / "e2")]) == 2
    assert "--val-scenes sets how many Fashion scenes to score" in capsys.readouterr().err


def _ddp_evaluate(path: str, rank: int, port: int) -> dict:
    """A checkpoint's val metrics from 2 processes, each rank on its shard, one scene a batch (padding a batch
    to its largest image changes a prediction, so the one-process evaluation batches the same way)."""
    torch.distributed.init_process_group("gloo", f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    dense, model, data = load_dense(load_checkpoint(path), path, "model", None)
    d = Dist(rank, 2)
    val = Subset(data.val, range(15))  # 8 and 7 scenes: shards of different sizes
    metrics = dense.evaluate(
        model, val_loader(val, 1, 0, d, dense.collate(data)), 11, StepOptions(torch.device("cpu")), d
    )
    torch.distributed.destroy_process_group()
    return metrics


def _dense_ddp_worker(rank: int, ports: list[int], out: str, detector: str) -> None:
    """Rank `rank` of a 2-process run of one epoch for each dense task (out/detect, out/segment), then the
    2-process evaluation of the trained `detector` checkpoint and of the segmenter's: all in out/rank{rank}.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1")
    runs = {}
    for port, task in zip(ports[:2], ("detect", "segment"), strict=True):
        os.environ["MASTER_PORT"] = str(port)
        cfg = TrainConfig(task=task, output=str(Path(out) / task), train_scenes=32, epochs=1, ema_decay=0.0, **FAST)
        result = train(replace(cfg, val_scenes=15))  # 15 val scenes: the shards differ in size
        runs[task] = {"state": result.model.state_dict(), "history": result.history}
    runs["detect"]["metrics"] = _ddp_evaluate(detector, rank, ports[2])
    runs["segment"]["metrics"] = _ddp_evaluate(str(Path(out) / "segment" / "last.pt"), rank, ports[3])
    torch.save(runs, Path(out) / f"rank{rank}.pt")


def test_two_process_dense_runs_sync_weights_and_evaluate_as_one_process(detection_run, tmp_path: Path) -> None:
    """Under DDP both ranks end with the same detector and segmenter, and a 2-process evaluation (torchmetrics
    summing the segmentation states, the detection metric gathering its images; 15 val scenes) gives what
    one process gives on all the scenes: for the trained RetinaNet of `detection_run` and the segmenter."""
    detector = str(detection_run[1].output / "best.pt")
    args = ([_free_port() for _ in range(4)], str(tmp_path), detector)
    mp.spawn(_dense_ddp_worker, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for task, path in (("detect", detector), ("segment", str(tmp_path / "segment" / "last.pt"))):
        state = r0[task]["state"]
        assert all(torch.equal(state[k], r1[task]["state"][k]) for k in state), task
        assert r0[task]["metrics"] == r1[task]["metrics"] and len(r0[task]["history"]) == 1
        dense, model, data = load_dense(load_checkpoint(path), path, "model", None)
        if task == "segment":  # it pads as the batches are padded: black, -mean/std in normalised units
            assert model.pad_value.flatten().tolist() == pytest.approx(
                [-m / s for m, s in zip(data.mean, data.std, strict=True)]
            )
        loader = val_loader(Subset(data.val, range(15)), 1, 0, Dist(), dense.collate(data))
        alone = dense.evaluate(model, loader, 11, StepOptions(torch.device("cpu")), Dist())
        assert alone[dense.score] > 1, alone  # measured: mAP@.5 16-18 for the detector, mIoU 8 for the segmenter
        want = dict(r0[task]["metrics"])
        for key in ("class_iou", "class_ap50"):  # approx compares flat dicts: the per-class values apart
            assert alone.pop(key, []) == pytest.approx(want.pop(key, []), rel=1e-6, abs=1e-6), task
        assert alone == pytest.approx(want, rel=1e-6, abs=1e-6), task


def test_a_dense_checkpoint_loads_without_its_pretrained_source(detection_run, tmp_path: Path) -> None:
    """eval/predict build the model from the checkpoint alone: the --pretrained file it was trained from may be
    gone (or relative to another folder)."""
    ckpt = load_checkpoint(detection_run[1].output / "best.pt")
    ckpt["train_config"]["pretrained"] = str(tmp_path / "gone.pt")
    _, model, _ = load_dense(ckpt, "best.pt", "model", None)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
