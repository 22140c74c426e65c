"""Swin checkpoint layouts: official microsoft, timm `swin_*` <-> lgvit.

lgvit keys: `stem.{proj,norm}`, `stages.i.downsample.{norm,reduction}` (stage i >= 1),
`stages.i.blocks.j.{norm1,attn.qkv,attn.rel_pos.relative_position_bias_table,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`stages.{last}.norm`, `head.fc`.

- timm: `patch_embed`, `layers.i`, `attn.relative_position_bias_table`, final `norm`; downsample already at the
  start of stage i+1.
- official: as timm, but `layers.i.downsample` is the merge at the *end* of layer i (lgvit's stage i+1) and the
  classifier is `head`.
Both may store `relative_position_index` and `attn_mask` buffers: they are dropped (lgvit rebuilds them at run time).
"""

import torch

from ..layers import relative_position_index, shifted_window_mask
from .common import CheckpointError, rename, stage_count

_BUFFERS = ("relative_position_index", "attn_mask")


def detect(sd: dict[str, torch.Tensor]) -> str:
    """'official' (microsoft), 'timm' or 'lgvit'; anything else raises."""
    if "patch_embed.proj.weight" in sd and any(k.startswith("layers.") for k in sd):
        # official checkpoints merge at the end of layer 0; timm's layer 0 never merges
        return "official" if any(k.startswith("layers.0.downsample.") for k in sd) else "timm"
    if "stem.proj.weight" in sd and any(k.startswith("stages.") for k in sd):
        return "lgvit"
    raise CheckpointError(f"not a Swin checkpoint (first keys: {list(sd)[:5]})")


def to_lgvit(sd: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "lgvit":
        return rename(sd, [], drop=_BUFFERS)
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
    return rename(sd, rules, drop=_BUFFERS)


def to_official(sd: dict[str, torch.Tensor], img_size: int | None = None) -> dict[str, torch.Tensor]:
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
    out = rename(sd, rules)
    for key in [k for k in out if k.endswith("attn.relative_position_bias_table")]:
        window = (int(out[key].shape[0] ** 0.5) + 1) // 2
        out[key.replace("bias_table", "index")] = relative_position_index((window, window)).clone()
        stage, block = (int(p) for p in key.split(".")[1:4:2])  # layers.{stage}.blocks.{block}
        res = (img_size or 32 * window) // 2 ** (stage + 2)
        if block % 2 and res > window:
            mask = shifted_window_mask((res, res), (window, window), (window // 2,) * 2, torch.device("cpu"))
            out[key.removesuffix("attn.relative_position_bias_table") + "attn_mask"] = mask.clone()
    return out
