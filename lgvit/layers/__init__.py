"""Layers shared by every family, each written once: attention, windows, biases, convs, heads, blocks.

This room imports nothing of lgvit's: the models build on it, never the other way round.
"""

from .act import GELU, GELUTanh
from .attention import TokenAttention, WindowAttention, attend, math_attention, math_attention_enabled
from .blocks import Blocks
from .conv import (
    ChannelsLastConv2d,
    Conv2dSame,
    FusedMBConv,
    PointwiseConv2d,
    ShortMapConv2d,
    SqueezeExcite,
    avg_pool_same,
    same_padding,
)
from .drop import DropPath, drop_path_rates, per_stage
from .embed import PatchEmbed
from .head import ClassifierHead, feature_indices
from .locality import FeedForwardBlock, Locality, LocalityFeedForward
from .mlp import LayerScale, Mlp
from .norm import LayerNorm2d
from .pos_bias import RelPosBias, relative_position_index, resize_rel_pos_table
from .tokens import map_to_tokens, merge_heads, resize_pos_embed, split_heads, tokens_to_map
from .window import (
    Size2,
    cached,
    channels_first,
    concrete,
    fit_window,
    grid_partition,
    grid_reverse,
    pad_to_multiple,
    padding_mask,
    shifted_window_mask,
    tracing,
    window_partition,
    window_reverse,
)

__all__ = [
    "Blocks",
    "ChannelsLastConv2d",
    "ClassifierHead",
    "Conv2dSame",
    "DropPath",
    "FeedForwardBlock",
    "FusedMBConv",
    "PointwiseConv2d",
    "ShortMapConv2d",
    "GELU",
    "GELUTanh",
    "LayerNorm2d",
    "LayerScale",
    "Locality",
    "LocalityFeedForward",
    "Mlp",
    "PatchEmbed",
    "RelPosBias",
    "Size2",
    "SqueezeExcite",
    "TokenAttention",
    "WindowAttention",
    "attend",
    "avg_pool_same",
    "drop_path_rates",
    "feature_indices",
    "cached",
    "concrete",
    "grid_partition",
    "grid_reverse",
    "map_to_tokens",
    "math_attention",
    "math_attention_enabled",
    "merge_heads",
    "pad_to_multiple",
    "padding_mask",
    "per_stage",
    "relative_position_index",
    "resize_pos_embed",
    "resize_rel_pos_table",
    "same_padding",
    "fit_window",
    "shifted_window_mask",
    "split_heads",
    "tokens_to_map",
    "tracing",
    "channels_first",
    "window_partition",
    "window_reverse",
]
