"""What a family's table holds, as data: each variant's config, official figures and pretrained tags.

A family file ends with `VARIANTS: dict[str, Variant]`; the registry reads those tables. Adding a
variant is one entry there.
"""

from dataclasses import dataclass, field, replace

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .base import ClassifierConfig


@dataclass(frozen=True)
class PretrainedTag:
    """Where a checkpoint lives and how its evaluation images are prepared.

    A tag on a hub is fetched with huggingface_hub (`hf_hub_id`, optional `filename`); one
    that is only on the web (`url`) must be downloaded by hand and given as a path.
    """

    hf_hub_id: str | None = None
    filename: str | None = None
    url: str | None = None
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    crop_mode: str = "center"
    license: str = ""


@dataclass(frozen=True)
class Variant:
    """One variant of a family: its config, pretrained tags (the first is the default) and the official figures."""

    config: ClassifierConfig  # the family's config; its class tells the registry the family
    tags: dict[str, PretrainedTag] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    params_m: float | None = None  # official parameter count (M)
    gmacs: float | None = None  # official GMACs at the native resolution
    native_size: int = 224
    timm_name: str | None = None  # timm's model of the same architecture, the reference in tests and bench

    @property
    def default_tag(self) -> str | None:
        return next(iter(self.tags), None)


def small_variant(cfg: ClassifierConfig) -> Variant:
    """One of lgvit's own configs for 28-32 px images (the Fashion-MNIST comparisons): `cfg` with 1 channel,
    10 classes and no drop-path, native size 28; no official figures or weights."""
    return Variant(replace(cfg, in_chans=1, num_classes=10, drop_path_rate=0.0), native_size=28)
