"""A staged model's multi-scale maps as a module (`FeatureMaps`): timm's `features_only`, and the body of the
dense-prediction backbones in `lgvit.dense`.

It wraps a classifier built by `lgvit.factory.create_model`, drops its classifier and returns the NCHW maps
of the chosen stages through the model's `forward_intermediates`, at any input size: an input that a model
cannot take as it is (below its minimum size, or not a multiple of a token model's patch grid) is
zero-padded at the bottom and right, and every map is cropped back to ceil(H / stride) x ceil(W / stride).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models.base import ClassifierModel, TokenModel

STAGED_FAMILIES = "gcvit_*, swin_*, maxvit_*, pvt_tiny, localvit_pvt_tiny, localvit_swin_tiny"


def _name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return spec.name if spec else type(model).__name__


def check_staged(model: ClassifierModel) -> None:
    """Raises a ValueError for a single-scale model (every level at one stride: DeiT, TNT)."""
    strides = [f["reduction"] for f in model.feature_info]
    if len(set(strides)) < 2:
        raise ValueError(
            f"{_name(model)} is a single-scale model (all {len(strides)} levels of its feature_info are at stride "
            f"{strides[0]}), so it has no stages for dense prediction: use a staged model ({STAGED_FAMILIES})"
        )


def check_out_indices(model: ClassifierModel, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    """`out_indices` as increasing non-negative stage indices (None: every stage); raises a ValueError naming the
    valid range otherwise. Negative indices count from the last stage."""
    n = len(model.feature_info)
    if out_indices is None:
        return tuple(range(n))
    valid = f"{_name(model)} has {n} stages: use indices in 0..{n - 1} (or -{n}..-1), e.g. {tuple(range(n))}"
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(f"out_indices={out_indices!r} must be a non-empty tuple of stage indices; {valid}")
    for i in out_indices:
        if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n:
            raise ValueError(f"out_indices={tuple(out_indices)!r}: {i!r} is out of range; {valid}")
    picked = tuple(i % n for i in out_indices)
    if list(picked) != sorted(set(picked)):
        raise ValueError(f"out_indices={tuple(out_indices)!r} must name each stage once, shallow to deep; {valid}")
    return picked


def _stage_parts(model: ClassifierModel) -> list[nn.Module]:
    """The stem (if the model has one) and then each stage, the units `frozen_stages` counts."""
    stem = getattr(model, "stem", None)
    return ([stem] if stem is not None else []) + list(model.stages)


class FeatureMaps(nn.Module):
    """The maps of a staged lgvit model at `out_indices`, a list of (B, C_i, ceil(H/s_i), ceil(W/s_i)) tensors.

    Args:
        model: a staged classifier from `create_model` (its classifier is dropped; stages after the last
            index are kept, so weights still load strictly, but not run).
        out_indices: the stages to return (None: all).
        frozen_stages: mmdet's convention: -1 trains everything; k >= 0 freezes the stem and the first k
            stages (no gradients, kept in eval mode); the number of stages freezes the whole model.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) while training.

    `out_channels`, `strides` and `feature_info` describe the returned maps, in order; `pretrained_cfg` is the
    model's preprocessing.
    """

    def __init__(
        self,
        model: ClassifierModel,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        check_staged(model)
        self.out_indices = check_out_indices(model, out_indices)
        n = len(model.stages)
        if not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool) or not -1 <= frozen_stages <= n:
            raise ValueError(
                f"frozen_stages={frozen_stages!r} must be an int in -1..{n} for {_name(model)} "
                "(-1: train all; 0: freeze the stem; k: the stem and the first k stages)"
            )
        model.reset_classifier(0)
        self.model = model
        self.feature_info = [dict(model.feature_info[i]) for i in self.out_indices]
        self.out_channels = [f["num_chs"] for f in self.feature_info]
        self.strides = [f["reduction"] for f in self.feature_info]
        self.divisor = model.patch_size if isinstance(model, TokenModel) else 1
        self.min_size = getattr(model, "min_size", self.divisor)
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        for p in self._frozen().parameters():
            p.requires_grad_(False)
        self.train()

    @property
    def pretrained_cfg(self) -> dict | None:
        """The wrapped model's preprocessing (mean, std, input size): what its weights expect."""
        return getattr(self.model, "pretrained_cfg", None)

    def _frozen(self) -> nn.Module:
        """The modules `frozen_stages` freezes, as one container."""
        if self.frozen_stages == len(self.model.stages):
            return self.model
        parts = _stage_parts(self.model)
        has_stem = len(parts) > len(self.model.stages)
        count = self.frozen_stages + has_stem if self.frozen_stages >= 0 else 0
        return nn.ModuleList(parts[:count])

    def train(self, mode: bool = True) -> "FeatureMaps":
        """Train mode, except the frozen stages and (with `norm_eval`) every BatchNorm, which stay in eval mode."""
        super().train(mode)
        if mode:
            self._frozen().eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pads the (B, C, H, W) batch at the bottom and right to a size the model takes."""
        h, w = x.shape[-2:]
        d = self.divisor
        ph, pw = max(self.min_size, -(-h // d) * d) - h, max(self.min_size, -(-w // d) * d) - w
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) images -> one (B, C_i, ceil(H/s_i), ceil(W/s_i)) map per index of `out_indices`."""
        x = self.model.check_channels(x)
        h, w = x.shape[-2:]
        maps = self.model.forward_intermediates(
            self.pad(x), indices=list(self.out_indices), stop_early=True, intermediates_only=True
        )
        return [m[..., : -(-h // s), : -(-w // s)] for m, s in zip(maps, self.strides, strict=True)]
