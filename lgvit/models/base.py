"""What every family's model shares: timm's model interface, the hierarchical and token-model bases, init helpers."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn

from ..layers import Blocks, ClassifierHead, feature_indices, tokens_to_map


def config_error(cfg: object, field: str, rule: str) -> ValueError:
    """The error of an invalid config field: the config, the field, its value and the rule it breaks."""
    return ValueError(f"{type(cfg).__name__}: {field}={getattr(cfg, field)!r} is invalid: {rule}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _check_each(cfg: object, fields: tuple[str, ...], ok: Callable[[object], bool], rule: str) -> None:
    """Each field (a value, or a tuple of per-stage values checked entry by entry) passes `ok`."""
    for f in fields:
        v = getattr(cfg, f)
        values = v if isinstance(v, (tuple, list)) else (v,)
        if not values or not all(ok(x) for x in values):
            raise config_error(cfg, f, ("each entry " if isinstance(v, (tuple, list)) else "") + rule)


def check_ints(cfg: object, *fields: str, low: int = 1) -> None:
    """Each field (or each entry of a per-stage tuple) is an int >= `low`."""
    _check_each(cfg, fields, lambda x: _is_int(x) and x >= low, f"must be an int >= {low}")


def check_positive(cfg: object, *fields: str) -> None:
    """Each field (or each entry of a per-stage tuple) is a number > 0."""
    _check_each(cfg, fields, lambda x: _is_real(x) and x > 0, "must be a number > 0")


def check_rates(cfg: object, *fields: str) -> None:
    """Each field is a probability in [0, 1) (1 would drop everything)."""
    _check_each(cfg, fields, lambda x: _is_real(x) and 0 <= x < 1, "must be a number in [0, 1), e.g. 0.1")


def check_stages(cfg: object, *fields: str) -> int:
    """The fields are non-empty tuples with one entry per stage, as many as the first's; returns that number."""
    first = getattr(cfg, fields[0])
    for f in fields:
        v = getattr(cfg, f)
        if not isinstance(v, (tuple, list)) or not v:
            raise config_error(cfg, f, "must be a non-empty tuple, one entry per stage")
        if len(v) != len(first):
            raise config_error(cfg, f, f"needs one entry per stage of {fields[0]}={tuple(first)!r}")
    return len(first)


def check_divisible(cfg: object, field: str, widths: Sequence[int], divisors: Sequence[int], width_field: str) -> None:
    """Each stage's width (from `width_field`) is a multiple of its entry of `field` (heads or head width)."""
    for i, (w, d) in enumerate(zip(widths, divisors, strict=True)):
        if w % d:
            raise config_error(
                cfg, field, f"stage {i} is {w} channels wide ({width_field}), not a multiple of {d}: change either"
            )


# The input checks are module-level functions registered with torch.fx.wrap, so that torch.fx.symbolic_trace
# (and torchvision's create_feature_extractor) records each as one call instead of failing on a Python branch
# over a traced shape. Dynamo (torch.compile, torch.export) traces through them: the type, dtype, rank and
# channel checks are static; the size checks become guards on the symbolic H and W, which an export whose
# `Dim` ranges obey the rule (min >= the minimum size, H and W multiples of the patch) satisfies statically.
# Each returns its input and the callers go on with what it returns: an FX graph prunes a call whose result
# is unused as dead code (torchvision's create_feature_extractor does), which would drop the check.


def check_image_batch(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """`x`, or a TypeError for anything but a floating-point tensor and a ValueError for a batch of the
    wrong rank or channels, naming the problem and the fix. An empty batch (0 images) is valid."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"expected a (B, C, H, W) image tensor, got {type(x).__name__}: stack the images with torch.stack"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"expected a floating-point image batch, got {x.dtype}: convert it (x.float() / 255, then normalise)"
        )
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) image batch, got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"expected {in_chans} input channels, got {x.shape[1]}: convert the images "
            f"(e.g. grayscale -> RGB) or build the model with in_chans={x.shape[1]}"
        )
    return x


def check_min_size(x: torch.Tensor, min_size: int) -> torch.Tensor:
    """`x`, or a ValueError if the (B, C, H, W) batch's H or W is below `min_size`."""
    h, w = x.shape[2], x.shape[3]
    if h < min_size or w < min_size:
        raise ValueError(
            f"image of {h}x{w} is smaller than this model's minimum {min_size}x{min_size}: resize or pad the input"
        )
    return x


def check_patch_multiple(x: torch.Tensor, patch: int) -> torch.Tensor:
    """`x`, or a ValueError unless the (B, C, H, W) batch's H and W are positive multiples of `patch`."""
    h, w = x.shape[2], x.shape[3]
    if h % patch != 0 or w % patch != 0 or h == 0 or w == 0:
        near = f"{max(patch, round(h / patch) * patch)}x{max(patch, round(w / patch) * patch)}"
        raise ValueError(
            f"image of {h}x{w}: this model needs sides that are positive multiples of {patch}; "
            f"resize or pad the input (e.g. to {near})"
        )
    return x


torch.fx.wrap("check_image_batch")
torch.fx.wrap("check_min_size")
torch.fx.wrap("check_patch_multiple")


@dataclass(frozen=True)
class ClassifierConfig:
    """The fields every family's config has (its own fields follow): image channels, classes, regularisation.

    `lgvit train` and `small_variant` set these on any family's config. Every field is checked when the
    config is made (`validate`), so a model is never built from an invalid one.
    """

    in_chans: int = 3
    num_classes: int = 1000  # 0: no classifier, the model returns its pooled features
    drop_rate: float = 0.0  # dropout on projections, MLPs and before the classifier
    attn_drop_rate: float = 0.0  # dropout on the attention weights
    drop_path_rate: float = 0.1  # stochastic depth of the last block (linear from 0)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises a ValueError naming the field, its value and the valid range; families extend it."""
        check_ints(self, "in_chans")
        check_ints(self, "num_classes", low=0)
        check_rates(self, "drop_rate", "attn_drop_rate", "drop_path_rate")


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

    def cell_centre(self, level: int, size: tuple[int, int]) -> tuple[float, float]:
        """The (row, col) pixel of the centre of cell (0, 0) of `feature_info[level]`'s map on an (H, W) input;
        cell (i, j)'s is r * (i, j) further (r: the level's reduction). Here the cells tile the image (patch
        embedding, patch merging): cell i spans pixels r*i .. r*i + r - 1, centred at r*i + (r - 1) / 2.
        Families whose strided convs centre their cells elsewhere override it (the explanation maps use it)."""
        del size
        r = self.feature_info[level]["reduction"]
        return (r - 1) / 2, (r - 1) / 2

    def check_channels(self, x: torch.Tensor) -> torch.Tensor:
        """`x`, or a TypeError or ValueError for a malformed image batch (see `check_image_batch`)."""
        return check_image_batch(x, self.in_chans)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a freshly initialised one of `num_classes` outputs (0: none)."""
        self.head.reset(num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in every block stack (`layers.Blocks`) while training with gradients."""
        for m in self.modules():
            if isinstance(m, Blocks):
                m.grad_checkpointing = enable

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

    Subclasses build `self.stem`, `self.stages` (an nn.Sequential of stages that run their blocks
    as `layers.Blocks`), `self.head` (ClassifierHead), `self.feature_info` and set `self.in_chans`,
    `self.min_size` (the smallest H and W the model accepts).
    """

    min_size: int
    stem: nn.Module
    stages: nn.Sequential
    head: ClassifierHead

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x`, or a ValueError naming the problem and the fix for a malformed image batch."""
        return check_min_size(check_image_batch(x, self.in_chans), self.min_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features, H/32, W/32) map, last stage normalised."""
        x = self.check_input(x)
        return self.stages(self.stem(x))

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: norms, biases, bias tables, layer scales."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs levels 0..`last`: the last stage's output (normalised) and the NCHW maps of the stages in `take`."""
        del norm  # the final stage's norm is part of the stage
        x = self.check_input(x)
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                feats.append(x)
        return x, feats


class TokenModel(ClassifierModel):
    """timm's model interface for token models that classify from a class token (DeiT, PVT, TNT).

    Subclasses set `in_chans`, `patch_size` (the side the input must be a multiple of), `head`
    (ClassifierHead with pool="token"), `feature_info`, and implement `forward_features` and
    `_intermediates`; their blocks run as `layers.Blocks`.
    """

    patch_size: int
    feature_info: list[dict]

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x`, or a ValueError naming the problem and the fix for a malformed image batch."""
        return check_patch_multiple(check_image_batch(x, self.in_chans), self.patch_size)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: norms, biases, tokens and position embeddings."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(("_token", "pos_embed", "_pos"))}


class BlockStack(TokenModel):
    """A token model that is one stack of blocks (DeiT, TNT): the feature and intermediate passes.

    Subclasses implement `embed(x) -> (state, (H, W))`, where `state` is the tuple of token tensors a
    block takes before the grid and returns (the patch tokens, class token first, last), and set
    `blocks` and `norm`.
    """

    blocks: Blocks
    norm: nn.Module

    def embed(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, int]]:
        raise NotImplementedError

    def _step(self, block: nn.Module, state: tuple[torch.Tensor, ...], hw: tuple[int, int]) -> tuple:
        out = self.blocks.run(block, *state, hw)
        return out if isinstance(out, tuple) else (out,)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, 1 + N, D) normalised patch tokens, the class token first."""
        state, hw = self.embed(x)
        for blk in self.blocks:
            state = self._step(blk, state, hw)
        return self.norm(state[-1])

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-block patch-token maps (timm's convention; `norm` applies the final norm to them)."""
        state, hw = self.embed(x)
        feats = []
        for i, blk in enumerate(self.blocks[: last + 1]):
            state = self._step(blk, state, hw)
            if i in take:
                feats.append(tokens_to_map(self.norm(state[-1]) if norm else state[-1], hw, 1))
        return self.norm(state[-1]), feats


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


def init_token_weights(model: nn.Module) -> None:
    """The official initialisation: trunc-normal(0.02) Linear weights, tokens and position embeddings; zero biases."""
    for name, p in model.named_parameters():
        if name.endswith(("_token", "pos_embed", "_pos")):
            nn.init.trunc_normal_(p, std=0.02)
    model.apply(trunc_normal_init)
