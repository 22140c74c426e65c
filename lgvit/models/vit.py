"""DeiT (Touvron et al., 2021) and its LocalViT form: a plain ViT with a class token.

The state-dict layout equals timm's `deit_*_patch16_224` (and the official DeiT/LocalViT
`VisionTransformer`) except `head` -> `head.fc`. With `locality` set, every block's MLP is
LocalViT's locality feed-forward on the 14x14 patch map; the class token bypasses it.

Any input size whose sides are multiples of the patch size: the position embedding is
resized bicubically (antialiased, as timm's `dynamic_img_size`), the class-token position kept.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..convert import localvit as localvit_convert
from ..layers import ClassifierHead, DropPath, attend, drop_path_rates
from ..layers.locality import FeedForwardMixin, Locality
from ..layers.tokens import merge_heads, resize_pos_embed, split_heads
from ..registry import Family, ModelSpec, PretrainedTag, register, register_family, register_small
from .base import ClassifierModel, trunc_normal_init

EPS = 1e-6  # DeiT's and LocalViT's LayerNorm eps


@dataclass(frozen=True)
class ViTConfig:
    """DeiT / LocalViT hyper-parameters; `locality=None` gives the plain MLP."""

    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 224  # native resolution: the position embedding's grid
    in_chans: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    locality: Locality | None = None


class TokenModel(ClassifierModel):
    """timm's model interface for token models that classify from a class token (DeiT, PVT, TNT).

    Subclasses set `in_chans`, `patch_size` (the side the input must be a multiple of), `head`
    (ClassifierHead with pool="token"), `feature_info`, `grad_checkpointing`, and implement `forward_features` and
    `forward_intermediates`.
    """

    patch_size: int
    feature_info: list[dict]
    grad_checkpointing: bool = False

    def check_input(self, x: torch.Tensor) -> None:
        """Raises a ValueError naming the problem and the fix for a malformed image batch."""
        self.check_channels(x)
        p, (h, w) = self.patch_size, x.shape[2:]
        if h % p or w % p or min(h, w) == 0:
            near = f"{max(p, round(h / p) * p)}x{max(p, round(w / p) * p)}"
            raise ValueError(
                f"image of {h}x{w}: this model needs sides that are positive multiples of {p}; "
                f"resize or pad the input (e.g. to {near})"
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: norms, biases, tokens and position embeddings."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(("_token", "pos_embed", "_pos"))}

    def run_block(self, block: nn.Module, *args: Any) -> Any:
        """`block(*args)`, through activation checkpointing when it is enabled and gradients are on."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


class BlockStack(TokenModel):
    """A token model that is one stack of blocks (DeiT, TNT): the feature and intermediate passes.

    Subclasses implement `embed(x) -> (state, (H, W))`, where `state` is the tuple of token tensors a
    block takes before the grid and returns (the patch tokens, class token first, last), and set
    `blocks` and `norm`.
    """

    blocks: nn.ModuleList
    norm: nn.Module

    def embed(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, int]]:
        raise NotImplementedError

    def _step(self, block: nn.Module, state: tuple[torch.Tensor, ...], hw: tuple[int, int]) -> tuple:
        out = self.run_block(block, *state, hw)
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


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (`qkv`, `proj`: timm's keys)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))  # each (B, heads, N, d)
        out = attend(q, k, v, None, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(out)))


class Block(FeedForwardMixin):
    """Pre-norm block: x + drop_path(attn(norm1(x))), then the residual feed-forward (MLP or locality)."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=EPS)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.drop_path1 = DropPath(drop_path)
        self._init_ffn(cfg.embed_dim, cfg.mlp_ratio, cfg.locality, cfg.drop_rate, drop_path, EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return self.feed_forward(x, hw, num_prefix=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: (B, C, H, W) -> (B, H/p * W/p, D) and the grid (H/p, W/p)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # (B, N, D)


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
        dpr = drop_path_rates(cfg.drop_path_rate, (cfg.depth,))
        self.blocks = nn.ModuleList(Block(cfg, dp) for dp in dpr)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=EPS)
        self.head = ClassifierHead(cfg.embed_dim, cfg.num_classes, cfg.drop_rate, pool="token")
        self.feature_info = [
            dict(num_chs=cfg.embed_dim, reduction=cfg.patch_size, module=f"blocks.{i}") for i in range(cfg.depth)
        ]
        init_weights(self)

    def embed(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor], tuple[int, int]]:
        """Image -> (B, 1 + N, D) tokens with the class token and position embedding, and the patch grid."""
        self.check_input(x)
        x, hw = self.patch_embed(x)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        return (self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid, hw, 1)),), hw


def tokens_to_map(x: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
    """(B, P + H*W, C) tokens -> (B, C, H, W) map, the P prefix tokens dropped."""
    x = x[:, num_prefix:].reshape(x.shape[0], hw[0], hw[1], -1)  # (B, H, W, C)
    return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def init_weights(model: nn.Module) -> None:
    """The official initialisation: trunc-normal(0.02) Linear weights, tokens and position embeddings; zero biases."""
    for name, p in model.named_parameters():
        if name.endswith(("_token", "pos_embed", "_pos")):
            nn.init.trunc_normal_(p, std=0.02)
    model.apply(trunc_normal_init)


# ---------------------------------------------------------------------------------------------
# Variants: DeiT baselines (timm weights); the LocalViT forms are registered in localvit.py.


def _deit_tag(name: str) -> dict[str, PretrainedTag]:
    return {"in1k": PretrainedTag(hf_hub_id=f"timm/{name}.fb_in1k", crop_pct=0.875, license="Apache-2.0")}


register_family(Family("vit", VisionTransformer, localvit_convert.vit))
register(
    ModelSpec(
        "deit_tiny",
        "vit",
        ViTConfig(),
        _deit_tag("deit_tiny_patch16_224"),
        aliases=("deit_tiny_patch16_224",),
        params_m=5.72,
        gmacs=1.26,
        timm_name="deit_tiny_patch16_224",
    )
)
register(
    ModelSpec(
        "deit_small",
        "vit",
        ViTConfig(embed_dim=384, num_heads=6),
        _deit_tag("deit_small_patch16_224"),
        aliases=("deit_small_patch16_224",),
        params_m=22.05,
        gmacs=4.61,
        timm_name="deit_small_patch16_224",
    )
)

# lgvit's own small DeiT for 28-32 px images, at the compute of `gcvit_fmnist` (about 5 MMACs at 28 px):
# 4x4 patches give 49 tokens + the class token. Not an official variant, no pretrained weights; the
# LocalViT form of it is `localvit_fmnist`.
FMNIST_VIT = ViTConfig(embed_dim=48, depth=4, num_heads=3, mlp_ratio=2.0, patch_size=4, img_size=28)
register_small("deit_fmnist", "vit", FMNIST_VIT)
