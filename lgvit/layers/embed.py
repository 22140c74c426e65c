"""Patch embedding: the non-overlapping strided conv that turns an image into a map of patch tokens."""

import torch
from torch import nn

from .window import pad_to_multiple, tracing


class PatchEmbed(nn.Module):
    """patch x patch conv, stride patch (`proj`), then an optional LayerNorm (`norm`): image -> NCHW map.

    Sides that are not multiples of the patch are zero-padded at the bottom and right (Swin); the
    token models check their input instead, so they never pad. With `norm` the map is normalised
    over channels and is channels-last in memory.

    Args:
        in_chans: image channels.
        dim: output channels.
        patch: patch side (kernel and stride).
        norm: LayerNorm the patch tokens.
        eps: the LayerNorm's eps.
    """

    def __init__(self, in_chans: int, dim: int, patch: int, norm: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.norm = nn.LayerNorm(dim, eps=eps) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, dim, ceil(H/p), ceil(W/p)) map."""
        x = pad_to_multiple(x.permute(0, 2, 3, 1), (self.patch, self.patch)).permute(0, 3, 1, 2)  # no copy if none
        if tracing():  # traced, a channels-last conv input makes the tracer guard the batch (its memory format)
            x = x.contiguous()
        x = self.proj(x)  # (B, D, H/p, W/p)
        if self.norm is None:
            return x
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, D, H/p, W/p), channels-last in memory
