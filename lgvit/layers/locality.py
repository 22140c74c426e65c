"""LocalViT's locality feed-forward (Li et al., 2021): the transformer MLP as 1x1 -> depth-wise 3x3 -> 1x1 convs.

One module, `LocalityFeedForward`, on an NCHW map, and one way to plug it in: a block that derives
from `FeedForwardBlock` gets the usual pre-norm MLP or, with a `Locality`, this module, for
(B, H, W, C) maps (Swin) and (B, P + H*W, C) token sequences (DeiT, PVT, TNT) alike.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from .conv import PointwiseConv2d, ShortMapConv2d, SqueezeExcite
from .drop import DropPath
from .mlp import LayerScale, Mlp
from .window import channels_first

ACTS = ("relu6", "hs", "hs+se", "hs+eca", "hs+ecah")
ACT_CODES = {1: "relu6", 2: "hs", 3: "hs+se", 4: "hs+eca", 5: "hs+ecah"}  # the official `act=` integers


@dataclass(frozen=True)
class Locality:
    """How a block's feed-forward is made local.

    Args:
        act: 'relu6', 'hs' (h-swish), 'hs+se' (h-swish + squeeze-excite), 'hs+eca' (h-swish + ECA with a
            sigmoid gate) or 'hs+ecah' (ECA with an h-sigmoid gate).
        reduction: SE reduction r (hidden -> hidden // r channels); None: r = the block's width //
            `width_divisor`.
        width_divisor: with no `reduction`: 1 in LocalViT-T/S, -PVT and -TNT (a 4x MLP then has a
            4-channel SE bottleneck), 4 in LocalViT-Swin (16 channels).
    """

    act: str = "hs+se"
    reduction: int | None = None
    width_divisor: int = 1

    def __post_init__(self) -> None:
        if self.act not in ACTS:
            raise ValueError(f"unknown locality act {self.act!r}: use one of {', '.join(ACTS)}")
        if self.reduction is not None and not (isinstance(self.reduction, int) and self.reduction >= 1):
            raise ValueError(f"Locality: reduction={self.reduction!r} is invalid: must be None or an int >= 1")
        if not (isinstance(self.width_divisor, int) and self.width_divisor >= 1):
            raise ValueError(f"Locality: width_divisor={self.width_divisor!r} is invalid: must be an int >= 1")


class ECA(nn.Module):
    """Efficient channel attention: average pool -> 1-D conv across channels -> gate."""

    def __init__(self, channels: int, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        t = int(abs((math.log2(channels) + 1) / 2))
        k = t if t % 2 else t + 1  # odd kernel, as in ECA-Net (gamma 2, b 1)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C)
        s = self.gate(self.conv(s)).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
        return x * s


class LocalityFeedForward(nn.Module):
    """x + BN(1x1(attn(act(BN(dw3x3(act(BN(1x1(x))))))))) on a (B, C, H, W) map; all convs bias-free.

    Args:
        dim: input and output channels.
        mlp_ratio: hidden channels = int(dim * mlp_ratio).
        locality: activation / channel-attention choice and SE reduction.
    """

    def __init__(self, dim: int, mlp_ratio: float, locality: Locality) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        act = nn.Hardswish if locality.act.startswith("hs") else nn.ReLU6
        self.conv1 = PointwiseConv2d(dim, hidden, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = act()
        self.conv2 = ShortMapConv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = act()
        self.attn = _channel_attention(hidden, locality.act, locality.reduction or dim // locality.width_divisor)
        self.conv3 = PointwiseConv2d(hidden, dim, bias=False)
        self.bn3 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return x + self.bn3(self.conv3(self.attn(y)))


def _channel_attention(hidden: int, act: str, reduction: int) -> nn.Module:
    """SE (Linear-like 1x1 convs with bias, ReLU, h-sigmoid), ECA, or nothing."""
    if act == "hs+se":
        if hidden // reduction < 1:
            raise ValueError(f"SE reduction {reduction} leaves no channels of {hidden}: use a reduction <= {hidden}")
        return SqueezeExcite(hidden, hidden // reduction, act=nn.ReLU, gate=nn.Hardsigmoid, bias=True)
    if act in ("hs+eca", "hs+ecah"):
        return ECA(hidden, nn.Sigmoid if act == "hs+eca" else nn.Hardsigmoid)
    return nn.Identity()


class FeedForwardBlock(nn.Module):
    """Base of the blocks whose feed-forward LocalViT makes local (DeiT, PVT, TNT, Swin, GC ViT); blocks call
    `init_feed_forward` and `feed_forward`.

    Without locality: x + drop_path(ls2(mlp(norm2(x)))) (timm's keys `norm2`, `mlp.fc1`, `mlp.fc2`; `ls2` is a
    LayerScale with a `layer_scale`, as in GC ViT-S/B/L, and the identity otherwise).
    With locality (LocalViT): x + locality(x) on the (H, W) map (key `locality`), with no second
    norm and no drop-path on this branch; in a token sequence the first `num_prefix` tokens (the
    class token) pass untouched.
    """

    locality: LocalityFeedForward | None

    def init_feed_forward(
        self,
        dim: int,
        mlp_ratio: float,
        locality: Locality | None,
        drop: float,
        drop_path: float,
        eps: float,
        layer_scale: float | None = None,
    ) -> None:
        self.locality = None if locality is None else LocalityFeedForward(dim, mlp_ratio, locality)
        if locality is None:
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
            self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
            self.drop_path2 = DropPath(drop_path)

    def feed_forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None, num_prefix: int = 0) -> torch.Tensor:
        """A (B, H, W, C) map (no `hw`), or (B, num_prefix + H*W, C) tokens on the grid `hw`, after the residual
        feed-forward."""
        if self.locality is None:
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        if hw is None:  # (B, H, W, C)
            return self.locality(channels_first(x)).permute(0, 2, 3, 1)  # through (B, C, H, W)
        x = check_token_grid(x, hw, num_prefix)
        B, _, C = x.shape
        prefix, patches = x[:, :num_prefix], x[:, num_prefix:]  # (B, P, C), (B, H*W, C)
        patches = patches.transpose(1, 2).reshape(B, C, hw[0], hw[1])  # (B, C, H, W)
        patches = self.locality(patches).flatten(2).transpose(1, 2)  # (B, H*W, C)
        return torch.cat([prefix, patches], dim=1)  # (B, P + H*W, C)


def check_token_grid(x: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
    """`x`, or a ValueError unless the (B, n, C) tokens are `num_prefix` prefix tokens and an `hw` map.
    An FX leaf (torch.fx.wrap); under dynamo the sizes are provably equal, so it adds no guard."""
    n = x.shape[1]
    if n != num_prefix + hw[0] * hw[1]:
        raise ValueError(f"{n} tokens do not form {num_prefix} prefix tokens and a {hw[0]}x{hw[1]} map")
    return x


torch.fx.wrap("check_token_grid")
