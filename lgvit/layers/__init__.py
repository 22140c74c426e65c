"""Layers shared by every family: written once here."""

from .attention import WindowAttention, attend, math_attention
from .conv import Conv2dSame, FusedMBConv, GELUTanh, SqueezeExcite, avg_pool_same, same_padding
from .drop import DropPath, drop_path_rates
from .head import ClassifierHead, feature_indices
from .mlp import LayerScale, Mlp
from .norm import LayerNorm2d
from .pos_bias import RelPosBias, relative_position_index, resize_rel_pos_table
from .window import (
    grid_partition,
    grid_reverse,
    pad_to_multiple,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "ClassifierHead",
    "Conv2dSame",
    "DropPath",
    "FusedMBConv",
    "GELUTanh",
    "LayerNorm2d",
    "LayerScale",
    "Mlp",
    "RelPosBias",
    "SqueezeExcite",
    "WindowAttention",
    "attend",
    "avg_pool_same",
    "drop_path_rates",
    "feature_indices",
    "grid_partition",
    "grid_reverse",
    "math_attention",
    "pad_to_multiple",
    "relative_position_index",
    "resize_rel_pos_table",
    "same_padding",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]
