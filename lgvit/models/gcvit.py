"""GC ViT: Global Context Vision Transformer (Hatamizadeh et al., ICML 2023).

Four stages of blocks that alternate local window attention and global-query attention.
Per stage a global-query generator (fused-MBConv + max-pool) turns the whole feature map into
one window of query tokens, which attends to every local window's keys and values.

Runs at any input size >= 32 without rebuilding (see docs/gcvit.md, "Any input size"):
- each block zero-pads its normalised input to a multiple of the window and crops back;
- a stage whose map is smaller than the window uses a window of the map's size (the bias
  table's central part);
- the global-query generator chooses its pooling depth from the map at run time and resizes
  its output to the window (bicubic) when the two still differ.
At the native resolution none of these steps changes anything: the model equals the
reference code (NVlabs, and timm's `gcvit_*`).
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    Blocks,
    ChannelsLastConv2d,
    ClassifierHead,
    DropPath,
    FeedForwardBlock,
    FusedMBConv,
    LayerNorm2d,
    LayerScale,
    Locality,
    Size2,
    WindowAttention,
    drop_path_rates,
    fit_window,
    per_stage,
    tracing,
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
torch.fx.wrap("fit_window")
torch.fx.wrap("global_queries")
torch.fx.wrap("block_attention")


@dataclass(frozen=True)
class GCViTConfig(ClassifierConfig):
    """GC ViT hyper-parameters. Stage i has `embed_dim * 2**i` channels."""

    embed_dim: int = 64
    depths: tuple[int, ...] = (3, 4, 19, 5)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 3.0
    layer_scale: float | None = None
    img_size: int = 224  # native resolution: sets how many fused-MBConvs each global-query generator has
    drop_path_rate: float = 0.2
    qkv_bias: bool = True
    locality: Locality | None = None  # LocalViT's feed-forward in every block (lgvit's own hybrid; not NVIDIA's)

    def validate(self) -> None:
        super().validate()
        n = check_stages(self, "depths", "num_heads", "window_sizes")
        check_ints(self, "embed_dim", "depths", "num_heads", "window_sizes", "img_size")
        check_positive(self, "mlp_ratio", *(("layer_scale",) if self.layer_scale is not None else ()))
        check_divisible(
            self, "num_heads", [self.embed_dim * 2**i for i in range(n)], self.num_heads, "embed_dim * 2**i"
        )


class Downsample(nn.Module):
    """GC ViT's reducer (NCHW): LN -> fused-MBConv -> conv3x3 stride 2 -> LN."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.conv_block = FusedMBConv(dim)
        self.reduction = nn.Conv2d(dim, dim_out, 3, 2, 1, bias=False)
        self.norm2 = LayerNorm2d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.norm1(x))

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the first LayerNorm, for callers that drop their input once it is normalised."""
        return self.norm2(self.reduction(self.conv_block(x)))


class Stem(nn.Module):
    """conv3x3 stride 2 -> Downsample keeping the width: an image becomes a stride-4 map."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ChannelsLastConv2d(in_chans, dim, 3, 2, 1)
        self.down = Downsample(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a channels-last conv output is already the (B, H, W, C) layout LayerNorm2d normalises: no copy;
        # and it is freed once normalised, before the fused-MBConv allocates (a lower inference peak)
        return self.down.reduce(self.down.norm1(self.conv1(x)))


def _pool_depth(size: Size2, window: Size2) -> int:
    """How many stride-2 max-pools keep the map at least as large as the window.

    Integer arithmetic only (ceil(h / 2) = (h + 1) // 2), so symbolic sizes give plain size guards: one
    traced graph holds for the range of sizes with this depth (docs/gcvit.md, "Export")."""
    h, w, depth = size[0], size[1], 0
    # the per-axis tests first: traced, each comparison made is a guard, and the last one only matters for a
    # window of 1 (for larger windows it follows from the first two), so its guard narrows no range
    while (h + 1) // 2 >= window[0] and (w + 1) // 2 >= window[1] and (h > window[0] or w > window[1]):
        h, w, depth = (h + 1) // 2, (w + 1) // 2, depth + 1
    return depth


def _cubic(t: torch.Tensor, a: float = -0.75) -> tuple[torch.Tensor, ...]:
    """PyTorch's bicubic weights of the 4 taps at offsets -1, 0, 1, 2 from floor(src), for fraction `t`."""

    def near(d: torch.Tensor) -> torch.Tensor:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: torch.Tensor) -> torch.Tensor:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _bicubic_rows(x: torch.Tensor, out: int) -> torch.Tensor:
    """`F.interpolate(mode='bicubic', align_corners=False)` along dim -2 as a (out, in) matmul: traceable
    with a symbolic input size (taps clamped to the edge, as PyTorch does)."""
    size = x.shape[-2]
    src = (torch.arange(out, device=x.device, dtype=x.dtype) + 0.5) * (size / out) - 0.5  # (out,)
    base = src.floor()
    cols = torch.arange(size, device=x.device)  # (in,)
    weights = x.new_zeros(out, size)  # (out, in)
    for k, w in zip(range(-1, 3), _cubic(src - base), strict=True):
        tap = (base.long() + k).clamp(0, size - 1)  # (out,)
        weights = weights + (tap[:, None] == cols[None, :]).to(x.dtype) * w[:, None]
    return weights @ x  # (..., out, W)


class GlobalQueryGen(nn.Module):
    """Turns a stage's (B, C, H, W) map into one window of query tokens per image.

    The fused-MBConvs are applied in turn, each followed by a 3x3/2 max-pool while pooling
    keeps the map no smaller than the window; extra pools follow if the map is still larger.
    If the result still differs from the window it is resized bicubically.
    """

    def __init__(self, dim: int, num_heads: int, num_convs: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.blocks = nn.ModuleDict({f"conv{j + 1}": FusedMBConv(dim) for j in range(num_convs)})

    def forward(self, x: torch.Tensor, window: Size2) -> torch.Tensor:
        """(B, C, H, W) map -> (B, heads, window h*w, head_dim) queries."""
        return global_queries(self, x, window)


def global_queries(gen: GlobalQueryGen, x: torch.Tensor, window: Size2) -> torch.Tensor:
    """`gen`'s forward. Its pooling depth depends on the map's size: a leaf function in FX graphs."""
    pools = _pool_depth(tuple(x.shape[-2:]), window)
    for block in gen.blocks.values():
        x = block(x)
        if pools:
            x, pools = F.max_pool2d(x, 3, 2, 1), pools - 1
    for _ in range(pools):
        x = F.max_pool2d(x, 3, 2, 1)
    if tracing():  # always resize (the identity at the window), as matmuls the tracer needs no proofs for
        x = _bicubic_rows(_bicubic_rows(x, window[0]).transpose(-2, -1), window[1]).transpose(-2, -1)
    elif tuple(x.shape[-2:]) != tuple(window):
        x = F.interpolate(x, size=window, mode="bicubic", align_corners=False)
    B, C = x.shape[:2]
    # (B, C, h, w) -> (B, h*w, heads, head_dim)
    x = x.permute(0, 2, 3, 1).reshape(B, window[0] * window[1], gen.num_heads, C // gen.num_heads)
    return x.transpose(1, 2)  # (B, heads, N, head_dim)


class GCViTBlock(FeedForwardBlock):
    """Pre-norm transformer block on a (B, H, W, C) map with local or global-query window attention, then the
    MLP, or with `cfg.locality` LocalViT's feed-forward (lgvit's own hybrid)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        global_query: bool,
        layer_scale: float | None,
        drop_path: float,
        cfg: GCViTConfig,
    ) -> None:
        super().__init__()
        self.global_query = global_query
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, num_heads, (window, window), cfg.qkv_bias, global_query, cfg.attn_drop_rate, cfg.drop_rate
        )
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.init_feed_forward(dim, mlp_ratio, cfg.locality, cfg.drop_rate, drop_path, 1e-5, layer_scale)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor, window: Size2) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(block_attention(self, self.norm1(x), q_global, window)))
        return self.feed_forward(x)


def block_attention(block: GCViTBlock, x: torch.Tensor, q_global: torch.Tensor, window: Size2) -> torch.Tensor:
    """`block`'s attention on a normalised (B, H, W, C) map: pad, partition, attend, reverse, crop.
    Sized by the map: a leaf function in FX graphs."""
    size = (x.shape[1], x.shape[2])
    windows, padded = window_partition(x, window)  # (B*nW, N, C)
    out = block.attn(windows, window, q_global if block.global_query else None)
    return window_reverse(out, window, padded, size)  # (B, H, W, C)


class GCViTStage(nn.Module):
    """[Downsample] -> global query -> blocks (local, global, local, ...) -> [final norm]; NCHW in and out."""

    def __init__(
        self, dim_in: int, dim: int, index: int, drop_paths: list[float], cfg: GCViTConfig, last: bool
    ) -> None:
        super().__init__()
        self.window = cfg.window_sizes[index]
        self.downsample = Downsample(dim_in, dim) if index > 0 else nn.Identity()
        native = cfg.img_size // 2 ** (index + 2)
        convs = max(1, int(math.log2(max(native, 1) / self.window)))
        self.global_block = GlobalQueryGen(dim, cfg.num_heads[index], convs)
        self.blocks = Blocks(
            GCViTBlock(dim, cfg.num_heads[index], self.window, cfg.mlp_ratio, j % 2 == 1, cfg.layer_scale, dp, cfg)
            for j, dp in enumerate(drop_paths)
        )
        self.norm = nn.LayerNorm(dim) if last else nn.Identity()

    @property
    def has_unused_parameters(self) -> bool:
        """A one-block stage has no global block, so its generator (kept for the official layout) gets no
        gradient: DistributedDataParallel must then look for unused parameters (`lgvit.training.loop`)."""
        return len(self.blocks) < 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        window = fit_window(x.shape[2:], self.window)  # a guard per axis when traced
        q_global = self.global_block(x, window)  # (B, heads, N, d)
        x = self.blocks(x.permute(0, 2, 3, 1), q_global, window)  # (B, H, W, C)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


class GCViT(HierarchicalBackbone):
    """GC ViT classifier and backbone; see the module docstring."""

    first_conv = "stem.conv1"

    def __init__(self, cfg: GCViTConfig) -> None:
        super().__init__()
        n = len(cfg.depths)
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.min_size = 2 ** (n + 1)
        dims = [cfg.embed_dim * 2**i for i in range(n)]
        drops = per_stage(drop_path_rates(cfg.drop_path_rate, cfg.depths), cfg.depths)
        self.stem = Stem(cfg.in_chans, dims[0])
        self.stages = nn.Sequential(
            *(GCViTStage(dims[max(i - 1, 0)], dims[i], i, drops[i], cfg, last=i == n - 1) for i in range(n))
        )
        self.feature_info = stage_feature_info(dims, [2 ** (i + 2) for i in range(n)])
        self.head = ClassifierHead(dims[-1], cfg.num_classes, cfg.drop_rate)
        self.apply(trunc_normal_init)

    def cell_centre(self, level: int, size: tuple[int, int]) -> tuple[float, float]:
        """(0, 0): each stride-2 step is a 3x3 conv with padding 1, whose output k is centred on input 2k, so
        a level's cell i is centred on pixel r*i (not r*i + (r - 1) / 2 as for a patch embedding)."""
        del level, size
        return 0.0, 0.0


# ---------------------------------------------------------------------------------------------
# Variants: configs from NVlabs `models/gc_vit.py`; params/GMACs computed from the official code.

_NVIDIA_HUB = "nvidia/GCViT"
_NC = "CC-BY-NC-SA-4.0 (NVIDIA); code Apache-2.0"


def _tags(name: str, nvidia_file: str, crop_pct: float, on_timm: bool) -> dict[str, PretrainedTag]:
    tags = {}
    if on_timm:  # the 2022 weights timm re-hosts; timm evaluates all of them at crop 0.875
        tags["in1k"] = PretrainedTag(hf_hub_id=f"timm/{name}.in1k", license=_NC)
    # the 2023 weights from NVlabs, official layout and preprocessing
    tags["nvidia_in1k"] = PretrainedTag(hf_hub_id=_NVIDIA_HUB, filename=nvidia_file, crop_pct=crop_pct, license=_NC)
    return tags


def _in1k(name: str, cfg: GCViTConfig, params: float, gmacs: float, file: str, crop: float, on_timm: bool) -> Variant:
    """An ImageNet-1k variant: NVIDIA's weights, and timm's re-host (then also timm's reference model) if `on_timm`."""
    tags = _tags(name, file, crop, on_timm)
    alias = (name.replace("gcvit_", "gc_vit_"),)
    return Variant(cfg, tags, alias, params, gmacs, timm_name=name if on_timm else None)


def _in21k(name: str, cfg: GCViTConfig, params: float, gmacs: float, tag: PretrainedTag, size: int = 224) -> Variant:
    """An ImageNet-21k-pretrained, 1k-fine-tuned large variant at its native `size`."""
    return Variant(cfg, {"in21k_ft_in1k": tag}, (name.replace("gcvit_", "gc_vit_"),), params, gmacs, size)


def _hub_21k(size: int) -> PretrainedTag:
    return PretrainedTag(
        hf_hub_id=_NVIDIA_HUB,
        filename=f"gcvit_21k_large_{size}.pth.tar",
        input_size=(3, size, size),
        crop_pct=1.0,
        crop_mode="squash",
        license=_NC,
    )


_T = GCViTConfig(embed_dim=64, num_heads=(2, 4, 8, 16), mlp_ratio=3.0)
_S = GCViTConfig(embed_dim=96, num_heads=(3, 6, 12, 24), mlp_ratio=2.0, layer_scale=1e-5, drop_path_rate=0.3)
_B = replace(_S, embed_dim=128, num_heads=(4, 8, 16, 32), drop_path_rate=0.5)
# lgvit's own small GC ViT for 28-32 px images (`gcvit_fmnist` below; `localvit_gcvit_fmnist` adds LocalViT's
# feed-forward to it)
FMNIST_GCVIT = GCViTConfig(
    embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_sizes=(7, 4, 2), mlp_ratio=2.0, img_size=28
)
_L = replace(_S, embed_dim=192, num_heads=(6, 12, 24, 48), drop_path_rate=0.5)
_T2 = replace(_T, depths=(3, 4, 29, 5), drop_path_rate=0.25)
_S2 = replace(_S, depths=(3, 4, 23, 5), mlp_ratio=3.0, drop_path_rate=0.35)
_L384 = replace(_L, window_sizes=(12, 12, 24, 12), img_size=384, drop_path_rate=0.1)
_L512 = replace(_L, window_sizes=(16, 16, 32, 16), img_size=512, drop_path_rate=0.1)
_DRIVE_21K = "https://drive.google.com/uc?export=download&id=1maGDr6mJkLyRTUkspMzCgSlhDzNRFGEf"

# name: config, params M, GMACs, NVIDIA's file, its eval crop, whether timm re-hosts the 2022 weights
_IN1K = {
    "gcvit_xxtiny": (replace(_T, depths=(2, 2, 6, 2)), 12.00, 2.12, "gcvit_1k_xxtiny.pth.tar", 1.0, True),
    "gcvit_xtiny": (replace(_T, depths=(3, 4, 6, 5)), 19.98, 2.91, "gcvit_1k_xtiny.pth.tar", 0.875, True),
    "gcvit_tiny": (_T, 28.22, 4.76, "gcvit_1k_tiny.pth.tar", 1.0, True),
    "gcvit_tiny2": (_T2, 34.54, 6.18, "gcvit_1k_tiny2.pth.tar", 0.875, False),
    "gcvit_small": (_S, 51.09, 8.53, "gcvit_1k_small.pth.tar", 0.875, True),
    "gcvit_small2": (_S2, 68.62, 11.54, "gcvit_1k_small2.pth.tar", 0.875, False),
    "gcvit_base": (_B, 90.32, 14.82, "gcvit_1k_base.pth.tar", 1.0, True),
    "gcvit_large": (_L, 202.08, 32.55, "gcvit_1k_large.pth.tar", 1.0, False),
}

VARIANTS: dict[str, Variant] = {
    **{name: _in1k(name, *row) for name, row in _IN1K.items()},
    "gcvit_large_224_21k": _in21k(
        "gcvit_large_224_21k", _L, 202.08, 32.55, PretrainedTag(url=_DRIVE_21K, crop_pct=1.0, license=_NC)
    ),
    "gcvit_large_384_21k": _in21k("gcvit_large_384_21k", _L384, 202.86, 103.9, _hub_21k(384), 384),
    "gcvit_large_512_21k": _in21k("gcvit_large_512_21k", _L512, 203.80, 202.1, _hub_21k(512), 512),
    # lgvit's own small GC ViT for 28-32 px images (the `lgvit train` / `make demo` default). Not an official
    # variant and has no pretrained weights. Three stages on a 7x7 -> 4x4 -> 2x2 map (stride 4, 8, 16 at
    # 28 px), window = the whole stage-0 map, so local and global attention alternate as in the paper.
    # Trained on Fashion-MNIST in a few CPU minutes (docs/training.md).
    "gcvit_fmnist": small_variant(FMNIST_GCVIT),
}
