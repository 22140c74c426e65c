"""Swin and LocalViT-Swin checkpoint layouts: official microsoft / ofsoundof, timm `swin_*` <-> lgvit.

lgvit keys: `stem.{proj,norm}`, `stages.i.downsample.{norm,reduction}` (stage i >= 1),
`stages.i.blocks.j.{norm1,attn.qkv,attn.rel_pos.relative_position_bias_table,attn.proj,norm2,mlp.fc1,mlp.fc2}`
(LocalViT-Swin: `locality.*` in place of `norm2`/`mlp`), `stages.{last}.norm`, `head.fc`.

- timm: `patch_embed`, `layers.i`, `attn.relative_position_bias_table`, final `norm`; downsample already at the
  start of stage i+1.
- official: as timm, but `layers.i.downsample` is the merge at the *end* of layer i (lgvit's stage i+1) and the
  classifier is `head`; LocalViT-Swin's locality feed-forward is each block's `conv.conv.{i}` (see `localvit.py`).
Both may store `relative_position_index` and `attn_mask` buffers: they are dropped (lgvit rebuilds them at run time).
"""

import torch

from ..layers import shifted_window_mask
from .common import CheckpointError, StateDict, add_relative_position_index, bias_tables, rename, stage_count
from .localvit import locality_to_lgvit, locality_to_official

_BUFFERS = ("relative_position_index", "attn_mask")


class SwinConverter:
    """The `Converter` of Swin and LocalViT-Swin: 'official' (microsoft, ofsoundof), 'timm' or 'lgvit'."""

    def detect(self, sd: StateDict) -> str:
        if "patch_embed.proj.weight" in sd and any(k.startswith("layers.") for k in sd):
            # official checkpoints merge at the end of layer 0; timm's layer 0 never merges
            return "official" if any(k.startswith("layers.0.downsample.") for k in sd) else "timm"
        if "stem.proj.weight" in sd and any(k.startswith("stages.") for k in sd):
            return "lgvit"
        raise CheckpointError(f"not a Swin checkpoint (first keys: {list(sd)[:5]})")

    def to_lgvit(self, sd: StateDict, fmt: str) -> StateDict:
        if fmt == "lgvit":  # lgvit before Dec 2026 named LocalViT-Swin's locality module `ffn`
            return rename(sd, [(r"\.ffn\.", ".locality.")], drop=_BUFFERS)
        last = stage_count(sd, "layers.") - 1
        rules = [
            (r"^patch_embed\.", "stem."),
            (r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + (fmt == 'official')}.downsample."),
            (r"^layers\.", "stages."),
            (r"attn\.relative_position_bias_table$", "attn.rel_pos.relative_position_bias_table"),
            (r"^norm\.", f"stages.{last}.norm."),
        ]
        if fmt == "official":
            rules.append((r"^head\.", "head.fc."))
        return locality_to_lgvit(rename(sd, rules, drop=_BUFFERS))

    def to_official(self, sd: StateDict, img_size: int | None = None) -> StateDict:
        """The microsoft layout of an lgvit state dict, with the `relative_position_index` and `attn_mask` buffers.

        The official model stores each shifted block's mask for its build resolution: `img_size`, by default
        32 x window (224 for window 7, 384 for window 12, as the official releases pair them).
        """
        last = stage_count(sd, "stages.") - 1
        rules = [
            (r"^stem\.", "patch_embed."),
            (r"^stages\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample."),
            (rf"^stages\.{last}\.norm\.", "norm."),
            (r"^stages\.", "layers."),
            (r"attn\.rel_pos\.relative_position_bias_table$", "attn.relative_position_bias_table"),
            (r"^head\.fc\.", "head."),
        ]
        out = add_relative_position_index(rename(locality_to_official(sd), rules))
        for key, window in list(bias_tables(out)):
            stage, block = (int(p) for p in key.split(".")[1:4:2])  # layers.{stage}.blocks.{block}
            res = (img_size or 32 * window) // 2 ** (stage + 2)
            if block % 2 and res > window:
                mask = shifted_window_mask((res, res), (window, window), (window // 2,) * 2, torch.device("cpu"))
                out[key.removesuffix("attn.relative_position_bias_table") + "attn_mask"] = mask.clone()
        return out


CONVERTER = SwinConverter()
