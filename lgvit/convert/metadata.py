"""What an lgvit safetensors file says about its weights, as string metadata beside the tensors.

Keys: `format` ('lgvit'), `model` (the registered name), `config_overrides` (JSON: the config fields
that differ from the model's registered config, so `create_model(name, pretrained=file)` rebuilds
the same model), `pretrained_cfg` (JSON: input_size, mean, std, crop_pct, interpolation, crop_mode),
`label_names` (JSON list, when known) and `source` (where the weights came from, e.g. which of a
training checkpoint's weights).
"""

import dataclasses
import json
from typing import Any

from ..layers import Locality
from .common import CheckpointError

PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")
_TYPES = {"Locality": Locality}  # the dataclasses a config field may hold


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and type(value).__name__ in _TYPES:
        return {"__type__": type(value).__name__, **_encode(dataclasses.asdict(value))}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    """JSON back to config values: lists become tuples, tagged objects their dataclass."""
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        fields = {k: _decode(v) for k, v in value.items() if k != "__type__"}
        kind = value.get("__type__")
        return _TYPES[kind](**fields) if kind in _TYPES else fields
    return value


def encode(
    model: str, overrides: dict, pretrained_cfg: dict, label_names: list[str] | None, source: str | None
) -> dict[str, str]:
    """The safetensors metadata of a model's weights."""
    meta = {
        "format": "lgvit",
        "model": model,
        "config_overrides": json.dumps(_encode(overrides)),
        "pretrained_cfg": json.dumps(_encode({k: pretrained_cfg.get(k) for k in PREPROCESSING})),
    }
    if label_names is not None:
        meta["label_names"] = json.dumps(list(label_names))
    if source:
        meta["source"] = source
    return meta


def decode(meta: dict[str, str] | None) -> dict[str, Any]:
    """`encode`'s fields back as values ({} for a file without lgvit metadata); a malformed field raises."""
    out: dict[str, Any] = {}
    for key, value in (meta or {}).items():
        if key in ("config_overrides", "pretrained_cfg", "label_names"):
            try:
                out[key] = _decode(json.loads(value))
            except (json.JSONDecodeError, TypeError) as e:
                raise CheckpointError(
                    f"the file's lgvit metadata {key!r} is malformed ({e}): save or convert the weights again"
                ) from e
        else:
            out[key] = value
    if "label_names" in out:
        out["label_names"] = list(out["label_names"])
    return out
