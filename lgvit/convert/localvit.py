"""Checkpoint layouts of the LocalViT bases: official (ofsoundof/LocalViT, DeiT, PVT, TNT; timm's deit) <-> lgvit.

The official locality feed-forward is one `conv.conv` nn.Sequential whose indices depend on the
activation: 0 1x1, 1 BN, (2 act), 3 dw3x3, 4 BN, (5 act), 6 SE/ECA if any, then 1x1 and BN.
lgvit names them `locality.conv1, bn1, conv2, bn2, attn, conv3, bn3`; the SE's Linear weights
become 1x1 convs (`attn.fc1/fc2`). Per base, a `LocalViTConverter` of regex rules around that map:
- DeiT / LocalViT-T/S (`VIT`): identical but for `head` -> `head.fc` (timm's deit layout too);
- PVT (`PVT`): `patch_embed{k}`, `pos_embed{k}`, `block{k}` -> `stages.{k-1}.patch_embed/pos_embed/blocks`;
- TNT (`TNT`): the outer MLP's `norm_mlp` -> `norm2`;
- Swin: Swin's own converter (`swin.py`) around the same locality map (`locality_to_lgvit`/`_official`).
`to_lgvit` leaves keys already in lgvit's layout unchanged, so both layouts load.
"""

import re
from dataclasses import dataclass

from .common import CheckpointError, Rule, StateDict, conv_to_linear, linear_to_conv, rename

_WITH_ATTN = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "attn", "7": "conv3", "8": "bn3"}
_NO_ATTN = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
_SE_OFFICIAL = r"conv\.conv\.6\.fc\.[02]\.weight$"


def _official_has_attn(sd: StateDict) -> bool:
    return any(re.search(r"\bconv\.conv\.6\.(fc|conv)\.", k) for k in sd)


def locality_to_lgvit(sd: StateDict) -> StateDict:
    """Official `*.conv.conv.{i}.*` keys -> lgvit `*.locality.{layer}.*`; other keys unchanged."""
    names = _WITH_ATTN if _official_has_attn(sd) else _NO_ATTN
    rules: list[Rule] = [
        (r"\bconv\.conv\.(\d+)\.", lambda m: f"locality.{names[m.group(1)]}."),
        (r"\blocality\.attn\.fc\.0\.", "locality.attn.fc1."),
        (r"\blocality\.attn\.fc\.2\.", "locality.attn.fc2."),
    ]
    return linear_to_conv(rename(sd, rules), r"\blocality\.attn\.fc[12]\.weight$")


def locality_to_official(sd: StateDict) -> StateDict:
    """Inverse of `locality_to_lgvit`."""
    names = _WITH_ATTN if any(".locality.attn." in k for k in sd) else _NO_ATTN
    index = {v: k for k, v in names.items()}
    rules: list[Rule] = [
        (r"\blocality\.attn\.fc1\.", "locality.attn.fc.0."),
        (r"\blocality\.attn\.fc2\.", "locality.attn.fc.2."),
        (r"\blocality\.(conv[123]|bn[123]|attn)\.", lambda m: f"conv.conv.{index[m.group(1)]}."),
    ]
    return conv_to_linear(rename(sd, rules), _SE_OFFICIAL)


@dataclass(frozen=True)
class LocalViTConverter:
    """The `Converter` of a token base (DeiT, PVT, TNT) and its LocalViT form: regex rules each way around
    the locality map."""

    name: str
    marker: str  # a key every checkpoint of this base has, in either layout
    official_marker: str  # a key only the official layout has
    to_lgvit_rules: tuple[Rule, ...]
    to_official_rules: tuple[Rule, ...]

    def detect(self, sd: StateDict) -> str:
        """'official' or 'lgvit'; a checkpoint of another model raises."""
        if self.official_marker in sd or any(re.search(r"\bconv\.conv\.0\.weight$", k) for k in sd):
            return "official"
        if self.marker in sd:
            return "lgvit"
        raise CheckpointError(f"not a {self.name} checkpoint: no {self.marker!r} (first keys: {list(sd)[:5]})")

    def to_lgvit(self, sd: StateDict, fmt: str) -> StateDict:
        return sd if fmt == "lgvit" else locality_to_lgvit(rename(sd, self.to_lgvit_rules))

    def to_official(self, sd: StateDict) -> StateDict:
        return rename(locality_to_official(sd), self.to_official_rules)


_HEAD = (r"^head\.(weight|bias)$", r"head.fc.\1")
_HEAD_BACK = (r"^head\.fc\.", "head.")

VIT = LocalViTConverter("DeiT/LocalViT", "patch_embed.proj.weight", "head.weight", (_HEAD,), (_HEAD_BACK,))
PVT = LocalViTConverter(
    "PVT/LocalViT-PVT",
    "stages.0.patch_embed.proj.weight",
    "patch_embed1.proj.weight",
    (
        (r"^(patch_embed|pos_embed|block)(\d)", lambda m: f"stages.{int(m.group(2)) - 1}.{m.group(1)}"),
        (r"^(stages\.\d\.)block\.", r"\1blocks."),
        _HEAD,
    ),
    (
        (r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m.group(1)) + 1}."),
        (r"^stages\.(\d)\.(patch_embed|pos_embed)", lambda m: f"{m.group(2)}{int(m.group(1)) + 1}"),
        _HEAD_BACK,
    ),
)
TNT = LocalViTConverter(
    "TNT/LocalViT-TNT",
    "pixel_embed.proj.weight",
    "head.weight",
    ((r"\.norm_mlp\.", ".norm2."), _HEAD),
    ((r"\.norm2\.", ".norm_mlp."), _HEAD_BACK),
)
