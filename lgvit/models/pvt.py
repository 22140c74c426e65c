"""PVT v1 (Wang et al., 2021) and LocalViT-PVT: a four-stage pyramid of spatial-reduction attention.

Each stage: patch embedding (strided conv + LN) -> + position embedding -> blocks whose keys and
values come from a map shrunk `sr` times by a strided conv. The last stage prepends a class token
(and never reduces), and the classifier reads it. With `locality` set, every block's MLP is the
locality feed-forward on the stage's patch map; in the last stage the class token bypasses it.

Layout: the official one (whai362/PVT, ofsoundof/LocalViT `pvt.py`) with `patch_embed{k}`,
`pos_embed{k}`, `block{k}` as `stages.{k-1}.*` and `head` as `head.fc`. Any input whose sides are
multiples of 32: each stage's position embedding is resized bilinearly (as PVT's detection code).
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
    per_stage,
    resize_pos_embed,
    tokens_to_map,
)
from .base import (
    ClassifierConfig,
    TokenModel,
    check_divisible,
    check_ints,
    check_positive,
    check_stages,
    config_error,
    init_token_weights,
    stage_feature_info,
)
from .spec import Variant

EPS = 1e-6  # the blocks' and final LayerNorm eps (the official PVT's, as DeiT's)


@dataclass(frozen=True)
class PVTConfig(ClassifierConfig):
    """PVT hyper-parameters, one entry per stage; `locality=None` gives the plain MLP."""

    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_size: int = 4  # the first stage's; later stages embed 2x2 patches
    img_size: int = 224  # native resolution: the position embeddings' grids
    qkv_bias: bool = True
    locality: Locality | None = None

    def validate(self) -> None:
        super().validate()
        n = check_stages(self, "depths", "embed_dims", "num_heads", "mlp_ratios", "sr_ratios")
        check_ints(self, "depths", "embed_dims", "num_heads", "sr_ratios", "patch_size")
        check_ints(self, "img_size", low=self.patch_size * 2 ** (n - 1))
        check_positive(self, "mlp_ratios")
        check_divisible(self, "num_heads", self.embed_dims, self.num_heads, "embed_dims")
        if self.sr_ratios[-1] != 1:
            raise config_error(
                self, "sr_ratios", "the last stage carries the class token and cannot reduce: set sr_ratios[-1] = 1"
            )


class Block(FeedForwardBlock):
    """Pre-norm block: x + drop_path(sr_attn(norm1(x))), then the residual feed-forward (MLP or locality)."""

    def __init__(self, cfg: PVTConfig, index: int, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dims[index]
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = TokenAttention(
            dim, cfg.num_heads[index], cfg.qkv_bias, "q_kv", cfg.sr_ratios[index], cfg.attn_drop_rate, cfg.drop_rate
        )
        self.drop_path1 = DropPath(drop_path)
        self.init_feed_forward(dim, cfg.mlp_ratios[index], cfg.locality, cfg.drop_rate, drop_path, EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), hw))
        return self.feed_forward(x, hw, num_prefix)


class PVTStage(nn.Module):
    """Patch embedding -> (+ class token) + position embedding -> blocks; tokens out."""

    def __init__(self, cfg: PVTConfig, index: int, drop_paths: list[float], cls_token: bool) -> None:
        super().__init__()
        dim_in = cfg.in_chans if index == 0 else cfg.embed_dims[index - 1]
        patch = cfg.patch_size if index == 0 else 2
        self.patch_embed = PatchEmbed(dim_in, cfg.embed_dims[index], patch, norm=True)  # eps 1e-5, as the official
        self.grid = (cfg.img_size // (cfg.patch_size * 2**index),) * 2
        self.num_prefix = int(cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + self.grid[0] ** 2, cfg.embed_dims[index]))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = Blocks(Block(cfg, index, dp) for dp in drop_paths)

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) map -> the stage's (B, D, H/p, W/p) map; with the class token `cls` (the last
        stage), its (B, 1 + N, D) tokens instead. A map out makes `stages.{i}` the feature map in FX."""
        x, hw = map_to_tokens(self.patch_embed(x))  # (B, N, D)
        if cls is not None:
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid, hw, self.num_prefix, "bilinear"))
        x = self.blocks(x, hw, self.num_prefix)
        return x if cls is not None else tokens_to_map(x, hw, 0)  # (B, D, H/p, W/p)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """The (H, W) token grid this stage makes from the (B, C, H, W) map `x`."""
        p = self.patch_embed.patch
        return x.shape[2] // p, x.shape[3] // p


class PVT(TokenModel):
    """PVT v1 / LocalViT-PVT classifier; `forward_intermediates` gives the four stages' NCHW maps."""

    def __init__(self, cfg: PVTConfig) -> None:
        super().__init__()
        n = len(cfg.depths)
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size * 2 ** (n - 1)
        drops = per_stage(drop_path_rates(cfg.drop_path_rate, cfg.depths), cfg.depths)
        self.stages = nn.ModuleList(PVTStage(cfg, i, drops[i], i == n - 1) for i in range(n))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dims[-1]))
        self.norm = nn.LayerNorm(cfg.embed_dims[-1], eps=EPS)
        self.head = ClassifierHead(cfg.embed_dims[-1], cfg.num_classes, cfg.drop_rate, pool="token")
        self.feature_info = stage_feature_info(cfg.embed_dims, [cfg.patch_size * 2**i for i in range(n)])
        init_token_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, 1 + H/32 * W/32, D) normalised last-stage tokens, the class token first."""
        x = self.check_input(x)
        for stage in self.stages[:-1]:
            x = stage(x)  # (B, C, H, W)
        return self.norm(self.stages[-1](x, self.cls_token))

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-stage NCHW maps; `norm` applies the final norm to the last stage's."""
        x = self.check_input(x)
        n = len(self.stages)
        feats = []
        for i in range(min(last + 1, n - 1)):
            x = self.stages[i](x)  # (B, C, H, W)
            if i in take:
                feats.append(x)
        if last < n - 1:
            return x, feats
        hw = self.stages[-1].token_grid(x)
        x = self.stages[-1](x, self.cls_token)  # (B, 1 + N, D)
        if n - 1 in take:
            feats.append(tokens_to_map(self.norm(x) if norm else x, hw, 1))
        return self.norm(x), feats


# Variants: PVT-Tiny (no pretrained tag; params/GMACs computed from the official code). LocalViT-PVT is in localvit.py.
VARIANTS: dict[str, Variant] = {"pvt_tiny": Variant(PVTConfig(), params_m=13.23, gmacs=1.93)}
