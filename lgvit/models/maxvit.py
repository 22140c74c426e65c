"""MaxViT: Multi-Axis Vision Transformer (Tu et al., ECCV 2022), the official TensorFlow model.

A conv stem, then four stages of MaxViT blocks: MBConv -> block attention (local windows) ->
FFN -> grid attention (a dilated grid spanning the whole map) -> FFN, all pre-norm residuals.
Both attentions are the shared `WindowAttention`; they differ only in how the map is cut into
windows (`window_partition` / `grid_partition`). The state-dict layout is timm's
`maxvit_*_tf_*` except for the relative-position tables (see `lgvit/convert/maxvit.py`).

Runs at any input size >= 32 without rebuilding (see docs/maxvit.md):
- stride-2 convs and pools use TensorFlow 'SAME' padding computed from the input size;
- each attention zero-pads its normalised input to a multiple of the window (or grid), masks
  the padded keys out of the softmax and crops back, so padding never changes a valid token;
- a map smaller than the window uses a window of the map's size (the bias table's centre).
At the native resolution none of these steps changes anything: the model equals timm's port.
"""

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    Blocks,
    ClassifierHead,
    Conv2dSame,
    DropPath,
    GELUTanh,
    Mlp,
    ShortMapConv2d,
    SqueezeExcite,
    WindowAttention,
    avg_pool_same,
    channels_first,
    fit_window,
    grid_partition,
    grid_reverse,
    math_attention_enabled,
    padding_mask,
    per_stage,
    same_padding,
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
    config_error,
    stage_feature_info,
)
from .spec import PretrainedTag, Variant, small_variant

# FX (torch.fx.symbolic_trace, torchvision's create_feature_extractor): the step whose Python depends on the
# map's size is a leaf function in the graph; it runs eagerly when the graph runs
torch.fx.wrap("partition_attention")


@dataclass(frozen=True)
class MaxViTConfig(ClassifierConfig):
    """MaxViT hyper-parameters (the TensorFlow model's)."""

    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 5, 2)
    stem_width: int = 64
    window_size: int = 7  # block window = grid size; input / 32 at the native resolution
    head_dim: int = 32
    mlp_ratio: float = 4.0
    expand_ratio: float = 4.0  # MBConv hidden width, times the block's *output* width
    se_ratio: float = 0.25  # SE width, times the block's output width
    drop_path_rate: float = 0.2

    def validate(self) -> None:
        super().validate()
        n = check_stages(self, "embed_dims", "depths")
        check_ints(self, "embed_dims", "depths", "stem_width", "window_size", "head_dim")
        check_positive(self, "mlp_ratio", "expand_ratio", "se_ratio")
        check_divisible(self, "head_dim", self.embed_dims, (self.head_dim,) * n, "embed_dims")
        narrowest = min(self.embed_dims)
        if int(narrowest * self.se_ratio) < 1:
            raise config_error(
                self, "se_ratio", f"gives width {narrowest} a squeeze-excite of 0 channels: use >= {1 / narrowest:.3g}"
            )


def _bn(channels: int) -> nn.BatchNorm2d:
    """TensorFlow's BatchNorm defaults: eps 1e-3, momentum 0.99 (0.01 in PyTorch's convention)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as a per-channel affine map: bn(x) = x * scale + shift."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`conv`'s geometry (stride, padding or TF 'SAME' padding, groups) with another weight and bias."""
    if isinstance(conv, Conv2dSame):
        x = conv.pad(x)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class Stem(nn.Module):
    """conv3x3 stride 2 ('SAME', bias) -> BN -> GELU-tanh -> conv3x3 (bias): image -> stride-2 map."""

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.conv1 = Conv2dSame(in_chans, width, 3, 2)
        self.norm1 = _bn(width)
        self.act1 = GELUTanh(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = self.norm1(self.conv1(x))
        else:  # BatchNorm folded into the conv: same map, one pass over the output fewer
            scale, shift = _bn_affine(self.norm1)
            x = _conv(self.conv1, x, self.conv1.weight * scale.view(-1, 1, 1, 1), self.conv1.bias * scale + shift)
        return self.conv2(self.act1(x))


class PoolShortcut(nn.Module):
    """The shortcut of a downsampling MBConv: 2x2 'SAME' average pool, then a 1x1 conv if the width changes."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(dim_in, dim, 1) if dim_in != dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(avg_pool_same(x))


class MBConv(nn.Module):
    """Pre-BN inverted bottleneck: 1x1 expand -> BN-act -> dw3x3 -> BN-act -> SE -> 1x1 project, + shortcut."""

    def __init__(self, dim_in: int, dim: int, stride: int, drop_path: float, cfg: MaxViTConfig) -> None:
        super().__init__()
        if stride == 1 and dim_in != dim:
            raise ValueError(f"a stride-1 MBConv keeps the width, got {dim_in} -> {dim}")
        mid = int(dim * cfg.expand_ratio)
        self.shortcut = PoolShortcut(dim_in, dim) if stride == 2 else nn.Identity()
        self.pre_norm = _bn(dim_in)
        self.conv1_1x1 = nn.Conv2d(dim_in, mid, 1, bias=False)
        self.norm1 = _bn(mid)
        self.act1 = GELUTanh(inplace=True)
        if stride == 2:
            self.conv2_kxk = Conv2dSame(mid, mid, 3, 2, groups=mid, bias=False)
        else:
            self.conv2_kxk = ShortMapConv2d(mid, mid, 3, 1, 1, groups=mid, bias=False)
        self.norm2 = _bn(mid)
        self.act2 = GELUTanh(inplace=True)
        self.se = SqueezeExcite(mid, int(dim * cfg.se_ratio), act=nn.SiLU, bias=True)
        self.conv3_1x1 = nn.Conv2d(mid, dim, 1)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if self.training or math_attention_enabled():  # folding is an eval shortcut, not the reference graph
            x = self.norm2(self.conv2_kxk(self.act1(self.norm1(self.conv1_1x1(self.pre_norm(x))))))
        else:
            x = self._folded_convs(x)
        x = self.conv3_1x1(self.se(self.act2(x)))
        return self.drop_path(x).add_(shortcut)

    def _folded_convs(self, x: torch.Tensor) -> torch.Tensor:
        """Eval: pre_norm -> 1x1 -> norm1 -> act1 -> dw3x3 -> norm2 with the BatchNorms folded into the convs.

        The same map as the training path (to float rounding) with two convs instead of five ops:
        less time and no full-size BatchNorm outputs. A stride-2 block pads its narrow input for the
        TF-'SAME' depthwise conv, not the 4x wider hidden map: the 1x1 conv maps the padding to its
        bias, and that border is zeroed again, which is the padded hidden map without the copy.
        """
        s0, t0 = _bn_affine(self.pre_norm)
        s1, t1 = _bn_affine(self.norm1)
        s2, t2 = _bn_affine(self.norm2)
        w1 = self.conv1_1x1.weight  # (mid, in, 1, 1)
        w1, b1 = w1 * s0.view(1, -1, 1, 1) * s1.view(-1, 1, 1, 1), s1 * (w1.flatten(1) @ t0) + t1
        w2 = self.conv2_kxk.weight * s2.view(-1, 1, 1, 1)  # (mid, 1, 3, 3)
        if tracing() or not isinstance(self.conv2_kxk, Conv2dSame):  # traced: pad the hidden map, no size slicing
            return _conv(self.conv2_kxk, self.act1(F.conv2d(x, w1, b1)), w2, t2)
        left, right, top, bottom = self.conv2_kxk.pads(x)
        h = self.act1(F.conv2d(F.pad(x, (left, right, top, bottom)), w1, b1))  # (B, mid, Hp, Wp)
        Hp, Wp = h.shape[-2:]
        h[..., :top, :], h[..., Hp - bottom :, :] = 0, 0
        h[..., :left], h[..., Wp - right :] = 0, 0
        return F.conv2d(h, w2, t2, self.conv2_kxk.stride, 0, 1, self.conv2_kxk.groups)


class PartitionAttention(nn.Module):
    """Pre-norm attention + FFN on a (B, H, W, C) map cut into local blocks or a dilated grid."""

    def __init__(self, dim: int, grid: bool, drop_path: float, cfg: MaxViTConfig) -> None:
        super().__init__()
        if dim % cfg.head_dim:
            raise ValueError(f"width {dim} is not a multiple of head_dim {cfg.head_dim}")
        self.grid = grid
        self.window = cfg.window_size
        window = (cfg.window_size, cfg.window_size)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = WindowAttention(
            dim, dim // cfg.head_dim, window, True, False, cfg.attn_drop_rate, cfg.drop_rate, onehot_lookup=True
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act=partial(GELUTanh, inplace=True), drop=cfg.drop_rate)
        self.drop_path2 = DropPath(drop_path)
        self._cache: dict = {}  # eager: the padding masks per size; not state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop_path1(partition_attention(self, self.norm1(x))).add_(x)  # a fresh tensor: add in place
        return self.drop_path2(self.mlp(self.norm2(x))).add_(x)


def partition_attention(block: PartitionAttention, x: torch.Tensor) -> torch.Tensor:
    """`block`'s attention on a normalised (B, H, W, C) map: pad, partition (block or grid), attend, reverse.
    Sized by the map: a leaf function in FX graphs."""
    size = (x.shape[1], x.shape[2])
    part = fit_window(size, block.window)  # a guard per axis when traced
    split, merge = (grid_partition, grid_reverse) if block.grid else (window_partition, window_reverse)
    windows, padded = split(x, part)  # (B*nW, N, C)
    out = block.attn(windows, part, mask=padding_mask(size, part, block.grid, x.device, block._cache))
    return merge(out, part, padded, size)  # (B, H, W, C)


class MaxViTBlock(nn.Module):
    """MBConv -> block attention + FFN -> grid attention + FFN; NCHW in and out."""

    def __init__(self, dim_in: int, dim: int, stride: int, drop_path: float, cfg: MaxViTConfig) -> None:
        super().__init__()
        self.conv = MBConv(dim_in, dim, stride, drop_path, cfg)
        self.attn_block = PartitionAttention(dim, False, drop_path, cfg)
        self.attn_grid = PartitionAttention(dim, True, drop_path, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        return channels_first(self.attn_grid(self.attn_block(x)))  # (B, C, H, W)


class MaxViTStage(nn.Module):
    """Blocks of one width; the first halves the resolution."""

    def __init__(self, dim_in: int, dim: int, drop_paths: list[float], cfg: MaxViTConfig) -> None:
        super().__init__()
        self.blocks = Blocks(
            MaxViTBlock(dim_in if j == 0 else dim, dim, 2 if j == 0 else 1, dp, cfg) for j, dp in enumerate(drop_paths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _drop_paths(rate: float, depths: tuple[int, ...]) -> list[float]:
    """The official schedule: block b of n drops with probability rate * b / n."""
    n = sum(depths)
    return [rate * b / n for b in range(n)]


class MaxViT(HierarchicalBackbone):
    """MaxViT classifier and backbone; see the module docstring."""

    def __init__(self, cfg: MaxViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.min_size = 2 ** (len(cfg.depths) + 1)  # the stem's stride 2, then one stride 2 per stage
        drops = per_stage(_drop_paths(cfg.drop_path_rate, cfg.depths), cfg.depths)
        self.stem = Stem(cfg.in_chans, cfg.stem_width)
        dims = (cfg.stem_width, *cfg.embed_dims)
        self.stages = nn.Sequential(*(MaxViTStage(dims[i], dims[i + 1], drops[i], cfg) for i in range(len(cfg.depths))))
        self.feature_info = stage_feature_info(cfg.embed_dims, [2 ** (i + 2) for i in range(len(cfg.depths))])
        self.head = ClassifierHead(dims[-1], cfg.num_classes, cfg.drop_rate, norm=True, hidden=dims[-1])
        self.apply(_init_weights)

    def cell_centre(self, level: int, size: tuple[int, int]) -> tuple[float, float]:
        """Each stride-2 step (the stem's conv, each stage's depth-wise conv) is a 3x3 conv with 'SAME' padding:
        output k is centred on input 2k + 1 - (the padding before), which depends on the input's length. The
        centre of cell 0 composes those steps (log2 of the level's reduction) back to the image, axis by axis."""
        steps = self.feature_info[level]["reduction"].bit_length() - 1
        return tuple(_same_chain_centre(n, steps) for n in size)


def _same_chain_centre(n: int, steps: int) -> float:
    """The input position of output 0's centre after `steps` stride-2 3x3 'SAME' convs on a length-`n` axis."""
    offsets = []  # per step, output k's centre = 2k + offset on that step's input
    for _ in range(steps):
        offsets.append(1 - same_padding(n, 3, 2)[0])
        n = (n + 1) // 2
    centre = 0.0
    for off in reversed(offsets):
        centre = 2 * centre + off
    return centre


def _init_weights(m: nn.Module) -> None:
    """timm's 'vit_eff' scheme: Xavier-uniform Linear, fan-out normal convs, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Variants: configs from google-research/maxvit `hp/vision.py`; drop-path from `hp/vision_i1k.py`
# (XL has no ImageNet-1k recipe; L's is assumed). Params/GMACs: lgvit.tools.flops on these models,
# equal to timm's `maxvit_*_tf_*`.

_LICENSE = "apache-2.0"
_HALF = (0.5, 0.5, 0.5)


def _tags(timm_name: str, size: int, kinds: tuple[str, ...]) -> dict[str, PretrainedTag]:
    """timm's hub tags of one model: 'in1k', 'in21k' (224, 21843 classes), 'in21k_ft_in1k' (384/512)."""
    tags = {}
    for kind in kinds:
        hub = f"timm/{timm_name}.{kind}"
        if size != 224:
            tags[kind] = PretrainedTag(
                hf_hub_id=hub,
                input_size=(3, size, size),
                mean=_HALF,
                std=_HALF,
                crop_pct=1.0,
                crop_mode="squash",
                license=_LICENSE,
            )
        elif kind == "in1k":
            tags[kind] = PretrainedTag(hf_hub_id=hub, crop_pct=0.95, license=_LICENSE)
        else:
            tags[kind] = PretrainedTag(
                hf_hub_id=hub, num_classes=21843, mean=_HALF, std=_HALF, crop_pct=0.95, license=_LICENSE
            )
    return tags


_T = MaxViTConfig(drop_path_rate=0.2)
_S = replace(_T, embed_dims=(96, 192, 384, 768), drop_path_rate=0.3)
_B = replace(_S, depths=(2, 6, 14, 2), drop_path_rate=0.4)
_L = replace(_B, embed_dims=(128, 256, 512, 1024), stem_width=128, drop_path_rate=0.6)
_XL = replace(_L, embed_dims=(192, 384, 768, 1536), stem_width=192)

# name: (config, {size: (params M, GMACs)}, tags at 224, tags at 384/512). Params and GMACs equal timm's
# figures. GMACs count the reference graph (`math_attention()`), whose bias lookup is the TensorFlow
# one-hot einsum; lgvit's runtime path gathers instead and spends less (0.007 G at tiny-224, 0.38 G at
# tiny-512, 2.35 G at xlarge-512).
_OFFICIAL = {
    "tiny": (_T, {224: (30.917, 5.552), 384: (30.977, 17.393), 512: (31.050, 33.250)}, ("in1k",), ("in1k",)),
    "small": (_S, {224: (68.928, 11.589), 384: (69.019, 35.67), 512: (69.128, 66.907)}, ("in1k",), ("in1k",)),
    "base": (
        _B,
        {224: (119.468, 23.922), 384: (119.653, 73.453), 512: (119.876, 137.411)},
        ("in1k", "in21k"),
        ("in1k", "in21k_ft_in1k"),
    ),
    "large": (
        _L,
        {224: (211.786, 43.52), 384: (212.033, 132.09), 512: (212.330, 243.926)},
        ("in1k", "in21k"),
        ("in1k", "in21k_ft_in1k"),
    ),
    "xlarge": (
        _XL,
        {224: (506.988, 97.287), 384: (475.323, 292.082), 512: (475.769, 532.900)},
        ("in21k",),
        ("in21k_ft_in1k",),
    ),
}


def _variant(name: str, size: int, cfg: MaxViTConfig, params: float, gmacs: float, tags: tuple[str, ...]) -> Variant:
    timm_name = f"maxvit_{name}_tf_{size}"
    classes = 21843 if tags == ("in21k",) and size == 224 else 1000  # XL-224 is 21K-only
    aliases = (timm_name,) + ((f"maxvit_{name}",) if size == 224 else ())
    cfg = replace(cfg, window_size=size // 32, num_classes=classes)
    return Variant(cfg, _tags(timm_name, size, tags), aliases, params, gmacs, size, timm_name)


VARIANTS: dict[str, Variant] = {
    **{
        f"maxvit_{name}_{size}": _variant(name, size, cfg, params, gmacs, tags224 if size == 224 else tags_ft)
        for name, (cfg, figures, tags224, tags_ft) in _OFFICIAL.items()
        for size, (params, gmacs) in figures.items()
    },
    # lgvit's own small MaxViT for 28-32 px images, at the compute of `gcvit_fmnist` (4.7 vs 4.8 MMACs at 28 px),
    # so the families can be compared on Fashion-MNIST (`lgvit train --model maxvit_fmnist`). Not an official
    # variant, no pretrained weights: a stride-2 stem and three one-block stages on 7x7 -> 4x4 -> 2x2 maps.
    "maxvit_fmnist": small_variant(
        MaxViTConfig(
            embed_dims=(24, 48, 96), depths=(1, 1, 1), stem_width=24, window_size=7, head_dim=12, mlp_ratio=2.0
        )
    ),
}
