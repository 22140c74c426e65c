"""Layers shared by every family: written once here."""

from .attention import WindowAttention, attend, math_attention
from .conv import FusedMBConv, SqueezeExcite
from .drop import DropPath, drop_path_rates
from .head import ClassifierHead, feature_indices
from .mlp import LayerScale, Mlp
from .norm import LayerNorm2d
from .pos_bias import RelPosBias, relative_position_index, resize_rel_pos_table
from .window import pad_to_multiple, window_partition, window_reverse

__all__ = [
    "ClassifierHead",
    "DropPath",
    "FusedMBConv",
    "LayerNorm2d",
    "LayerScale",
    "Mlp",
    "RelPosBias",
    "SqueezeExcite",
    "WindowAttention",
    "attend",
    "drop_path_rates",
    "feature_indices",
    "math_attention",
    "pad_to_multiple",
    "relative_position_index",
    "resize_rel_pos_table",
    "window_partition",
    "window_reverse",
]
