"""DeiT (Touvron et al., 2021) and its LocalViT form: a plain ViT with a class token.

The state-dict layout equals timm's `deit_*_patch16_224` (and the official DeiT/LocalViT
`VisionTransformer`) except `head` -> `head.fc`. With `locality` set, every block's MLP is
LocalViT's locality feed-forward on the 14x14 patch map; the class token bypasses it.

Any input size whose sides are multiples of the patch size: the position embedding is
resized bicubically (antialiased, as timm's `dynamic_img_size`), the class-token position kept.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import (
    Blocks,
    ClassifierHead,
    DropPath,
    FeedForwardBlock,
    Locality,
    PatchEmbed,
    TokenAttention,
    drop_path_rates,
    map_to_tokens,
    resize_pos_embed,
)
from .base import BlockStack, ClassifierConfig, check_divisible, check_ints, check_positive, init_token_weights
from .spec import PretrainedTag, Variant, small_variant

EPS = 1e-6  # DeiT's and LocalViT's LayerNorm eps


@dataclass(frozen=True)
class ViTConfig(ClassifierConfig):
    """DeiT / LocalViT hyper-parameters; `locality=None` gives the plain MLP."""

    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 224  # native resolution: the position embedding's grid
    qkv_bias: bool = True
    locality: Locality | None = None

    def validate(self) -> None:
        super().validate()
        check_ints(self, "embed_dim", "depth", "num_heads", "patch_size")
        check_ints(self, "img_size", low=self.patch_size)
        check_positive(self, "mlp_ratio")
        check_divisible(self, "num_heads", (self.embed_dim,), (self.num_heads,), "embed_dim")


class Block(FeedForwardBlock):
    """Pre-norm block: x + drop_path(attn(norm1(x))), then the residual feed-forward (MLP or locality)."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = TokenAttention(dim, cfg.num_heads, cfg.qkv_bias, "qkv", 1, cfg.attn_drop_rate, cfg.drop_rate)
        self.drop_path1 = DropPath(drop_path)
        self.init_feed_forward(dim, cfg.mlp_ratio, cfg.locality, cfg.drop_rate, drop_path, EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return self.feed_forward(x, hw, num_prefix=1)


class VisionTransformer(BlockStack):
    """DeiT / LocalViT classifier; `forward_intermediates` gives per-block (B, C, H/16, W/16) maps."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size
        self.grid = (cfg.img_size // cfg.patch_size,) * 2
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = Blocks(Block(cfg, dp) for dp in drop_path_rates(cfg.drop_path_rate, (cfg.depth,)))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=EPS)
        self.head = ClassifierHead(cfg.embed_dim, cfg.num_classes, cfg.drop_rate, pool="token")
        self.feature_info = [
            dict(num_chs=cfg.embed_dim, reduction=cfg.patch_size, module=f"blocks.{i}") for i in range(cfg.depth)
        ]
        init_token_weights(self)

    def embed(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor], tuple[int, int]]:
        """Image -> (B, 1 + N, D) tokens with the class token and position embedding, and the patch grid."""
        x = self.check_input(x)
        x, hw = map_to_tokens(self.patch_embed(x))  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        return (self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid, hw, 1)),), hw


# ---------------------------------------------------------------------------------------------
# Variants: DeiT baselines (timm weights); the LocalViT forms are in localvit.py.


def _deit(timm_name: str, cfg: ViTConfig, params: float, gmacs: float) -> Variant:
    tags = {"in1k": PretrainedTag(hf_hub_id=f"timm/{timm_name}.fb_in1k", crop_pct=0.875, license="Apache-2.0")}
    return Variant(cfg, tags, (timm_name,), params, gmacs, timm_name=timm_name)


# lgvit's own small DeiT for 28-32 px images, at the compute of `gcvit_fmnist` (about 5 MMACs at 28 px):
# 4x4 patches give 49 tokens + the class token. Not an official variant, no pretrained weights; the
# LocalViT form of it is `localvit_fmnist`.
FMNIST_VIT = ViTConfig(embed_dim=48, depth=4, num_heads=3, mlp_ratio=2.0, patch_size=4, img_size=28)

VARIANTS: dict[str, Variant] = {
    "deit_tiny": _deit("deit_tiny_patch16_224", ViTConfig(), 5.72, 1.26),
    "deit_small": _deit("deit_small_patch16_224", ViTConfig(embed_dim=384, num_heads=6), 22.05, 4.61),
    "deit_fmnist": small_variant(FMNIST_VIT),
}
