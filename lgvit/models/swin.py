"""Swin Transformer v1 (Liu et al., ICCV 2021): hierarchical shifted-window attention.

A 4x4 patch embedding (+ LayerNorm) and four stages of blocks that attend inside non-overlapping
windows; every second block first rolls the map by half a window so that windows straddle the
previous partition, and masks the pairs the roll brought together. Stage i >= 1 starts with a
2x2 patch merging (timm's placement; the official code merges at the end of stage i-1). With
`locality` set, every block's feed-forward is LocalViT's (LocalViT-Swin, see localvit.py).

Runs at any input size >= 32 without rebuilding (see docs/swin.md):
- the image is zero-padded to a multiple of the patch size, and each merge pads odd maps to even;
- a stage whose map is no larger than the window along an axis uses the map's size as its window
  on that axis (the bias table's central part) and does not shift along it;
- each block pads its normalised map to window multiples and crops back; the shift mask treats the
  padding as a region of its own, so real tokens never attend to it.
At the native resolution none of these steps changes anything: the model equals the official code
and timm's `swin_*`.
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..layers import (
    Blocks,
    ClassifierHead,
    DropPath,
    FeedForwardBlock,
    Locality,
    PatchEmbed,
    Size2,
    WindowAttention,
    concrete,
    drop_path_rates,
    fit_window,
    pad_to_multiple,
    per_stage,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from .base import (
    ClassifierConfig,
    HierarchicalBackbone,
    check_divisible,
    check_ints,
    check_positive,
    check_stages,
    stage_feature_info,
    trunc_normal_init,
)
from .spec import PretrainedTag, Variant, small_variant

# FX (torch.fx.symbolic_trace, torchvision's create_feature_extractor): the steps whose Python depends on the
# map's size are leaf functions in the graph; they run eagerly when the graph runs
torch.fx.wrap("stage_geometry")
torch.fx.wrap("shifted_attention")


@dataclass(frozen=True)
class SwinConfig(ClassifierConfig):
    """Swin hyper-parameters. Stage i has `embed_dim * 2**i` channels."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    qkv_bias: bool = True
    locality: Locality | None = None  # LocalViT's feed-forward in every block

    def validate(self) -> None:
        super().validate()
        n = check_stages(self, "depths", "num_heads")
        check_ints(self, "embed_dim", "depths", "num_heads", "window_size", "patch_size")
        check_positive(self, "mlp_ratio")
        check_divisible(
            self, "num_heads", [self.embed_dim * 2**i for i in range(n)], self.num_heads, "embed_dim * 2**i"
        )


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concat [x0, x1, x2, x3] (official order) -> LayerNorm -> Linear(4C, 2C)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, (2, 2))  # odd H/W -> even
        B, _, _, C = x.shape
        H, W = (x.shape[1] + 1) // 2, (x.shape[2] + 1) // 2  # the padded size / 2, kept simple when symbolic
        x = x.view(B, H, 2, W, 2, C)  # (B, H/2, dh, W/2, dw, C)
        # x0 = (dh 0, dw 0), x1 = (1, 0), x2 = (0, 1), x3 = (1, 1): column offset outer, row offset inner
        x = x.permute(0, 1, 3, 4, 2, 5).reshape(B, H, W, 4 * C)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


def stage_window(size: Size2, window: int) -> tuple[Size2, Size2]:
    """(window, shift) for a map of `size`: an axis no longer than the window is one window and is not shifted."""
    return fit_window(size, window), tuple(_shift(s, window) for s in size)


def _shift(side: int, window: int) -> int:
    """Half the window along an axis longer than the window, else 0.

    With a symbolic side of at least one window (the guard `stage_window` made), the branch-free
    `window // 2 * min(1, side - window)`: one traced program serves the map that is exactly one window
    (no shift) and every larger one."""
    if not concrete(side) and side >= window:
        return window // 2 * torch.sym_min(1, side - window)
    return window // 2 if side > window else 0


class SwinBlock(FeedForwardBlock):
    """Pre-norm block on a (B, H, W, C) map: (shifted) window attention, then the feed-forward (MLP or locality).

    Args:
        dim: channels.
        num_heads: attention heads.
        window: the window the bias table is built for.
        drop_path: stochastic-depth rate of both residual branches.
        cfg: the model config (mlp ratio, qkv bias, dropouts, locality).
    """

    def __init__(self, dim: int, num_heads: int, window: int, drop_path: float, cfg: SwinConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, num_heads, (window, window), cfg.qkv_bias, attn_drop=cfg.attn_drop_rate, proj_drop=cfg.drop_rate
        )
        self.drop_path1 = DropPath(drop_path)
        self.init_feed_forward(dim, cfg.mlp_ratio, cfg.locality, cfg.drop_rate, drop_path, eps=1e-5)
        self._cache: dict = {}  # eager: the roll + pad + partition gather indices per size; not state

    def forward(self, x: torch.Tensor, window: Size2, shift: Size2, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C); `window`/`shift` from `stage_window`; `mask` from `shifted_window_mask`."""
        x = x + self.drop_path1(shifted_attention(self, self.norm1(x), window, shift, mask))
        return self.feed_forward(x)


def shifted_attention(
    block: SwinBlock, x: torch.Tensor, window: Size2, shift: Size2, mask: torch.Tensor | None
) -> torch.Tensor:
    """`block`'s attention on a normalised (B, H, W, C) map: roll, pad, partition, attend, and back.
    Sized by the map: a leaf function in FX graphs."""
    size = (x.shape[1], x.shape[2])
    windows, padded = window_partition(x, window, shift, block._cache)  # (B*nW, N, C), rolled by -shift
    out = block.attn(windows, window, mask=mask)  # (B*nW, N, C)
    return window_reverse(out, window, padded, size, shift, block._cache)  # (B, H, W, C), rolled back


class SwinStage(nn.Module):
    """[PatchMerging] -> blocks (regular, shifted, regular, ...) -> [final norm]; NCHW in and out."""

    def __init__(self, dim_in: int, dim: int, index: int, drop_paths: list[float], cfg: SwinConfig, last: bool) -> None:
        super().__init__()
        self.window = cfg.window_size
        self.downsample = PatchMerging(dim_in, dim) if index > 0 else nn.Identity()
        heads = cfg.num_heads[index]
        self.blocks = Blocks(SwinBlock(dim, heads, self.window, dp, cfg) for dp in drop_paths)
        self.norm = nn.LayerNorm(dim) if last else nn.Identity()
        self._cache: dict = {}  # eager: the shift masks per size; not state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        window, shift, masks = stage_geometry(self, x)
        for j, blk in enumerate(self.blocks):
            x = self.blocks.run(blk, x, window, shift if j % 2 else (0, 0), masks[j % 2])
        return self.norm(x).permute(0, 3, 1, 2)  # (B, C, H, W)


def stage_geometry(stage: SwinStage, x: torch.Tensor) -> tuple[Size2, Size2, tuple[torch.Tensor | None, ...]]:
    """(window, shift, (mask of the regular blocks, mask of the shifted ones)) for `stage` on a (B, H, W, C)
    map. Sized by the map: a leaf function in FX graphs."""
    size = (x.shape[1], x.shape[2])
    window, shift = stage_window(size, stage.window)
    shifts = ((0, 0), shift)[: len(stage.blocks)]  # a one-block stage has no shifted block
    masks = tuple(shifted_window_mask(size, window, s, x.device, stage._cache) for s in shifts)
    return window, shift, masks


class Swin(HierarchicalBackbone):
    """Swin Transformer (and LocalViT-Swin) classifier and backbone; see the module docstring."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        n = len(cfg.depths)
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.min_size = cfg.patch_size * 2 ** (n - 1)
        dims = [cfg.embed_dim * 2**i for i in range(n)]
        drops = per_stage(drop_path_rates(cfg.drop_path_rate, cfg.depths), cfg.depths)
        self.stem = PatchEmbed(cfg.in_chans, dims[0], cfg.patch_size, norm=True)
        self.stages = nn.Sequential(
            *(SwinStage(dims[max(i - 1, 0)], dims[i], i, drops[i], cfg, i == n - 1) for i in range(n))
        )
        self.feature_info = stage_feature_info(dims, [cfg.patch_size * 2**i for i in range(n)])
        self.head = ClassifierHead(dims[-1], cfg.num_classes, cfg.drop_rate)
        self.apply(trunc_normal_init)


# ---------------------------------------------------------------------------------------------
# Variants: configs and drop-path rates from microsoft `configs/swin/*.yaml`; params/GMACs computed
# (meta device, attention matmuls counted) and equal to the official figures. Pretrained tags are
# timm's re-hosts of the official weights, in timm's order of preference, with timm's evaluation
# preprocessing (crop 0.9 at 224, 1.0 at 384; the official eval uses 0.875 and a squash resize).

_MIT = "MIT"


def _tags(timm_name: str, size: int, names: tuple[str, ...]) -> dict[str, PretrainedTag]:
    return {
        tag: PretrainedTag(
            hf_hub_id=f"timm/{timm_name}.{tag}",
            num_classes=21841 if tag == "ms_in22k" else 1000,
            input_size=(3, size, size),
            crop_pct=0.9 if size == 224 else 1.0,
            license=_MIT,
        )
        for tag in names
    }


def _variant(name: str, cfg: SwinConfig, params: float, gmacs: float, tags: tuple[str, ...], size: int) -> Variant:
    timm_name = f"{name.removesuffix('_384')}_patch4_window{cfg.window_size}_{size}"
    return Variant(cfg, _tags(timm_name, size, tags), (timm_name,), params, gmacs, size, timm_name)


_T = SwinConfig()
_S = replace(_T, depths=(2, 2, 18, 2), drop_path_rate=0.3)
_B = replace(_S, embed_dim=128, num_heads=(4, 8, 16, 32), drop_path_rate=0.5)
_L = replace(_S, embed_dim=192, num_heads=(6, 12, 24, 48), drop_path_rate=0.2)
_22K = ("ms_in22k_ft_in1k", "ms_in1k", "ms_in22k")
_L22K = ("ms_in22k_ft_in1k", "ms_in22k")

# name: config, params M, GMACs, pretrained tags, native size
_OFFICIAL = {
    "swin_tiny": (_T, 28.288, 4.491, ("ms_in1k", "ms_in22k_ft_in1k", "ms_in22k"), 224),
    "swin_small": (_S, 49.606, 8.741, _22K, 224),
    "swin_base": (_B, 87.768, 15.431, _22K, 224),
    "swin_base_384": (replace(_B, window_size=12), 87.904, 47.083, _22K, 384),
    "swin_large": (_L, 196.532, 34.476, _L22K, 224),
    "swin_large_384": (replace(_L, window_size=12), 196.736, 103.919, _L22K, 384),
}

VARIANTS: dict[str, Variant] = {
    **{name: _variant(name, *row) for name, row in _OFFICIAL.items()},
    # lgvit's own small Swin for 28-32 px images, at the compute of `gcvit_fmnist` (4.3 vs 4.8 MMACs at 28 px),
    # so the families can be compared on Fashion-MNIST (`lgvit train --model swin_fmnist`). Not an official
    # variant, no pretrained weights: patch 4 gives a 7x7 -> 4x4 -> 2x2 map, the first stage one whole window.
    "swin_fmnist": small_variant(SwinConfig(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), mlp_ratio=3.0)),
}
