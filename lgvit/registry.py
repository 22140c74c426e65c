"""The model registry: every family's table of variants, assembled here and looked up by name.

Nothing registers itself on import. A family is one line of `FAMILIES` (its config class, model
class and checkpoint converter); its variants are the `VARIANTS` table at the end of its model
file, read by `_TABLES`. A variant belongs to the family whose config class its config is.
"""

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from .convert import Converter
from .convert import gcvit as gcvit_keys
from .convert import localvit as localvit_keys
from .convert import maxvit as maxvit_keys
from .convert import swin as swin_keys
from .models import gcvit, localvit, maxvit, pvt, swin, tnt, vit
from .models.base import ClassifierConfig
from .models.spec import Variant


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Variant):
    """A variant as the registry knows it: the variant's data, its name and its family."""

    name: str
    family: str


@dataclass(frozen=True)
class Family:
    """A model family: the config class that marks its variants, its model class and its checkpoint converter."""

    name: str
    config: type[ClassifierConfig]
    builder: Callable[[ClassifierConfig], nn.Module]
    converter: Converter


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gcvit", gcvit.GCViTConfig, gcvit.GCViT, gcvit_keys.CONVERTER),
        Family("swin", swin.SwinConfig, swin.Swin, swin_keys.CONVERTER),
        Family("maxvit", maxvit.MaxViTConfig, maxvit.MaxViT, maxvit_keys.CONVERTER),
        Family("vit", vit.ViTConfig, vit.VisionTransformer, localvit_keys.VIT),
        Family("pvt", pvt.PVTConfig, pvt.PVT, localvit_keys.PVT),
        Family("tnt", tnt.TNTConfig, tnt.TNT, localvit_keys.TNT),
    )
}
_TABLES = (gcvit.VARIANTS, swin.VARIANTS, maxvit.VARIANTS, vit.VARIANTS, pvt.VARIANTS, tnt.VARIANTS, localvit.VARIANTS)


def _assemble(tables: Iterable[dict[str, Variant]]) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The specs by name and the aliases of `tables`; a name or alias given twice raises."""
    family_of = {f.config: f.name for f in FAMILIES.values()}
    models: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for table in tables:
        for name, variant in table.items():
            for taken in (name, *variant.aliases):
                if taken in models or taken in aliases:
                    raise ValueError(f"model name {taken!r} is defined twice")
            models[name] = ModelSpec(**vars(variant), name=name, family=family_of[type(variant.config)])
            aliases.update(dict.fromkeys(variant.aliases, name))
    return models, aliases


MODELS, ALIASES = _assemble(_TABLES)


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


def get_spec(name: str) -> ModelSpec:
    """The spec of a model name or alias; unknown names raise with the closest valid names."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a str such as 'gcvit_tiny', got {name!r} (see lgvit.list_models())")
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


def build_config(spec: ModelSpec, overrides: dict) -> ClassifierConfig:
    """The spec's config with `overrides` applied; an unknown key raises with the closest valid keys."""
    valid = [f.name for f in dataclasses.fields(spec.config)]
    for key in overrides:
        if key not in valid:
            raise TypeError(
                f"{spec.name} has no config option {key!r}{_suggest(key, valid)} (valid: {', '.join(valid)})"
            )
    return dataclasses.replace(spec.config, **overrides)
