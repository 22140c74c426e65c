"""The model protocol every family shares (timm's interface), and small helpers for building models."""

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import ClassifierHead, feature_indices


class ClassifierModel(nn.Module):
    """What every lgvit model shares: `in_chans`, a `head` with `.fc`, `.reset()` and `.num_features`,
    input checks, and timm's head-side interface."""

    in_chans: int
    head: nn.Module
    feature_info: list[dict]  # one entry per level `forward_intermediates` can return

    @property
    def num_classes(self) -> int:
        fc = self.head.fc
        return fc.out_features if isinstance(fc, nn.Linear) else 0

    @property
    def num_features(self) -> int:
        return self.head.num_features

    def check_channels(self, x: torch.Tensor) -> None:
        """Raises a ValueError naming the problem and the fix for a batch of the wrong rank or channels."""
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) image batch, got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels, got {x.shape[1]}: convert the images "
                f"(e.g. grayscale -> RGB) or build the model with in_chans={x.shape[1]}"
            )

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a freshly initialised one of `num_classes` outputs (0: none)."""
        self.head.reset(num_classes)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps of the levels in `feature_info` (stages or blocks), for dense prediction.

        Args:
            indices: levels to return (None: all; int n: the last n; list: those).
            norm: token models apply their final norm to the returned maps; hierarchical models
                always normalise their last stage, as `forward_features` does, and ignore it.
            stop_early: stop after the last requested level.
            output_fmt: 'NCHW' or 'NHWC'.
            intermediates_only: return only the list of feature maps.

        Returns:
            The maps, or (what `forward_features` returns when all levels ran, the maps).
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        levels = len(self.feature_info)
        take = feature_indices(indices, levels)
        last = take[-1] if stop_early or intermediates_only else levels - 1
        final, feats = self._intermediates(x, take, last, norm)
        if output_fmt == "NHWC":
            feats = [f.permute(0, 2, 3, 1) for f in feats]  # (B, H, W, C)
        return feats if intermediates_only else (final, feats)

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs levels 0..`last`: the output after them and the NCHW maps of the levels in `take`."""
        raise NotImplementedError


class HierarchicalBackbone(ClassifierModel):
    """stem -> stages (each NCHW -> NCHW) -> head, with timm's model interface.

    Subclasses build `self.stem`, `self.stages` (an nn.Sequential whose stages carry a
    `grad_checkpointing` flag), `self.head` (ClassifierHead), `self.feature_info` and set
    `self.in_chans`, `self.min_size` (the smallest H and W the model accepts).
    """

    min_size: int
    stem: nn.Module
    stages: nn.Sequential
    head: ClassifierHead

    def check_input(self, x: torch.Tensor) -> None:
        """Raises a ValueError naming the problem and the fix for a malformed image batch."""
        self.check_channels(x)
        if min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(
                f"image of {x.shape[2]}x{x.shape[3]} is smaller than this model's minimum "
                f"{self.min_size}x{self.min_size}: resize or pad the input"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features, H/32, W/32) map, last stage normalised."""
        self.check_input(x)
        return self.stages(self.stem(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: norms, biases, bias tables, layer scales."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs levels 0..`last`: the last stage's output (normalised) and the NCHW maps of the stages in `take`."""
        del norm  # the final stage's norm is part of the stage
        self.check_input(x)
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                feats.append(x)
        return x, feats


def stage_feature_info(dims: Sequence[int], reductions: Sequence[int]) -> list[dict]:
    """timm's `feature_info` for `stages.{i}` of `dims[i]` channels at stride `reductions[i]`."""
    return [
        dict(num_chs=c, reduction=r, module=f"stages.{i}")
        for i, (c, r) in enumerate(zip(dims, reductions, strict=True))
    ]


def trunc_normal_init(m: nn.Module) -> None:
    """The ViT/Swin/GC ViT initialisation for `model.apply`: trunc-normal(0.02) Linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
