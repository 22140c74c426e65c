"""torchvision's detectors on an lgvit backbone (`create_detector`), the batches they train on (lists of images
and target dicts that move to a device as a tensor does: `DetectionCollate`) and their loss (`detection_loss`)."""

import os
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from .backbone import create_backbone
from .roi import box_pooler

DETECTORS = ("fasterrcnn", "retinanet", "fcos", "maskrcnn")
ONE_STAGE = ("retinanet", "fcos")  # the detectors on P3-P7 (extra levels 'p6', 'p7'), without RoI heads
_RCNN = dict(  # proposals and samples sized for scenes of a few objects (torchvision's defaults are COCO's)
    rpn_pre_nms_top_n_train=600,
    rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    box_batch_size_per_image=128,
    box_detections_per_img=50,
)


class ImageBatch(list):
    """(C, H, W) images of different sizes: a list with a tensor's `.to(device)`."""

    def to(self, device: torch.device, non_blocking: bool = False) -> "ImageBatch":
        return ImageBatch(x.to(device, non_blocking=non_blocking) for x in self)


class TargetBatch(list):
    """One target dict of tensors per image: a list with a tensor's `.to(device)`."""

    def to(self, device: torch.device, non_blocking: bool = False) -> "TargetBatch":
        return TargetBatch({k: v.to(device, non_blocking=non_blocking) for k, v in t.items()} for t in self)


class DetectionCollate:
    """(image, target) items -> (ImageBatch, TargetBatch), keeping only the target keys the detector reads."""

    def __init__(self, masks: bool) -> None:
        self.keys = ("boxes", "labels", "masks") if masks else ("boxes", "labels")

    def __call__(self, batch: list[tuple[torch.Tensor, dict]]) -> tuple[ImageBatch, TargetBatch]:
        images, targets = zip(*batch, strict=True)
        return ImageBatch(images), TargetBatch({k: t[k] for k in self.keys} for t in targets)


def _anchors(detector: str, strides: Sequence[int]) -> AnchorGenerator:
    """One anchor size per level: 4x the stride (3 aspect ratios; RetinaNet 3 octave scales); FCOS one point per
    cell of the stride's size, as torchvision's FCOS has it."""
    if detector == "fcos":
        return AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    octaves = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)) if detector == "retinanet" else (1.0,)
    sizes = tuple(tuple(round(4 * s * o) for o in octaves) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def _check_detector(detector: str) -> None:
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r} is not one lgvit trains: choose one of {', '.join(DETECTORS)}")


def create_detector(
    detector: str,
    backbone: str,
    num_classes: int,
    img_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    fpn: int = 128,
    pretrained: bool | str | os.PathLike | None = None,
    **config_overrides,
) -> nn.Module:
    """A torchvision detector on `lgvit.create_backbone(backbone, ...)`.

    Args:
        detector: 'fasterrcnn', 'retinanet', 'fcos' or 'maskrcnn'.
        num_classes: the detector's classes, background included (11 for the Fashion scenes).
        img_size: torchvision's transform resizes each image so that its longer side is `img_size`.
        image_mean, image_std: the normalisation the transform applies (one value per channel).
        fpn: the pyramid's width; the R-CNNs' box head is 2 * fpn wide, Mask R-CNN's mask head fpn wide.
        pretrained, config_overrides: for the backbone, as `create_backbone` takes them.
    """
    _check_detector(detector)
    if detector == "fcos" and (fpn % 32 or fpn < 64):
        raise ValueError(f"fpn={fpn}: FCOS's head normalises with GroupNorm(32, fpn); give a multiple of 32, >= 64")
    extra_levels = 2 if detector in ONE_STAGE else 0
    body = create_backbone(backbone, pretrained, fpn=fpn, extra_levels=extra_levels, **config_overrides)
    return detector_on(detector, body, num_classes, img_size, image_mean, image_std)


def detector_on(
    detector: str,
    body: nn.Module,
    num_classes: int,
    img_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> nn.Module:
    """`create_detector`'s detector on any torchvision-style backbone: a module returning an OrderedDict of
    FPN levels, with `out_channels` (an int) and `strides` (one per level; 'p6'/'p7' for the one-stage
    detectors). It is how lgvit's benchmarks put torchvision's ResNet-18 FPN under the same detector."""
    _check_detector(detector)
    size = dict(min_size=img_size, max_size=img_size, image_mean=list(image_mean), image_std=list(image_std))
    anchors = _anchors(detector, body.strides)
    if detector in ONE_STAGE:
        kind = RetinaNet if detector == "retinanet" else FCOS
        return kind(body, num_classes, anchor_generator=anchors, detections_per_img=50, **size)
    fpn = body.out_channels
    box_head = TwoMLPHead(fpn * 7 * 7, 2 * fpn)  # 7 x 7: the default RoI pooler's output
    # torchvision's default poolers, on a RoIAlign whose backward is fast on the CPU (lgvit.dense.roi)
    heads = dict(box_roi_pool=box_pooler(7), box_head=box_head, box_predictor=FastRCNNPredictor(2 * fpn, num_classes))
    if detector == "maskrcnn":  # torchvision's mask head (four 3x3 convs, a 2x deconv) at the pyramid's width
        heads |= dict(
            mask_roi_pool=box_pooler(14),
            mask_head=MaskRCNNHeads(fpn, (fpn,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(fpn, fpn, num_classes),
        )
    kind = MaskRCNN if detector == "maskrcnn" else FasterRCNN
    return kind(body, rpn_anchor_generator=anchors, **heads, **_RCNN, **size)


def detection_loss(model: nn.Module, images: ImageBatch, targets: TargetBatch) -> torch.Tensor:
    """The sum of the detector's training losses (its dict: RPN and box losses, or classification and regression)."""
    losses = model(list(images), list(targets))
    return sum(v.float() for v in losses.values())
