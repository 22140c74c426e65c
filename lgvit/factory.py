"""Building models and loading their weights: `create_model`, `load_weights`, `read_state_dict`, `save_weights`.

The one module above both the registry (what each name is) and the converters (how each
checkpoint layout maps to lgvit's), so neither needs the other. Loading never unpickles code.
"""

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .convert import CheckpointError
from .convert import metadata as file_meta
from .convert.common import table_window
from .convert.reading import check_file, file_kind, first_line, load_torch
from .features import FeatureMaps, check_out_indices, check_staged
from .files import atomic_write
from .layers import resize_rel_pos_table
from .models.base import ClassifierConfig
from .models.spec import PretrainedTag
from .registry import ALIASES, FAMILIES, ModelSpec, build_config, get_spec

RAW_ENTRIES = ("state_dict", "model", "module", "model_state")
EMA_ENTRIES = ("state_dict_ema", "model_ema", "ema")
_HEAD_KEYS = ("head.fc.weight", "head.fc.bias")
_PATH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar", ".pkl")


@dataclass
class LoadReport:
    source: str
    format: str
    resized: list[str]
    head_reset: bool


def read_state_dict(path: str | os.PathLike, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or a torch checkpoint, read without running code.

    A torch file is read with `torch.load(weights_only=True)`, allowing only `lgvit.convert.reading.SAFE_GLOBALS`
    (argparse.Namespace) besides tensors and plain containers. Of a training file, the raw weights are
    taken: 'state_dict' (timm's train.py), 'model' (DeiT's and Swin's main.py, `lgvit train`); with `ema`,
    the EMA weights: 'state_dict_ema', 'model_ema' or 'ema' (`lgvit train`), and a file without any raises.
    A file holding only EMA weights gives them either way. Tensors holding NaN or inf give a warning.
    """
    return _read(path, ema)[0]


def _read(path: str | os.PathLike, ema: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, decoded lgvit metadata) of a file; see `read_state_dict`."""
    path = check_file(path)
    if file_kind(path) == "safetensors":
        try:
            sd = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = file_meta.decode(f.metadata())
        except SafetensorError as e:
            raise CheckpointError(
                f"cannot read {path}: the safetensors file is truncated, corrupt or not a checkpoint "
                f"({first_line(e)}). Save it again."
            ) from e
        if ema:
            raise CheckpointError(f"{path} holds one set of weights and no EMA entry: load it without ema=True")
    else:
        obj = load_torch(path)
        sd = _pick_entry(obj, ema, path)
        trained = isinstance(obj, dict) and isinstance(obj.get("model_overrides"), dict)  # an `lgvit train` file
        meta = {"model": obj.get("model_name"), "train_overrides": obj["model_overrides"]} if trained else {}
    _warn_non_finite(sd, path)
    return sd, meta


def _pick_entry(obj: object, ema: bool, path: Path) -> dict[str, torch.Tensor]:
    """The raw (or, with `ema`, the EMA) state dict inside a loaded checkpoint, without a 'module.' prefix."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    keys = sorted(map(str, obj))[:12]
    if _is_tensor_dict(obj):
        if ema:
            raise CheckpointError(f"{path} holds plain weights, no EMA entry (keys: {keys[:5]} ...): load without ema")
        sd = obj
    else:
        order = EMA_ENTRIES if ema else RAW_ENTRIES + EMA_ENTRIES
        entry = next((k for k in order if isinstance(obj.get(k), dict)), None)
        if entry is None:
            wanted = "EMA weights (" + ", ".join(EMA_ENTRIES) + ")" if ema else "state dict"
            raise CheckpointError(f"{path} holds no {wanted}; its top-level keys: {keys}")
        sd = obj[entry]
        while isinstance(sd, dict) and not _is_tensor_dict(sd):  # e.g. lgvit's ema: {'module': sd, 'updates': n}
            sd = next((sd[k] for k in RAW_ENTRIES if isinstance(sd.get(k), dict)), None)
        if sd is None:
            raise CheckpointError(f"{path}: its {entry!r} entry holds no state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _warn_non_finite(sd: dict[str, torch.Tensor], path: Path) -> None:
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        warnings.warn(
            f"{path}: {len(bad)} of {len(sd)} tensors hold NaN or inf ({', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}); the model will output NaN. Use an earlier checkpoint.",
            RuntimeWarning,
            stacklevel=3,
        )


def is_path_like(source: str) -> bool:
    """Whether `source` names a file, not a hub id: it exists, has a checkpoint suffix, starts with ./ ../ / ~,
    or its parent folder exists."""
    path = Path(source).expanduser()
    return (
        path.exists()
        or source.startswith(("./", "../", "/", "~"))
        or path.suffix.lower() in _PATH_SUFFIXES
        or (len(path.parts) > 1 and path.parent.is_dir())
    )


def resolve_source(source: str, spec: ModelSpec | None = None) -> tuple[str, str]:
    """A local path for `source`: a file, a tag of `spec`, or a hub id ('org/repo[:file]'). Returns (path, label).

    A path-like source (see `is_path_like`) that does not exist raises FileNotFoundError, never a hub lookup.
    """
    if os.path.isfile(source):
        return source, source
    tag = spec.tags.get(source) if spec else None
    if tag is None and is_path_like(source):
        return str(check_file(source)), source
    if tag is not None and tag.hf_hub_id is None:
        raise CheckpointError(
            f"{spec.name}.{source} is not on a hub: download it from {tag.url} and pass the file path"
        )
    repo, filename = (tag.hf_hub_id, tag.filename) if tag else (source.removeprefix("hf-hub:"), None)
    if ":" in repo:
        repo, filename = repo.split(":", 1)
    if repo.count("/") != 1:
        tags = f"its tags: {', '.join(spec.tags)}" if spec and spec.tags else "it has no pretrained tags"
        raise FileNotFoundError(
            f"{source!r} is neither a file, a pretrained tag of {spec.name if spec else 'the model'} ({tags}), "
            "nor a hub id 'org/name'"
        )
    return _hub_download(repo, filename), f"hf-hub:{repo}" + (f":{filename}" if filename else "")


def _hub_download(repo: str, filename: str | None) -> str:
    """The local path of a hub file: from the cache, else fetched; one quick failure when the hub is unreachable.

    huggingface_hub retries an unreachable hub for about 50 s; this asks once (HEAD, no retries) first.
    With HF_HUB_OFFLINE=1 only the local cache is used.
    """
    try:
        import huggingface_hub as hub
        from huggingface_hub import constants
        from huggingface_hub import utils as errors  # its error classes, there since huggingface_hub 0.20
    except ImportError as e:
        raise CheckpointError(
            f"loading {repo} needs huggingface_hub: pip install 'lgvit[hub]', or pass a local file"
        ) from e
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        try:
            return hub.hf_hub_download(repo, name, local_files_only=True)
        except errors.LocalEntryNotFoundError:
            continue
    files = " or ".join(names)
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(
            f"Offline (HF_HUB_OFFLINE is set): only the local cache is searched, and {repo} ({files}) is not in it: "
            "unset HF_HUB_OFFLINE to download it, or download the file elsewhere and pass its path"
        )
    for name in names:
        try:
            hub.get_hf_file_metadata(hub.hf_hub_url(repo, name), timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except errors.EntryNotFoundError:
            continue
        except errors.RepositoryNotFoundError as e:
            raise CheckpointError(
                f"no hub repository {repo} (or it is private or gated: log in with `hf auth login`)"
            ) from e
        except Exception as e:  # noqa: BLE001 - connection, timeout and HTTP errors all mean: not reachable now
            raise CheckpointError(
                f"cannot reach the Hugging Face hub at {constants.ENDPOINT} to fetch {repo} ({type(e).__name__}: "
                f"{first_line(e)}). Offline? Download the file where you have network access and pass its path, "
                "or set HF_HUB_OFFLINE=1 to use only the local cache."
            ) from e
        return hub.hf_hub_download(repo, name)
    raise CheckpointError(f"{repo} on the hub has no {files}: pass 'hf-hub:{repo}:FILENAME'")


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


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | None = None,
    *,
    pretrained_ema: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides,
) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a registered name or alias (`lgvit.list_models()`).
        pretrained: None/False for random weights; True for the default tag (a model without tags
            raises); a tag name of this model (e.g. 'in1k'); a local file (official, timm or lgvit
            layout); or a hub id. An lgvit file (`save_weights`, `lgvit convert`) also gives its config
            overrides (e.g. num_classes=5, in_chans=1), its preprocessing and class names (`label_names`).
        pretrained_ema: load a training file's EMA weights instead of its raw ones (see `read_state_dict`).
        features_only: return the stage maps instead (timm's convention): a `features.FeatureMaps` whose
            forward gives a list of NCHW maps, with `out_channels`, `strides` and `feature_info`.
        out_indices: with features_only, the stages to return (None: all).
        **overrides: config fields, e.g. num_classes, in_chans, drop_path_rate, img_size; they win over
            a file's. A num_classes different from the checkpoint's gives a new, randomly initialised head.

    `model.pretrained_cfg` says how the weights' images are prepared: a tag's settings; an lgvit file's
    saved ones; for random weights, the default tag's, or (a model without tags) its native size and
    channels with mean and std None (normalise with your data's statistics).
    """
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects feature maps: pass features_only=True with it")
    spec = get_spec(name)
    source = _pretrained_source(spec, pretrained)
    defaults = {}
    if source in spec.tags:
        defaults = {"num_classes": spec.tags[source].num_classes}  # e.g. in22k: 21841
    elif source is not None:
        source = resolve_source(source, spec)[0]
        defaults = _saved_overrides(source, spec)
    cfg = build_config(spec, {**defaults, **overrides})
    model = FAMILIES[spec.family].builder(cfg)
    model.spec = spec
    tag = spec.tags.get(spec.default_tag)
    model.pretrained_cfg = _tag_cfg(tag) if tag else _native_cfg(spec, cfg)
    if features_only:  # before any weights load
        check_staged(model)
        check_out_indices(model, out_indices)
    if source is not None:
        load_weights(model, source, ignore_head="num_classes" in overrides, ema=pretrained_ema)
    return FeatureMaps(model, out_indices) if features_only else model


def _pretrained_source(spec: ModelSpec, pretrained: object) -> str | None:
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if spec.default_tag is None:
            raise ValueError(
                f"{spec.name} has no pretrained weights (no pretrained tag): use pretrained=None for random "
                "weights, or pass a checkpoint file or hub id as pretrained="
            )
        return spec.default_tag
    if isinstance(pretrained, str | os.PathLike) and str(pretrained):
        return str(pretrained)
    raise TypeError(f"pretrained must be True, None, a tag, a file path or a hub id, not {pretrained!r}")


def _tag_cfg(tag: PretrainedTag) -> dict:
    return {**dataclasses.asdict(tag), "label_names": None}


def _native_cfg(spec: ModelSpec, cfg: ClassifierConfig) -> dict:
    """The pretrained_cfg of weights nobody trained: the model's own size and channels, no mean/std."""
    size = getattr(cfg, "img_size", None) or spec.native_size
    blank = PretrainedTag(num_classes=cfg.num_classes, input_size=(cfg.in_chans, size, size), crop_pct=1.0)
    return {**_tag_cfg(blank), "mean": None, "std": None}


def _saved_overrides(path: str, spec: ModelSpec) -> dict:
    """The config overrides an lgvit safetensors file of this model was saved with ({} for other files)."""
    if file_kind(check_file(path)) != "safetensors":
        return {}
    try:
        with safe_open(path, "pt") as f:
            meta = file_meta.decode(f.metadata())
    except SafetensorError:
        return {}  # read_state_dict gives the error
    saved = meta.get("model")
    same = saved is not None and ALIASES.get(saved, saved) == spec.name
    return dict(meta.get("config_overrides", {})) if same else {}


def load_weights(
    model: nn.Module, source: str | os.PathLike, ignore_head: bool = False, *, ema: bool = False
) -> LoadReport:
    """Loads `source` (file, tag of the model, or hub id) into `model`, strictly.

    The layout (official, timm or lgvit) is detected and converted; relative-position tables
    are resized bicubically when the window differs; the first conv is adapted to another input
    channel count (summed for 1, tiled for more); with `ignore_head` a classifier of another
    size is left freshly initialised. Anything else that does not fit raises CheckpointError.
    `ema` takes a training file's EMA weights ('state_dict_ema', 'model_ema', 'ema'), not its raw ones.
    Sets `model.pretrained_cfg` to the tag's or the lgvit file's preprocessing and class names.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("load_weights needs a model made by lgvit.create_model")
    path, label = resolve_source(str(source), spec)
    sd, meta = _read(path, ema)
    converter = FAMILIES[spec.family].converter
    fmt = converter.detect(sd)
    sd = converter.to_lgvit(sd, fmt)
    target = model.state_dict()
    first_conv = getattr(model, "first_conv", None)
    try:
        resized, head_reset = _fit(sd, target, ignore_head, first_conv and f"{first_conv}.weight")
    except CheckpointError as e:
        saved = meta.get("model")
        if "train_overrides" in meta:
            raise CheckpointError(
                f"{e}\n{path} is an `lgvit train` checkpoint of {saved} with {meta['train_overrides']}: "
                f"`lgvit convert {path} OUT.safetensors` gives a file that rebuilds it, or pass those overrides"
            ) from e
        if saved and saved != spec.name:
            raise CheckpointError(f"{e}\n{path} holds {saved} weights: create_model({saved!r}, pretrained=...)") from e
        raise
    if head_reset:
        model.reset_classifier(model.num_classes)
        sd.update({k: v for k, v in model.state_dict().items() if k in _HEAD_KEYS})
    model.load_state_dict(sd, strict=True)
    model.pretrained_cfg = _loaded_cfg(model, spec, str(source), meta, fmt, head_reset)
    return LoadReport(label, fmt, resized, head_reset)


def _loaded_cfg(model: nn.Module, spec: ModelSpec, source: str, meta: dict, fmt: str, head_reset: bool) -> dict:
    """The pretrained_cfg after loading: the tag's, the lgvit file's, or (an official or timm file of a model
    without tags) ImageNet's; otherwise the model's own."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if source in spec.tags:
        cfg = _tag_cfg(spec.tags[source])
    elif "pretrained_cfg" in meta:
        saved = {k: meta["pretrained_cfg"].get(k) for k in file_meta.PREPROCESSING}
        cfg = {**_tag_cfg(PretrainedTag()), **saved, "label_names": meta.get("label_names")}
    elif fmt != "lgvit" and not spec.tags:  # an official release: trained on ImageNet
        cfg = _tag_cfg(PretrainedTag())
    cfg = {**cfg, "num_classes": model.num_classes}
    if head_reset:
        cfg["label_names"] = None
    return cfg


def save_weights(model: nn.Module, path: str | os.PathLike, *, source: str | None = None) -> None:
    """Writes the model's tensors as lgvit safetensors, atomically (temp file + rename).

    The metadata holds the model name, its config overrides, `pretrained_cfg`'s preprocessing and
    class names (`label_names`), and `source` if given, so `create_model(name, pretrained=path)`
    rebuilds the same model with the same preprocessing.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("save_weights needs a model made by lgvit.create_model")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = file_meta.encode(spec.name, _config_overrides(model, spec), cfg, cfg.get("label_names"), source)
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))


def _config_overrides(model: nn.Module, spec: ModelSpec) -> dict:
    """The fields of the model's config that differ from its registered config."""
    cfg = model.cfg
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != getattr(spec.config, f.name)
    }
