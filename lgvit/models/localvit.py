"""LocalViT (Li et al., 2021): locality in vision transformers through a depth-wise-conv feed-forward.

Each variant is a base architecture (DeiT `vit.py`, PVT `pvt.py`, TNT `tnt.py`, Swin `swin.py`)
whose config sets `locality`: every block's MLP becomes the one `LocalityFeedForward`
(lgvit/layers/locality.py) on the block's patch-token map, the class token bypassing it. The
official `.pth` releases (ofsoundof/LocalViT v1.0.0, key `model`) load through each base's
converter (lgvit/convert/localvit.py). Params and GMACs below were computed from the official code.
"""

from dataclasses import dataclass, replace

from ..convert.localvit import SwinLocality
from ..layers.locality import Locality, LocalityFeedForwardNHWC
from ..registry import Family, ModelSpec, PretrainedTag, register, register_family, register_small
from .pvt import PVTConfig
from .swin import Swin, SwinConfig
from .tnt import TNTConfig
from .vit import FMNIST_VIT, ViTConfig


@dataclass(frozen=True)
class LocalViTSwinConfig(SwinConfig):
    """Swin with every block's feed-forward made local; stage width d gets SE reduction d // `se_divisor`."""

    act: str = "hs+se"
    se_divisor: int = 4
    drop_path_rate: float = 0.1


def build_localvit_swin(cfg: LocalViTSwinConfig) -> Swin:
    """Swin whose blocks' `ffn` is the locality module on their (B, H, W, C) map (no norm2, no drop-path)."""

    def ffn(dim: int, mlp_ratio: float) -> LocalityFeedForwardNHWC:
        return LocalityFeedForwardNHWC(dim, mlp_ratio, Locality(cfg.act, dim // cfg.se_divisor))

    return Swin(cfg, ffn_layer=ffn)


_RELEASE = "https://github.com/ofsoundof/LocalViT/releases/download/v1.0.0/"
_LICENSE = "Apache-2.0 (ofsoundof/LocalViT)"


def _tag(filename: str, **kw: object) -> dict[str, PretrainedTag]:
    """A release asset: downloaded by hand and passed as a path (official layout)."""
    return {"in1k": PretrainedTag(url=_RELEASE + filename, crop_pct=0.875, license=_LICENSE, **kw)}


def _spec(name: str, family: str, cfg: object, params: float, gmacs: float, filename: str, alias: str = "") -> None:
    """Registers a variant; `alias` is the official registered name where it differs."""
    aliases = (alias,) if alias else ()
    register(ModelSpec(name, family, cfg, _tag(filename), aliases=aliases, params_m=params, gmacs=gmacs))


_DEIT_T = ViTConfig(num_heads=4, locality=Locality("hs+se", 192))
_spec("localvit_tiny", "vit", _DEIT_T, 5.91, 1.27, "localvit_t.pth", "localvit_tiny_mlp4_act3_r192")
_spec(
    "localvit_tiny_se4",
    "vit",
    ViTConfig(num_heads=4, locality=Locality("hs+se", 4)),
    9.38,
    1.27,
    "localvit_t_se4.pth",
    "localvit_tiny_mlp4_act3_r4",
)
_spec(
    "localvit_small",
    "vit",
    ViTConfig(embed_dim=384, num_heads=8, locality=Locality("hs+se", 384)),
    22.43,
    4.62,
    "localvit_s.pth",
    "localvit_small_mlp4_act3_r384",
)
_spec(
    "localvit_pvt_tiny",
    "pvt",
    PVTConfig(locality=Locality("hs+se")),
    13.46,
    1.98,
    "localvit_pvt.pth",
)
_spec(
    "localvit_tnt_tiny",
    "tnt",
    TNTConfig(locality=Locality("hs+se")),
    6.26,
    1.42,
    "localvit_tnt.pth",
    "localvit_tnt_t_patch16_224",
)
register_family(Family("localvit_swin", build_localvit_swin, SwinLocality))
_spec(
    "localvit_swin_tiny",
    "localvit_swin",
    LocalViTSwinConfig(),
    29.08,
    4.54,
    "localvit_swin.pth",
    "localvit_swin_tiny_patch4_window7_224",
)

# lgvit's own small LocalViT for 28-32 px images: `deit_fmnist` with the locality feed-forward (SE r=4),
# so the pair isolates what the depth-wise conv adds. Not an official variant, no pretrained weights.
register_small("localvit_fmnist", "vit", replace(FMNIST_VIT, locality=Locality("hs+se", 4)))
