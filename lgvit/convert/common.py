"""The converter protocol and the key-map helpers every family's converter shares."""

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import torch

from ..layers import relative_position_index

StateDict = dict[str, torch.Tensor]
Rule = tuple[str, str | Callable[[re.Match], str]]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model."""


class Converter(Protocol):
    """How one family's checkpoint layouts map to lgvit's and back. Each family module has one, `CONVERTER`."""

    def detect(self, sd: StateDict) -> str:
        """The layout of `sd` ('official', 'timm' or 'lgvit'); a checkpoint of another model raises CheckpointError."""
        ...

    def to_lgvit(self, sd: StateDict, fmt: str) -> StateDict:
        """`sd`, in the layout `fmt` that `detect` found, with lgvit's keys and tensor layouts."""
        ...

    def to_official(self, sd: StateDict) -> StateDict:
        """An lgvit state dict in the reference layout (the official code's, or timm's where none exists)."""
        ...


def rename(sd: StateDict, rules: Iterable[Rule], drop: tuple[str, ...] = ()) -> StateDict:
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


def linear_to_conv(sd: StateDict, pattern: str) -> StateDict:
    """(out, in) Linear weights of keys matching `pattern` -> (out, in, 1, 1) 1x1-conv weights."""
    return {k: v[:, :, None, None] if re.search(pattern, k) and v.ndim == 2 else v for k, v in sd.items()}


def conv_to_linear(sd: StateDict, pattern: str) -> StateDict:
    """Inverse of `linear_to_conv`."""
    return {k: v.flatten(1) if re.search(pattern, k) and v.ndim == 4 else v for k, v in sd.items()}


def stage_count(sd: StateDict, prefix: str) -> int:
    """Number of stages: 1 + the largest index after `prefix` (e.g. 'levels.')."""
    found = [int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(found) + 1 if found else 0


def table_window(rows: int) -> int | None:
    """The side of the square window a ((2w-1)^2, heads) relative-position table was built for, or None."""
    side = math.isqrt(rows)
    return (side + 1) // 2 if side * side == rows and side % 2 else None


def bias_tables(sd: StateDict) -> Iterator[tuple[str, int]]:
    """(key, window side) of every square relative-position bias table in `sd`."""
    for key in [k for k in sd if k.endswith("relative_position_bias_table")]:
        window = table_window(sd[key].shape[0])
        if window is not None:
            yield key, window


def add_relative_position_index(sd: StateDict) -> StateDict:
    """`sd` with the `relative_position_index` buffer the official models store beside each bias table."""
    for key, window in list(bias_tables(sd)):
        sd[key.replace("bias_table", "index")] = relative_position_index((window, window)).clone()
    return sd
