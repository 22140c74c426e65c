"""MaxViT checkpoint layouts: timm's `maxvit_*_tf_*` <-> lgvit.

There is no PyTorch checkpoint from the authors (they released TensorFlow ones), so the
"official" layout here is timm's port of them, the one on the hub as `timm/maxvit_*_tf_*`.
lgvit keeps timm's key names; only the relative-position tables differ:

- timm (`RelPosBiasTf`, as TensorFlow): [heads, 2h-1, 2w-1], entry [n, a, b] is the bias for a
  key (a - h + 1, b - w + 1) rows/columns *after* the query;
- lgvit (`RelPosBias`, as Swin): [(2h-1)(2w-1), heads], row (a, b) is the bias for a query
  (a - h + 1, b - w + 1) *after* the key.

So one is the other flipped along both offset axes, flattened and transposed.
"""

import math

import torch

from .common import CheckpointError, StateDict

_TABLE = "relative_position_bias_table"


def table_to_lgvit(table: torch.Tensor) -> torch.Tensor:
    """[heads, 2h-1, 2w-1] (key minus query) -> [(2h-1)(2w-1), heads] (query minus key)."""
    return table.flip(1, 2).flatten(1).T.contiguous()


def table_to_timm(table: torch.Tensor) -> torch.Tensor:
    """Inverse of `table_to_lgvit` for a square window."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0]:
        raise ValueError(f"bias table of {table.shape[0]} rows is not square; give its window explicitly")
    return table.T.reshape(table.shape[1], side, side).flip(1, 2).contiguous()


class MaxViTConverter:
    """The `Converter` of MaxViT: 'timm' (3-D bias tables) or 'lgvit' (2-D)."""

    def detect(self, sd: StateDict) -> str:
        tables = [v for k, v in sd.items() if k.endswith(_TABLE)]
        if "stem.conv1.weight" in sd and any(".attn_grid." in k for k in sd) and tables:
            if all(t.ndim == 3 for t in tables):
                return "timm"
            if all(t.ndim == 2 for t in tables):
                return "lgvit"
        raise CheckpointError(f"not a MaxViT checkpoint in timm's or lgvit's layout (first keys: {list(sd)[:5]})")

    def to_lgvit(self, sd: StateDict, fmt: str) -> StateDict:
        if fmt == "lgvit":
            return dict(sd)
        return {k: table_to_lgvit(v) if k.endswith(_TABLE) else v for k, v in sd.items()}

    def to_official(self, sd: StateDict) -> StateDict:
        """timm's layout of an lgvit state dict (loads strictly into timm's `maxvit_*_tf_*`)."""
        return {k: table_to_timm(v) if k.endswith(_TABLE) else v for k, v in sd.items()}


CONVERTER = MaxViTConverter()
