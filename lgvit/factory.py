"""Building models and loading their weights: `create_model`, `load_weights`, `read_state_dict`, `save_weights`.

The one module above both the registry (what each name is) and the converters (how each
checkpoint layout maps to lgvit's), so neither needs the other. Loading never unpickles code.
"""

import dataclasses
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .convert import CheckpointError
from .convert.common import table_window
from .files import atomic_write
from .layers import resize_rel_pos_table
from .models.spec import PretrainedTag
from .registry import FAMILIES, ModelSpec, build_config, get_spec

_WRAPPERS = ("state_dict", "model", "module", "model_state", "state_dict_ema", "model_ema")
_HEAD_KEYS = ("head.fc.weight", "head.fc.bias")


@dataclass
class LoadReport:
    source: str
    format: str
    resized: list[str]
    head_reset: bool


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (weights_only), unwrapped from 'model'/'state_dict'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Download or save it again."
        ) from e
    while isinstance(sd, dict) and not _is_tensor_dict(sd):
        inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{path} holds no state dict (top-level keys: {sorted(sd)[:10]})")
        sd = inner
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def resolve_source(source: str, spec: ModelSpec | None = None) -> tuple[str, str]:
    """A local path for `source`: a file, a tag of `spec`, or a hub id ('org/repo[:file]'). Returns (path, label)."""
    if os.path.isfile(source):
        return source, source
    tag = spec.tags.get(source) if spec else None
    if tag is not None and tag.hf_hub_id is None:
        raise CheckpointError(
            f"{spec.name}.{source} is not on a hub: download it from {tag.url} and pass the file path"
        )
    repo, filename = (tag.hf_hub_id, tag.filename) if tag else (source.removeprefix("hf-hub:"), None)
    if ":" in repo:
        repo, filename = repo.split(":", 1)
    if repo.count("/") != 1:
        raise FileNotFoundError(
            f"{source!r} is neither a file, a pretrained tag of this model, nor a hub id 'org/name'"
        )
    return _hub_download(repo, filename), f"hf-hub:{repo}" + (f":{filename}" if filename else "")


def _hub_download(repo: str, filename: str | None) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise CheckpointError(
            f"loading {repo} needs huggingface_hub: pip install 'lgvit[hub]', or pass a local file"
        ) from e
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    errors = []
    for name in names:
        try:
            return hf_hub_download(repo, name)
        except Exception as e:  # noqa: BLE001 - offline, missing file and auth errors all end here
            errors.append(f"{name}: {type(e).__name__}")
    raise CheckpointError(
        f"could not fetch {repo} from the Hugging Face hub ({'; '.join(errors)}). Offline? "
        "Download the file where you have network access and pass its path."
    )


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first-conv weight (out, c, kh, kw) for `in_chans` inputs: summed to one channel, or tiled and rescaled."""
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_chans // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def _fit(
    sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], ignore_head: bool, first_conv: str | None
) -> tuple[list[str], bool]:
    """Resizes bias tables and the first conv's input channels in place, drops a mismatched head when
    allowed; raises on anything else."""
    resized, head_reset = [], False
    for k in list(sd):
        if k not in target or sd[k].shape == target[k].shape:
            continue
        src, dst = table_window(sd[k].shape[0]), table_window(target[k].shape[0])
        if k.endswith("relative_position_bias_table") and src and dst and sd[k].shape[1] == target[k].shape[1]:
            sd[k] = resize_rel_pos_table(sd[k], (src, src), (dst, dst))
            resized.append(k)
        elif k == first_conv and sd[k].shape[0] == target[k].shape[0] and sd[k].shape[2:] == target[k].shape[2:]:
            sd[k] = adapt_input_conv(sd[k], target[k].shape[1])
            resized.append(k)
        elif ignore_head and k in _HEAD_KEYS:
            del sd[k]
            head_reset = True
    missing = sorted(set(target) - set(sd) - (set(_HEAD_KEYS) if head_reset else set()))
    unexpected = sorted(set(sd) - set(target))
    wrong = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(sd) & set(target)
        if sd[k].shape != target[k].shape
    )
    if missing or unexpected or wrong:
        lines = [
            f"{title} ({len(keys)}): " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(
            "checkpoint does not match the model:\n  "
            + "\n  ".join(lines)
            + "\nCheck the model name; pass num_classes=... to train a new head."
        )
    return resized, head_reset


def create_model(name: str, pretrained: bool | str | None = None, **overrides) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a registered name or alias (`lgvit.list_models()`).
        pretrained: None/False for random weights; True for the default tag; a tag name of this
            model (e.g. 'in1k'); a local file (official, timm or lgvit layout); or a hub id.
        **overrides: config fields, e.g. num_classes, in_chans, drop_path_rate, img_size.
            A num_classes different from the checkpoint's gives a new, randomly initialised head;
            without one, a pretrained tag's class count is used.
    """
    spec = get_spec(name)
    tag_name = spec.default_tag if pretrained is True else pretrained
    tag = spec.tags.get(tag_name) if isinstance(tag_name, str) else None
    tag_classes = {"num_classes": tag.num_classes} if tag is not None else {}  # e.g. in22k: 21841
    cfg = build_config(spec, {**tag_classes, **overrides})
    model = FAMILIES[spec.family].builder(cfg)
    model.spec = spec
    model.pretrained_cfg = dataclasses.asdict(tag or spec.tags.get(spec.default_tag) or PretrainedTag())
    if tag_name:
        load_weights(model, tag_name, ignore_head="num_classes" in overrides)
    return model


def load_weights(model: nn.Module, source: str | os.PathLike, ignore_head: bool = False) -> LoadReport:
    """Loads `source` (file, tag of the model, or hub id) into `model`, strictly.

    The layout (official, timm or lgvit) is detected and converted; relative-position tables
    are resized bicubically when the window differs; the first conv is adapted to another input
    channel count (summed for 1, tiled for more); with `ignore_head` a classifier of another
    size is left freshly initialised. Anything else that does not fit raises CheckpointError.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("load_weights needs a model made by lgvit.create_model")
    path, label = resolve_source(str(source), spec)
    sd = read_state_dict(path)
    converter = FAMILIES[spec.family].converter
    fmt = converter.detect(sd)
    sd = converter.to_lgvit(sd, fmt)
    target = model.state_dict()
    first_conv = getattr(model, "first_conv", None)
    resized, head_reset = _fit(sd, target, ignore_head, first_conv and f"{first_conv}.weight")
    if head_reset:
        model.reset_classifier(model.num_classes)
        sd.update({k: v for k, v in model.state_dict().items() if k in _HEAD_KEYS})
    model.load_state_dict(sd, strict=True)
    return LoadReport(label, fmt, resized, head_reset)


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Writes the model's tensors as lgvit safetensors, atomically (temp file + rename)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "lgvit", "model": getattr(getattr(model, "spec", None), "name", "")}
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))
