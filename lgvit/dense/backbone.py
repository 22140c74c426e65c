"""`create_backbone`: a staged lgvit model as the backbone torchvision's detectors take (FasterRCNN, MaskRCNN,
RetinaNet, FCOS): an `OrderedDict` of NCHW maps named like torchvision's `BackboneWithFPN` ('0', '1', ...,
then 'pool' or 'p6'/'p7'), and `out_channels`. The pyramid is torchvision's own `FeaturePyramidNetwork`."""

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from ..factory import create_model
from ..features import FeatureMaps

EXTRA_LEVELS = {0: "LastLevelMaxPool ('pool', for the R-CNNs)", 2: "LastLevelP6P7 ('p6', 'p7', for RetinaNet/FCOS)"}


class Backbone(nn.Module):
    """`FeatureMaps` (+ a torchvision FPN): images -> OrderedDict of NCHW maps.

    Attributes:
        body: the stage maps (`lgvit.features.FeatureMaps`).
        fpn: torchvision's FeaturePyramidNetwork, or None for the raw maps.
        out_channels: the FPN width (an int, what torchvision's detectors read), or the raw maps' channels (a list).
        names, strides: the keys of the output, in order, and each map's stride.
    """

    def __init__(self, body: FeatureMaps, fpn: int | None = 256, extra_levels: int = 0) -> None:
        super().__init__()
        if fpn is not None and (not isinstance(fpn, int) or isinstance(fpn, bool) or fpn < 1):
            raise ValueError(f"fpn={fpn!r} must be the pyramid's width (an int >= 1, e.g. 256) or None for raw maps")
        if extra_levels not in EXTRA_LEVELS or (fpn is None and extra_levels):
            choices = "; ".join(f"{k}: {v}" for k, v in EXTRA_LEVELS.items())
            raise ValueError(
                f"extra_levels={extra_levels!r} is invalid: with an FPN use {choices}; raw maps (fpn=None) take 0"
            )
        self.body = body
        self.names = [str(i) for i in range(len(body.strides))]
        self.strides = list(body.strides)
        if fpn is None:
            self.fpn, self.out_channels = None, list(body.out_channels)
            return
        extra = LastLevelMaxPool() if extra_levels == 0 else LastLevelP6P7(fpn, fpn)
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), fpn, extra_blocks=extra)
        added = ["pool"] if extra_levels == 0 else ["p6", "p7"]
        self.names += added
        self.strides += [self.strides[-1] * 2 ** (i + 1) for i in range(len(added))]
        self.out_channels = fpn

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """(B, C, H, W) images -> {name: (B, out_channels, ceil(H/stride), ceil(W/stride))}."""
        feats = self.body(x)
        maps = OrderedDict(zip(self.names[: len(feats)], feats, strict=True))  # the stage levels '0', '1', ...
        return maps if self.fpn is None else self.fpn(maps)


def body_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the stage maps (`Backbone.body`, what `pretrained` loads) of every `Backbone` in
    `model`, e.g. a torchvision detector or a `Segmenter` on one; not the FPN's or the heads'."""
    return [p for m in model.modules() if isinstance(m, Backbone) for p in m.body.parameters()]


def create_backbone(
    name: str,
    pretrained: bool | str | os.PathLike | None = None,
    out_indices: Sequence[int] | None = None,
    fpn: int | None = 256,
    extra_levels: int = 0,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    **config_overrides,
) -> Backbone:
    """A detection/segmentation backbone from a registered staged model (GC ViT, Swin, MaxViT, PVT, LocalViT).

    Args:
        name: a registered staged model (`lgvit.list_models()`); DeiT and TNT (one scale) raise a ValueError.
        pretrained: classification weights, as `create_model` takes them (tag, file, hub id); the head is dropped.
        out_indices: the stages to use (None: all, e.g. (0, 1, 2, 3) for a 4-stage model).
        fpn: the FPN width, or None for the raw stage maps (`out_channels` is then a list).
        extra_levels: 0 adds torchvision's LastLevelMaxPool ('pool', as `BackboneWithFPN`); 2 adds LastLevelP6P7
            ('p6', 'p7', computed from the last FPN level) for RetinaNet and FCOS.
        frozen_stages: -1 trains all; k >= 0 freezes the stem and the first k stages (mmdet's convention).
        norm_eval: keep the backbone's BatchNorms in eval mode while training.
        **config_overrides: model config fields, e.g. in_chans=1, drop_path_rate=0.2.
    """
    if "features_only" in config_overrides:
        raise TypeError("create_backbone always returns feature maps: drop features_only")
    model = create_model(name, pretrained, features_only=True, out_indices=out_indices, **config_overrides)
    body = FeatureMaps(model.model, model.out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval)
    return Backbone(body, fpn, extra_levels)
