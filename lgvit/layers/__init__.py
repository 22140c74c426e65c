"""Layers shared by every family: written once here."""

from .act import GELU, GELUTanh
from .attention import WindowAttention, attend, math_attention, math_attention_enabled
from .conv import Conv2dSame, FusedMBConv, SqueezeExcite, avg_pool_same, same_padding
from .drop import DropPath, drop_path_rates, per_stage
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
    "GELU",
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
    "per_stage",
    "feature_indices",
    "grid_partition",
    "grid_reverse",
    "math_attention",
    "math_attention_enabled",
    "pad_to_multiple",
    "relative_position_index",
    "resize_rel_pos_table",
    "same_padding",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]
