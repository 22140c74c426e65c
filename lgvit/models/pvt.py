"""PVT v1 (Wang et al., 2021) and LocalViT-PVT: a four-stage pyramid of spatial-reduction attention.

Each stage: patch embedding (strided conv + LN) -> + position embedding -> blocks whose keys and
values come from a map shrunk `sr` times by a strided conv. The last stage prepends a class token
(and never reduces), and the classifier reads it. With `locality` set, every block's MLP is the
locality feed-forward on the stage's patch map; in the last stage the class token bypasses it.

Layout: the official one (whai362/PVT, ofsoundof/LocalViT `pvt.py`) with `patch_embed{k}`,
`pos_embed{k}`, `block{k}` as `stages.{k-1}.*` and `head` as `head.fc`. Any input whose sides are
multiples of 32: each stage's position embedding is resized bilinearly (as PVT's detection code).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..convert import localvit as localvit_convert
from ..layers import ClassifierHead, DropPath, attend, drop_path_rates, per_stage
from ..layers.locality import FeedForwardMixin, Locality
from ..layers.tokens import merge_heads, resize_pos_embed, split_heads
from ..registry import Family, ModelSpec, register, register_family
from .base import stage_feature_info
from .vit import EPS, TokenModel, init_weights, tokens_to_map


@dataclass(frozen=True)
class PVTConfig:
    """PVT hyper-parameters, one entry per stage; `locality=None` gives the plain MLP."""

    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_size: int = 4  # the first stage's; later stages embed 2x2 patches
    img_size: int = 224  # native resolution: the position embeddings' grids
    in_chans: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    locality: Locality | None = None


class SRAttention(nn.Module):
    """Attention whose keys/values come from the (H, W) map reduced `sr` times (conv k=s=sr, then LN)."""

    def __init__(self, dim: int, num_heads: int, sr: int, cfg: PVTConfig) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=cfg.qkv_bias)
        self.attn_drop = cfg.attn_drop_rate
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the official code

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q = split_heads(self.q(x), self.num_heads)  # (B, heads, N, d)
        if hasattr(self, "sr"):
            m = x.transpose(1, 2).reshape(B, C, hw[0], hw[1])  # (B, C, H, W)
            x = self.norm(self.sr(m).flatten(2).transpose(1, 2))  # (B, H*W/sr^2, C)
        k, v = (split_heads(t, self.num_heads) for t in self.kv(x).chunk(2, dim=-1))  # each (B, heads, M, d)
        out = attend(q, k, v, None, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(out)))


class Block(FeedForwardMixin):
    """Pre-norm block: x + drop_path(sr_attn(norm1(x))), then the residual feed-forward (MLP or locality)."""

    def __init__(self, cfg: PVTConfig, index: int, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dims[index]
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = SRAttention(dim, cfg.num_heads[index], cfg.sr_ratios[index], cfg)
        self.drop_path1 = DropPath(drop_path)
        self._init_ffn(dim, cfg.mlp_ratios[index], cfg.locality, cfg.drop_rate, drop_path, EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), hw))
        return self.feed_forward(x, hw, num_prefix)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D) tokens (conv k=s=p, then LN) and the grid."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the official code

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])  # (B, N, D)


class PVTStage(nn.Module):
    """Patch embedding -> (+ class token) + position embedding -> blocks; tokens out."""

    def __init__(self, cfg: PVTConfig, index: int, drop_paths: list[float], cls_token: bool) -> None:
        super().__init__()
        dim_in = cfg.in_chans if index == 0 else cfg.embed_dims[index - 1]
        patch = cfg.patch_size if index == 0 else 2
        self.patch_embed = PatchEmbed(dim_in, cfg.embed_dims[index], patch)
        self.grid = (cfg.img_size // (cfg.patch_size * 2**index),) * 2
        self.num_prefix = int(cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + self.grid[0] ** 2, cfg.embed_dims[index]))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(Block(cfg, index, dp) for dp in drop_paths)

    def forward(
        self, x: torch.Tensor, cls: torch.Tensor | None, run: Callable[..., torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) map -> (B, [1 +] N, D) tokens and their grid; `run(block, *args)` calls a block."""
        x, hw = self.patch_embed(x)  # (B, N, D)
        if cls is not None:
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid, hw, self.num_prefix, "bilinear"))
        for blk in self.blocks:
            x = run(blk, x, hw, self.num_prefix)
        return x, hw


class PVT(TokenModel):
    """PVT v1 / LocalViT-PVT classifier; `forward_intermediates` gives the four stages' NCHW maps."""

    def __init__(self, cfg: PVTConfig) -> None:
        super().__init__()
        n = len(cfg.depths)
        if not len(cfg.embed_dims) == len(cfg.num_heads) == len(cfg.mlp_ratios) == len(cfg.sr_ratios) == n:
            raise ValueError("embed_dims, num_heads, mlp_ratios, sr_ratios and depths need one entry per stage")
        if cfg.sr_ratios[-1] != 1:
            raise ValueError("the last stage carries the class token and cannot reduce: set sr_ratios[-1] = 1")
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size * 2 ** (n - 1)
        drops = per_stage(drop_path_rates(cfg.drop_path_rate, cfg.depths), cfg.depths)
        self.stages = nn.ModuleList(PVTStage(cfg, i, drops[i], i == n - 1) for i in range(n))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dims[-1]))
        self.norm = nn.LayerNorm(cfg.embed_dims[-1], eps=EPS)
        self.head = ClassifierHead(cfg.embed_dims[-1], cfg.num_classes, cfg.drop_rate, pool="token")
        self.feature_info = stage_feature_info(cfg.embed_dims, [cfg.patch_size * 2**i for i in range(n)])
        init_weights(self)

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        last = i == len(self.stages) - 1
        return self.stages[i](x, self.cls_token if last else None, self.run_block)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, 1 + H/32 * W/32, D) normalised last-stage tokens, the class token first."""
        self.check_input(x)
        for i in range(len(self.stages) - 1):
            x, hw = self._stage(i, x)
            x = tokens_to_map(x, hw, 0)  # (B, C, H, W)
        return self.norm(self._stage(len(self.stages) - 1, x)[0])

    def _intermediates(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-stage patch-token maps; `norm` applies the final norm to the last stage's."""
        self.check_input(x)
        n = len(self.stages)
        feats = []
        for i in range(last + 1):
            x, hw = self._stage(i, x)
            if i in take:
                y = self.norm(x) if norm and i == n - 1 else x
                feats.append(tokens_to_map(y, hw, int(i == n - 1)))
            if i < n - 1:
                x = tokens_to_map(x, hw, 0)  # (B, C, H, W)
        return (self.norm(x) if last == n - 1 else x), feats


register_family(Family("pvt", PVT, localvit_convert.pvt))
register(ModelSpec("pvt_tiny", "pvt", PVTConfig(), params_m=13.23, gmacs=1.93))  # computed, official code
