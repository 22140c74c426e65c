"""LocalViT (Li et al., 2021): locality in vision transformers through a depth-wise-conv feed-forward.

Each variant is a base architecture (DeiT `vit.py`, PVT `pvt.py`, TNT `tnt.py`, Swin `swin.py`, and in
lgvit's own `localvit_gcvit_fmnist`, GC ViT `gcvit.py`)
whose config sets `locality`: every block's MLP becomes the one `LocalityFeedForward`
(lgvit/layers/locality.py) on the block's patch-token map, the class token bypassing it. The
official `.pth` releases (ofsoundof/LocalViT v1.0.0, key `model`) load through each base's
converter. Params and GMACs below were computed from the official code.
"""

from dataclasses import replace

from ..layers import Locality
from .gcvit import FMNIST_GCVIT
from .pvt import PVTConfig
from .spec import PretrainedTag, Variant, small_variant
from .swin import SwinConfig
from .tnt import TNTConfig
from .vit import FMNIST_VIT, ViTConfig

_RELEASE = "https://github.com/ofsoundof/LocalViT/releases/download/v1.0.0/"
_LICENSE = "Apache-2.0 (ofsoundof/LocalViT)"
_SE = Locality("hs+se")  # SE reduction = the block's width (a 4-channel bottleneck in a 4x MLP)


def _release(cfg: object, params: float, gmacs: float, filename: str, alias: str = "") -> Variant:
    """A variant whose weights are an official release asset, downloaded by hand and passed as a path;
    `alias` is the official registered name where it differs."""
    tags = {"in1k": PretrainedTag(url=_RELEASE + filename, crop_pct=0.875, license=_LICENSE)}
    return Variant(cfg, tags, (alias,) if alias else (), params, gmacs)


_T = ViTConfig(num_heads=4, locality=Locality("hs+se", 192))
_T_SE4 = replace(_T, locality=Locality("hs+se", 4))
_S = ViTConfig(embed_dim=384, num_heads=8, locality=Locality("hs+se", 384))
_SWIN = SwinConfig(drop_path_rate=0.1, locality=Locality("hs+se", width_divisor=4))  # SE: 16 of each 4x MLP's channels

VARIANTS: dict[str, Variant] = {
    "localvit_tiny": _release(_T, 5.91, 1.27, "localvit_t.pth", "localvit_tiny_mlp4_act3_r192"),
    "localvit_tiny_se4": _release(_T_SE4, 9.38, 1.27, "localvit_t_se4.pth", "localvit_tiny_mlp4_act3_r4"),
    "localvit_small": _release(_S, 22.43, 4.62, "localvit_s.pth", "localvit_small_mlp4_act3_r384"),
    "localvit_pvt_tiny": _release(PVTConfig(locality=_SE), 13.46, 1.98, "localvit_pvt.pth"),
    "localvit_tnt_tiny": _release(
        TNTConfig(locality=_SE), 6.26, 1.42, "localvit_tnt.pth", "localvit_tnt_t_patch16_224"
    ),
    "localvit_swin_tiny": _release(_SWIN, 29.08, 4.54, "localvit_swin.pth", "localvit_swin_tiny_patch4_window7_224"),
    # lgvit's own small LocalViT for 28-32 px images: `deit_fmnist` with the locality feed-forward (SE r=4),
    # so the pair isolates what the depth-wise conv adds. Not an official variant, no pretrained weights.
    "localvit_fmnist": small_variant(replace(FMNIST_VIT, locality=Locality("hs+se", 4))),
    # lgvit's own hybrid: `gcvit_fmnist` with LocalViT's feed-forward (h-swish, no SE) in every block, the
    # `make demo` model (docs/training.md, "The demo"). Not an official variant of either paper.
    "localvit_gcvit_fmnist": small_variant(replace(FMNIST_GCVIT, locality=Locality("hs"))),
}
