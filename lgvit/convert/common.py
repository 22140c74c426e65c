"""Helpers shared by the per-family key maps."""

import re
from collections.abc import Callable, Iterable

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model."""


Rule = tuple[str, str | Callable[[re.Match], str]]


def rename(sd: dict[str, torch.Tensor], rules: Iterable[Rule], drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Applies regex rules to every key in order; keys ending with a `drop` suffix are left out."""
    rules = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in sd.items():
        if key.endswith(drop):
            continue
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def linear_to_conv(sd: dict[str, torch.Tensor], pattern: str) -> dict[str, torch.Tensor]:
    """(out, in) Linear weights of keys matching `pattern` -> (out, in, 1, 1) 1x1-conv weights."""
    return {k: v[:, :, None, None] if re.search(pattern, k) and v.ndim == 2 else v for k, v in sd.items()}


def conv_to_linear(sd: dict[str, torch.Tensor], pattern: str) -> dict[str, torch.Tensor]:
    """Inverse of `linear_to_conv`."""
    return {k: v.flatten(1) if re.search(pattern, k) and v.ndim == 4 else v for k, v in sd.items()}


def stage_count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of stages: 1 + the largest index after `prefix` (e.g. 'levels.')."""
    found = [int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(found) + 1 if found else 0
