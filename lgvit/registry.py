"""Model registry: variants are data (a family's config + pretrained tags), looked up by name."""

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .constants import IMAGENET_MEAN, IMAGENET_STD


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
class ModelSpec:
    """One registered variant: its family, config, pretrained tags and the official figures."""

    name: str
    family: str
    config: object
    tags: dict[str, PretrainedTag] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    params_m: float | None = None  # official parameter count (M)
    gmacs: float | None = None  # official GMACs at the native resolution
    native_size: int = 224
    timm_name: str | None = None  # timm's model of the same architecture, the reference in tests and bench

    @property
    def default_tag(self) -> str | None:
        return next(iter(self.tags), None)


@dataclass(frozen=True)
class Family:
    """A model family: its model class and its checkpoint converter module."""

    name: str
    builder: Callable[[object], nn.Module]
    converter: object  # module with detect(keys), to_lgvit(sd, fmt), to_official(sd)


MODELS: dict[str, ModelSpec] = {}
ALIASES: dict[str, str] = {}
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    FAMILIES[family.name] = family


def register(spec: ModelSpec) -> ModelSpec:
    """Adds a variant; a name or alias that is already taken raises."""
    for name in (spec.name, *spec.aliases):
        if name in MODELS or name in ALIASES:
            raise ValueError(f"model name {name!r} is already registered")
    MODELS[spec.name] = spec
    ALIASES.update({a: spec.name for a in spec.aliases})
    return spec


def register_small(name: str, family: str, cfg: object) -> ModelSpec:
    """Registers one of lgvit's own configs for 28-32 px images (the Fashion-MNIST comparisons):
    `cfg` with 1 channel, 10 classes and no drop-path, native size 28; no official figures or weights."""
    small = dataclasses.replace(cfg, in_chans=1, num_classes=10, drop_path_rate=0.0)
    return register(ModelSpec(name, family, small, native_size=28))


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


def get_spec(name: str) -> ModelSpec:
    """The spec of a model name or alias; unknown names raise with the closest valid names."""
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise KeyError(
            f"unknown model {name!r}{_suggest(name, list(MODELS) + list(ALIASES))} (see lgvit.list_models())"
        )
    return MODELS[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted, optionally filtered by a shell-style pattern (`'gcvit_*'`)."""
    names = sorted(MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def build_config(spec: ModelSpec, overrides: dict) -> object:
    """The spec's config with `overrides` applied; an unknown key raises with the closest valid keys."""
    valid = [f.name for f in dataclasses.fields(spec.config)]
    for key in overrides:
        if key not in valid:
            raise TypeError(
                f"{spec.name} has no config option {key!r}{_suggest(key, valid)} (valid: {', '.join(valid)})"
            )
    return dataclasses.replace(spec.config, **overrides)

