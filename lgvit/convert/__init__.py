"""Checkpoint layouts: one converter per family (official and timm layouts <-> lgvit), all on one protocol.

`common.Converter` is the protocol (detect a layout, map its keys to lgvit, map back); each family
module (`gcvit`, `swin`, `maxvit`, `localvit`) implements it as `CONVERTER` (LocalViT: one per base).
`reading` reads torch files without running code (weights-only, a short allow-list); `metadata` is what
an lgvit safetensors file says about its weights. This room imports only `lgvit.layers`; `lgvit.registry`
pairs each family with its converter.
"""

from .common import CheckpointError, Converter

__all__ = ["CheckpointError", "Converter"]
