"""TNT (Han et al., 2021) and LocalViT-TNT: an inner transformer on the pixels of each patch, an outer one on patches.

Pixels: a 7x7/4 conv, then each 16x16 patch becomes 4x4 "pixel" tokens of width `in_dim`.
Every block runs inner attention + MLP on the pixels, adds their projection to the patch
tokens, then outer attention + feed-forward on the patches (a class token first). With
`locality` set, only the outer feed-forward becomes the locality module (the class token
bypasses it); the inner pixel MLP is kept.

Layout: the official one (ofsoundof/LocalViT `tnt.py`, timm's `tnt_*` legacy layout) with the
outer `norm_mlp` as `norm2` and `head` as `head.fc`. Any input whose sides are multiples of 16:
the patch position embedding is resized bicubically, the class-token position kept.
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
    Mlp,
    TokenAttention,
    drop_path_rates,
    resize_pos_embed,
)
from .base import (
    BlockStack,
    ClassifierConfig,
    check_divisible,
    check_ints,
    check_positive,
    config_error,
    init_token_weights,
)
from .spec import Variant

EPS = 1e-5  # TNT's LayerNorm eps (torch's default)


@dataclass(frozen=True)
class TNTConfig(ClassifierConfig):
    """TNT hyper-parameters; `locality=None` gives the plain outer MLP."""

    embed_dim: int = 192
    inner_dim: int = 12
    depth: int = 12
    num_heads: int = 3
    inner_num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    pixel_stride: int = 4  # the pixel conv's stride: a patch has (patch_size / pixel_stride)^2 pixels
    img_size: int = 224  # native resolution: the patch position embedding's grid
    qkv_bias: bool = False
    locality: Locality | None = None

    def validate(self) -> None:
        super().validate()
        check_ints(
            self, "embed_dim", "inner_dim", "depth", "num_heads", "inner_num_heads", "patch_size", "pixel_stride"
        )
        check_ints(self, "img_size", low=self.patch_size)
        check_positive(self, "mlp_ratio")
        check_divisible(self, "num_heads", (self.embed_dim,), (self.num_heads,), "embed_dim")
        check_divisible(self, "inner_num_heads", (self.inner_dim,), (self.inner_num_heads,), "inner_dim")
        if self.patch_size % self.pixel_stride:
            raise config_error(self, "pixel_stride", f"must divide patch_size={self.patch_size}")


class Block(FeedForwardBlock):
    """Inner (pixel) attention + MLP, pixels -> patch update, outer attention + feed-forward."""

    def __init__(self, cfg: TNTConfig, num_pixel: int, drop_path: float) -> None:
        super().__init__()
        dim, inner = cfg.embed_dim, cfg.inner_dim
        self.norm_in = nn.LayerNorm(inner, eps=EPS)
        self.attn_in = _attention(inner, cfg.inner_num_heads, cfg)
        self.norm_mlp_in = nn.LayerNorm(inner, eps=EPS)
        self.mlp_in = Mlp(inner, inner * 4, drop=cfg.drop_rate)
        self.norm1_proj = nn.LayerNorm(inner, eps=EPS)
        self.proj = nn.Linear(inner * num_pixel, dim)
        self.norm_out = nn.LayerNorm(dim, eps=EPS)
        self.attn_out = _attention(dim, cfg.num_heads, cfg)
        self.drop_path = DropPath(drop_path)
        self.init_feed_forward(dim, cfg.mlp_ratio, cfg.locality, cfg.drop_rate, drop_path, EPS)

    def forward(
        self, pixels: torch.Tensor, patches: torch.Tensor, hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B*N, P, c), patches (B, 1 + N, C) -> both updated."""
        pixels = pixels + self.drop_path(self.attn_in(self.norm_in(pixels)))
        pixels = pixels + self.drop_path(self.mlp_in(self.norm_mlp_in(pixels)))
        B, N1, _ = patches.shape
        update = self.proj(self.norm1_proj(pixels).reshape(B, N1 - 1, self.proj.in_features))  # (B, N, P*c)
        patches = torch.cat([patches[:, :1], patches[:, 1:] + update], dim=1)  # (B, 1 + N, C)
        patches = patches + self.drop_path(self.attn_out(self.norm_out(patches)))
        return pixels, self.feed_forward(patches, hw, num_prefix=1)


def _attention(dim: int, num_heads: int, cfg: TNTConfig) -> TokenAttention:
    """TNT's attention: `qk` and `v` projections (official keys), then `proj`."""
    return TokenAttention(dim, num_heads, cfg.qkv_bias, "qk_v", 1, cfg.attn_drop_rate, cfg.drop_rate)


class PixelEmbed(nn.Module):
    """(B, C, H, W) -> (B*N, P, c) pixel tokens of each patch, plus the pixel position, and the patch grid."""

    def __init__(self, cfg: TNTConfig) -> None:
        super().__init__()
        self.side = -(-cfg.patch_size // cfg.pixel_stride)  # pixels per patch side (ceil)
        self.patch = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.inner_dim, 7, cfg.pixel_stride, 3)

    def forward(self, x: torch.Tensor, pixel_pos: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Sides that are multiples of the patch (checked by the model): the conv gives exactly h*s x w*s."""
        B, s, hw = x.shape[0], self.side, (x.shape[2] // self.patch, x.shape[3] // self.patch)
        x = self.proj(x)  # (B, c, h*s, w*s)
        c = x.shape[1]
        x = x.reshape(B, c, hw[0], s, hw[1], s).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, s, s, c): one patch each
        pos = pixel_pos.flatten(2).transpose(1, 2)  # (1, s*s, c)
        return x.reshape(B * hw[0] * hw[1], s * s, c) + pos, hw  # (B*N, s*s, c)


class TNT(BlockStack):
    """TNT / LocalViT-TNT classifier; `forward_intermediates` gives per-block (B, C, H/16, W/16) patch maps."""

    def __init__(self, cfg: TNTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size
        self.grid = (cfg.img_size // cfg.patch_size,) * 2
        self.pixel_embed = PixelEmbed(cfg)
        num_pixel = self.pixel_embed.side**2
        self.norm1_proj = nn.LayerNorm(num_pixel * cfg.inner_dim, eps=EPS)
        self.proj = nn.Linear(num_pixel * cfg.inner_dim, cfg.embed_dim)
        self.norm2_proj = nn.LayerNorm(cfg.embed_dim, eps=EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.patch_pos = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], cfg.embed_dim))
        side = self.pixel_embed.side
        self.pixel_pos = nn.Parameter(torch.zeros(1, cfg.inner_dim, side, side))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = drop_path_rates(cfg.drop_path_rate, (cfg.depth,))
        self.blocks = Blocks(Block(cfg, num_pixel, dp) for dp in dpr)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=EPS)
        self.head = ClassifierHead(cfg.embed_dim, cfg.num_classes, cfg.drop_rate, pool="token")
        self.feature_info = [
            dict(num_chs=cfg.embed_dim, reduction=cfg.patch_size, module=f"blocks.{i}") for i in range(cfg.depth)
        ]
        init_token_weights(self)

    def embed(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]:
        """Image -> (pixel tokens (B*N, P, c), patch tokens (B, 1 + N, C)) and the patch grid."""
        x = self.check_input(x)
        B = x.shape[0]
        pixels, hw = self.pixel_embed(x, self.pixel_pos)
        pixels_per_patch = pixels.reshape(B, hw[0] * hw[1], self.proj.in_features)  # (B, N, P*c)
        patches = self.norm2_proj(self.proj(self.norm1_proj(pixels_per_patch)))  # (B, N, C)
        patches = torch.cat([self.cls_token.expand(B, -1, -1), patches], dim=1)  # (B, 1 + N, C)
        return (pixels, self.pos_drop(patches + resize_pos_embed(self.patch_pos, self.grid, hw, 1))), hw


# Variants: TNT-Tiny (no pretrained tag; params/GMACs computed from the official code). LocalViT-TNT is in localvit.py.
VARIANTS: dict[str, Variant] = {"tnt_tiny": Variant(TNTConfig(), {}, ("tnt_t_patch16_224",), 6.07, 1.40)}
