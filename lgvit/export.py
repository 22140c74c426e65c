"""Export a model for deployment at any input size: ONNX (`to_onnx`) and torch.export (`to_torch_export`).

Each export is written atomically and checked before it is kept: the file is run (onnxruntime, or
`torch.export.load`) at a few sizes and batches against eager PyTorch, and a file that differs by more
than `TOLERANCE` anywhere, or that fixed a dimension asked to be dynamic, is refused with an error naming
the size, and is not left behind. The ONNX file carries its preprocessing (mean/std, input size, channels,
crop, interpolation, class names) in its `metadata_props`; a `.pt2` file in an extra file `lgvit.json`.
"""

import contextlib
import importlib.util
import io
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .files import atomic_write, probe_writable
from .models.base import TokenModel

FORMATS = ("onnx", "torch-export")
DYNAMIC = ("batch", "hw")  # the dimensions that can be dynamic: the batch, and the image height and width together
TOLERANCE = 1e-4  # max abs difference from eager PyTorch in fp32
MIN_OPSET = 18  # the dynamo exporter's lowest (it writes opset 18 and converts, unreliably, below)
MAX_OPSET = 23  # the highest onnxscript's torchlib and onnxruntime 1.18+ share
INSTALL_HINT = "pip install 'lgvit[export]'"
METADATA_FILE = "lgvit.json"  # the metadata of a .pt2 file, one of its extra files
VERIFY_BATCHES = (1, 3)
# torch.export assumes a dynamic size is never 1 (its 0/1 specialisation): a token model's program takes sides
# of two patches or more (its ONNX file takes one)
TORCH_EXPORT_FEWEST_PATCHES = 2


class MissingDependency(ImportError, RuntimeError):
    """An optional package an export needs is not installed (the message gives the install command)."""


Range = tuple[int, int | None]  # (lowest, highest or None for no limit) of one side


@dataclass(frozen=True)
class Sizes:
    """The input sizes a model or an exported file serves: H in `height`, W in `width`, both multiples of `multiple`."""

    height: Range
    width: Range
    multiple: int = 1

    def __contains__(self, size: tuple[int, int]) -> bool:
        return all(
            low <= side and (high is None or side <= high) and side % self.multiple == 0
            for side, (low, high) in zip(size, (self.height, self.width), strict=True)
        )

    def describe(self) -> str:
        def side(r: Range) -> str:
            return f">= {r[0]}" if r[1] is None else (f"{r[0]}" if r[0] == r[1] else f"{r[0]}-{r[1]}")

        text = f"H {side(self.height)}, W {side(self.width)}"
        return text + (f", multiples of {self.multiple}" if self.multiple > 1 else "")

    def pick(self, h: int, w: int) -> tuple[int, int]:
        """The size in range nearest to (h, w), side by side (rounded down to the multiple, then clamped)."""

        def one(v: int, r: Range) -> int:
            v = max(r[0], v if r[1] is None else min(r[1], v))
            return max(r[0], v - v % self.multiple)

        return one(h, self.height), one(w, self.width)


@dataclass
class Check:
    """One verification run: an input of `batch` images of `size` (H, W), and the max abs difference from eager."""

    size: tuple[int, int]
    batch: int
    max_diff: float


@dataclass
class ExportReport:
    """What an export wrote and how it was checked."""

    path: Path
    format: str  # one of FORMATS
    exporter: str  # 'dynamo', 'torchscript' (the fallback) or 'torch.export'
    dynamic: tuple[str, ...]
    size: tuple[int, int]  # the example input's (H, W)
    opset: int | None
    metadata: dict[str, str]
    sizes: Sizes  # the input sizes the file serves (and refuses others)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0  # export and verification
    notes: list[str] = field(default_factory=list)  # why the dynamo exporter was not used, if it was not

    @property
    def max_diff(self) -> float:
        return max((c.max_diff for c in self.checks), default=0.0)


def require(*modules: str) -> None:
    """Raises MissingDependency, with the install command, unless each of `modules` imports."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"exporting needs {', '.join(missing)}, not installed: {INSTALL_HINT}")


def check_format(format: str, opset: int | None = None) -> None:
    """Raises a clear error for an unknown format, an ONNX opset out of range, or a missing optional package."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    if format == "onnx":
        if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(
                f"ONNX opset {opset!r} is not supported: the dynamo exporter writes {MIN_OPSET} to {MAX_OPSET} "
                f"(--opset {MIN_OPSET})"
            )
        require("onnx", "onnxscript", "onnxruntime")


def model_name(model: nn.Module) -> str:
    return getattr(getattr(model, "spec", None), "name", type(model).__name__)


def model_sizes(model: nn.Module, fewest_patches: int = 1) -> Sizes:
    """The sizes the eager model takes: token models multiples of the patch (at least `fewest_patches`), the others
    `min_size` and up."""
    if isinstance(model, TokenModel):
        low = model.patch_size * fewest_patches
        return Sizes((low, None), (low, None), model.patch_size)
    low = getattr(model, "min_size", 1)
    return Sizes((low, None), (low, None))


def export_size(model: nn.Module, size: int | None = None) -> tuple[int, int]:
    """The example input's (H, W): `size`, or the size of the model's weights (its pretrained_cfg)."""
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = int(cfg.get("input_size", (0, 224, 224))[-1])
    check_sizes(model_sizes(model), [(size, size)], model_name(model), "the export size (--size)")
    return size, size


def check_sizes(rule: Sizes, sizes: Sequence[tuple[int, int]], who: str, what: str) -> None:
    """Raises a ValueError naming the first of `sizes` outside `rule` (what `who` takes), and the rule."""
    for h, w in sizes:
        if (h, w) not in rule:
            raise ValueError(f"{what} {h}x{w} is outside what {who} takes: {rule.describe()}")


def verify_sizes(rule: Sizes, size: tuple[int, int]) -> list[tuple[int, int]]:
    """The export size and up to three others in `rule`: a larger non-square one, a small one with odd sides
    (window padding, in window models) and the smallest."""
    n, low, m = size[0], rule.height[0], rule.multiple
    step = m if m > 1 else max(low // 8, 4)
    small = (low + m, low + 2 * m) if m > 1 else (low + 7 - low % 2, low + 3 - low % 2)  # odd sides
    wanted = [size, (n + step, n + 3 * step), small, (0, 0)]
    picked = [rule.pick(h, w) for h, w in wanted]
    return list(dict.fromkeys(picked))  # in order, each once


def metadata(model: nn.Module, exporter: str, dynamic: Sequence[str], sizes: Sizes) -> dict[str, str]:
    """The preprocessing and provenance an exported file carries, each value a JSON string; `sizes`: the input
    sizes it serves."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {
        "model_name": model_name(model),
        "lgvit_version": __version__,
        "exporter": exporter,
        "dynamic": list(dynamic),
        "in_chans": model.in_chans,
        "num_classes": model.num_classes,
        "height_range": list(sizes.height),  # [lowest, highest], null: no limit
        "width_range": list(sizes.width),
        "side_multiple": sizes.multiple,
        **{k: cfg.get(k) for k in ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")},
        "label_names": cfg.get("label_names"),
    }
    return {k: json.dumps(list(v) if isinstance(v, tuple) else v) for k, v in meta.items()}


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of an ONNX or .pt2 file written by this module."""
    if str(path).endswith(".pt2"):
        extra = {METADATA_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        raw = json.loads(extra[METADATA_FILE])
    else:
        require("onnx")
        import onnx

        raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {k: json.loads(v) for k, v in raw.items()}


def _check_dynamic(dynamic: Sequence[str]) -> tuple[str, ...]:
    # a string is the CLI's spelling, "batch,hw"; iterated as it is, it would be single letters
    dynamic = tuple(d.strip() for d in dynamic.split(",") if d.strip()) if isinstance(dynamic, str) else tuple(dynamic)
    unknown = [d for d in dynamic if d not in DYNAMIC]
    if unknown:
        raise ValueError(f"cannot make {', '.join(unknown)} dynamic: choose from {', '.join(DYNAMIC)} (e.g. batch,hw)")
    return dynamic


def _example(model: nn.Module, size: tuple[int, int], dynamic: Sequence[str]) -> torch.Tensor:
    """A random input; batch 2 when the batch is dynamic (the exporters fix a dimension of size 1)."""
    return torch.randn(
        2 if "batch" in dynamic else 1, model.in_chans, *size, generator=torch.Generator().manual_seed(0)
    )


def _dims(model: nn.Module, dynamic: Sequence[str], fewest_patches: int = 1) -> dict[int, object]:
    """torch.export Dims for the input's dynamic dimensions.

    Token models' sides are multiples of their patch, at least `fewest_patches` of them: one program serves every
    such size. A windowed model's H and W are `Dim.AUTO`: the exporter finds the range of sizes one program serves
    (those with the same pooling depths and window choices), which `served_sizes` reads from the program."""
    from torch.export import Dim

    dims: dict[int, object] = {}
    if "batch" in dynamic:
        dims[0] = Dim("batch", min=1, max=4096)
    if "hw" in dynamic:
        if isinstance(model, TokenModel):
            dims[2] = model.patch_size * Dim("h_patches", min=fewest_patches, max=1024)
            dims[3] = model.patch_size * Dim("w_patches", min=fewest_patches, max=1024)
        else:
            dims[2], dims[3] = Dim.AUTO, Dim.AUTO
    return dims


def served_sizes(
    program: "torch.export.ExportedProgram", model: nn.Module, hw: tuple[int, int], batches: Sequence[int] = (1, 2, 3)
) -> Sizes:
    """The (H, W) an exported program serves: its input's symbolic sides and their range constraints, narrowed to
    the sizes around `hw` where every guard the tracer recorded holds, within the model's own rule. Raises a
    RuntimeError if the exporter fixed a side.

    Range constraints alone are not enough: a guard such as "the last stage has one window" (`!= 1` or `== 1`
    on a window count, from reshapes traced at the example size) is not a range, and a program run where it
    fails may be wrong. Each side is scanned outward from `hw` (the other side held at `hw`, batches 1 to 3),
    and the box is checked on a grid of its sizes. `batches`: those the guards must hold for (the ONNX exporter
    traces assuming a batch above 1, and its file keeps no guard: there batch 1 is proven by running it)."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.name == name)
    sides, multiple = [], 1
    for side in node.meta["val"].shape[2:]:
        if isinstance(side, int):
            raise RuntimeError(f"the exporter fixed the input's H x W at {hw[0]}x{hw[1]}")
        expr = side.node.expr  # a symbol s, or k*s for a token model's patches
        (symbol,) = expr.free_symbols
        bounds, multiple = program.range_constraints[symbol], int(expr / symbol)
        high = int(bounds.upper) * multiple if bounds.upper < 2**31 else None  # int_oo: no limit
        sides.append((max(int(bounds.lower) * multiple, model_sizes(model).height[0]), high))
    sizes = Sizes(sides[0], sides[1], max(multiple, model_sizes(model).multiple))
    return _narrow(sizes, _guards(program, name, model.in_chans, batches), hw)


_SCAN_LIMIT = 8192  # the largest side scanned for guards; a side that holds to here has no upper limit


def _guards(
    program: "torch.export.ExportedProgram", name: str, chans: int, batches: Sequence[int]
) -> Callable[[int, int], bool] | None:
    """Whether every guard torch.export recorded on the input's sizes holds at (H, W) for each of `batches`; None
    if this torch does not expose them (then the range constraints alone decide)."""
    code = getattr(program, "_guards_code", None)  # the guards as Python expressions in L['x'].size()
    if code is None:
        return None
    compiled = [compile(c, "<guard>", "eval") for c in code]

    class _Input:
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape = shape

        def size(self) -> tuple[int, ...]:
            return self.shape

    def holds(h: int, w: int) -> bool:
        for batch in batches:
            env = {"L": {name: _Input((batch, chans, h, w))}, "torch": torch}
            if not all(eval(c, env) for c in compiled):  # noqa: S307 - the exporter's own guard expressions
                return False
        return True

    return holds


def _narrow(sizes: Sizes, holds: Callable[[int, int], bool] | None, hw: tuple[int, int]) -> Sizes:
    """`sizes` narrowed to the box around `hw` where `holds`: each side scanned outward, then a grid checked."""
    if holds is None:
        return sizes
    if not holds(*hw):
        raise RuntimeError(f"the exported program's guards fail at its own example size {hw[0]}x{hw[1]}")
    m = sizes.multiple

    def scan(side: int, r: Range) -> Range:
        def ok(v: int) -> bool:
            return holds(v, hw[1]) if side == 0 else holds(hw[0], v)

        low = hw[side]
        while low - m >= r[0] and ok(low - m):
            low -= m
        high, limit = hw[side], min(r[1] or _SCAN_LIMIT, _SCAN_LIMIT)
        while high + m <= limit and ok(high + m):
            high += m
        return low, None if r[1] is None and high + m > limit else high

    box = Sizes(scan(0, sizes.height), scan(1, sizes.width), m)
    grid = [_grid(box.height, hw[0], m), _grid(box.width, hw[1], m)]
    bad = [(h, w) for h in grid[0] for w in grid[1] if not holds(h, w)]
    if bad:
        raise RuntimeError(f"the exported program's guards fail at {bad[0][0]}x{bad[0][1]} inside its range")
    return box


def _grid(r: Range, at: int, m: int, n: int = 12) -> list[int]:
    """Up to `n` sizes spread over the range `r` (to 4x `at` where it has no limit), multiples of `m`."""
    high = r[1] or 4 * at
    return sorted({(r[0] + (high - r[0]) * i // (n - 1)) // m * m for i in range(n)} | {r[0], high})


def _prepare(model: nn.Module, path: str | Path, dynamic: Sequence[str], sizes, size, fewest_patches: int = 1) -> tuple:
    """Validates the arguments before any work; returns (path, dynamic, export size, verification sizes or None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an lgvit model (torch.nn.Module), got {type(model).__name__}")
    dynamic = _check_dynamic(dynamic)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "a folder, not a file: give the output file's path", str(path))
    probe_writable(path.parent)
    hw = export_size(model, size)
    if sizes is not None and "hw" in dynamic:
        sizes = [tuple(s) for s in sizes]
        check_sizes(model_sizes(model, fewest_patches), sizes, model_name(model), "a verification size")
    return path, dynamic, hw, sizes if "hw" in dynamic else None


def _sizes_to_check(served: Sizes, hw: tuple[int, int], sizes, model: nn.Module) -> list[tuple[int, int]]:
    """The verification sizes: those asked for (each must be one the file serves), else `verify_sizes`."""
    if sizes is None:
        return verify_sizes(served, hw)
    check_sizes(served, sizes, f"the exported {model_name(model)} file", "the verification size")
    return sizes


@contextlib.contextmanager
def _quiet():
    """Silences the exporters' progress prints and warnings (their errors still raise)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _onnx_export(model: nn.Module, x: torch.Tensor, tmp: str, dynamic: Sequence[str], opset: int) -> tuple:
    """Writes `model` to `tmp` with the dynamo exporter, else the TorchScript one. Returns (the exporter used, why
    not dynamo, the sizes the file serves: from the dynamo exporter's program, or the model's rule)."""
    axes = {0: "batch"} if "batch" in dynamic else {}
    axes |= {2: "height", 3: "width"} if "hw" in dynamic else {}
    exporters = (  # (name, label, options)
        ("dynamo", "dynamo", dict(dynamic_shapes=(_dims(model, dynamic),), opset_version=opset, external_data=False)),
        (
            "torchscript",
            "TorchScript",
            dict(
                opset_version=min(opset, 20),  # the TorchScript exporter's highest
                dynamic_axes={"images": axes, "logits": {0: "batch"} if "batch" in dynamic else {}},
            ),
        ),
    )
    notes, hw = [], tuple(x.shape[-2:])
    for name, label, options in exporters:
        try:
            with _quiet():
                names = dict(input_names=["images"], output_names=["logits"])
                program = torch.onnx.export(model, (x,), tmp, dynamo=name == "dynamo", **names, **options)
            _check_graph_dynamic(tmp, dynamic)
            served = _file_sizes(getattr(program, "exported_program", None), model, hw, dynamic, (2, 3))
            return name, notes, served
        except Exception as e:  # any exporter failure: try the fallback, and say why
            notes.append(f"{label} exporter: {_first_line(e)}")
    raise RuntimeError(_refusal(model, "onnx", dynamic, "; ".join(notes)))


def _file_sizes(program, model: nn.Module, hw: tuple[int, int], dynamic: Sequence[str], batches=(1, 2, 3)) -> Sizes:
    """The sizes an exported file serves: the export size if H x W is fixed, else what the program's range
    constraints say (`served_sizes`), or the model's rule when there is no program (the TorchScript exporter)."""
    if "hw" not in dynamic:
        return Sizes((hw[0], hw[0]), (hw[1], hw[1]), model_sizes(model).multiple)
    return model_sizes(model) if program is None else served_sizes(program, model, hw, batches)


def add_size_check(path: str | Path, sizes: Sizes) -> None:
    """Makes the ONNX file at `path` refuse an input whose H or W is outside `sizes`, before any of the model runs.

    A traced program is exact only on the sizes it was traced for (`served_sizes`); outside them it could run and be
    wrong. The check is a Reshape that fails in onnxruntime, named with the sizes the file serves: onnxruntime's error
    quotes the name. It multiplies the input by 1, so it runs first and costs one pass over the input."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    graph, images = proto.graph, proto.graph.input[0].name
    checked = f"{images}_size_checked"
    for node in graph.node:
        node.input[:] = [checked if i == images else i for i in node.input]
    limit = 2**62  # no upper limit
    consts = {
        "lgvit_low": [sizes.height[0], sizes.width[0]],
        "lgvit_high": [sizes.height[1] or limit, sizes.width[1] or limit],
        "lgvit_multiple": [sizes.multiple, sizes.multiple],
        "lgvit_zero": [0, 0],
        "lgvit_two": [2],
    }
    graph.initializer.extend(helper.make_tensor(k, TensorProto.INT64, [len(v)], v) for k, v in consts.items())
    graph.initializer.append(helper.make_tensor("lgvit_one", graph.input[0].type.tensor_type.elem_type, [1], [1]))
    message = (
        f"lgvit size check: this file takes {sizes.describe()} (the sizes it was exported and verified for); "
        "export again with --size inside the sizes you need"
    )
    guard = [
        helper.make_node("Shape", [images], ["lgvit_hw"], start=2, end=4),  # (2,): H, W
        helper.make_node("GreaterOrEqual", ["lgvit_hw", "lgvit_low"], ["lgvit_ge"]),
        helper.make_node("LessOrEqual", ["lgvit_hw", "lgvit_high"], ["lgvit_le"]),
        helper.make_node("Mod", ["lgvit_hw", "lgvit_multiple"], ["lgvit_rem"]),
        helper.make_node("Equal", ["lgvit_rem", "lgvit_zero"], ["lgvit_whole"]),
        helper.make_node("And", ["lgvit_ge", "lgvit_le"], ["lgvit_in"]),
        helper.make_node("And", ["lgvit_in", "lgvit_whole"], ["lgvit_ok"]),
        helper.make_node("Cast", ["lgvit_ok"], ["lgvit_ok_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMin", ["lgvit_ok_int"], ["lgvit_all"], keepdims=1),  # (1,): 1 if both sides fit
        helper.make_node("Sub", ["lgvit_two", "lgvit_all"], ["lgvit_shape"]),  # [1] fits, [2] does not
        helper.make_node("Reshape", ["lgvit_one", "lgvit_shape"], ["lgvit_unit"], name=message),
        helper.make_node("Mul", [images, "lgvit_unit"], [checked]),
    ]
    nodes = guard + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(proto, str(path))


_FORMAT_NAMES = {"onnx": "ONNX", "torch-export": "torch.export"}


def _refusal(model: nn.Module, fmt: str, dynamic: Sequence[str], why: str) -> str:
    fmt = _FORMAT_NAMES.get(fmt, fmt)
    fix = "export a fixed size (--dynamic batch) or another model; docs/export.md lists what exports"
    return f"{model_name(model)} does not export to {fmt} with dynamic {','.join(dynamic) or 'nothing'} ({why}): {fix}"


def _check_graph_dynamic(path: str, dynamic: Sequence[str]) -> None:
    """Raises a RuntimeError if the exporter fixed an input dimension that was asked to be dynamic."""
    import onnx

    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    wanted = ([0] if "batch" in dynamic else []) + ([2, 3] if "hw" in dynamic else [])
    fixed = [i for i in wanted if dims[i].HasField("dim_value")]
    if fixed:
        shape = "x".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param for d in dims)
        raise RuntimeError(f"the file's input is fixed at {shape} (dims {fixed} were asked to be dynamic)")


def _add_onnx_metadata(path: str, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def onnx_checks(path: str | Path, model: nn.Module, sizes, batches=VERIFY_BATCHES) -> list[Check]:
    """Runs the ONNX file in onnxruntime (CPU, graph optimisations on) and `model` eagerly on the same random
    inputs at each size and batch; one Check each. A run onnxruntime refuses raises a RuntimeError naming the size."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed run raises, its log would repeat it
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [
        _check(model, (h, w), b, lambda x: session.run(None, {name: x.numpy()})[0]) for h, w in sizes for b in batches
    ]


def verify_onnx(path: str | Path, model: nn.Module, sizes, batches=VERIFY_BATCHES) -> float:
    """The max abs difference between the ONNX file in onnxruntime and eager `model` over `sizes` x `batches`."""
    return max(c.max_diff for c in onnx_checks(path, model, sizes, batches))


def _check(model: nn.Module, size: tuple[int, int], batch: int, run) -> Check:
    x = torch.randn(batch, model.in_chans, *size, generator=torch.Generator().manual_seed(batch * 7919 + sum(size)))
    with torch.no_grad():
        expected = model(x)
        try:
            got = torch.as_tensor(run(x))
        except Exception as e:  # the runtime's own error: say at which size
            raise RuntimeError(f"it fails at {size[0]}x{size[1]}, batch {batch}: {_first_line(e)}") from e
    if got.shape != expected.shape:
        raise RuntimeError(
            f"at {size[0]}x{size[1]}, batch {batch} the file gives {tuple(got.shape)}, not {tuple(expected.shape)}"
        )
    return Check(size, batch, float((got.float() - expected).abs().max()))


def _verify(report: ExportReport, model: nn.Module, run_checks) -> None:
    """Sets `report.checks` from `run_checks()`; raises a RuntimeError naming the size where the file fails or
    differs from eager by more than TOLERANCE (the caller's atomic write then leaves no file)."""
    try:
        report.checks = run_checks()
    except RuntimeError as e:
        raise RuntimeError(_refusal(model, report.format, report.dynamic, _why(report, str(e)))) from e
    bad = [c for c in report.checks if not c.max_diff <= TOLERANCE]  # NaN is bad too
    if bad:
        c = bad[0]
        at = f"{c.size[0]}x{c.size[1]}, batch {c.batch}"
        diff = f"it differs from eager PyTorch by {c.max_diff:.2g} > {TOLERANCE} at {at}"
        raise RuntimeError(_refusal(model, report.format, report.dynamic, _why(report, diff)))


def _why(report: ExportReport, problem: str) -> str:
    notes = "".join(f"; {n}" for n in report.notes)
    return f"the {report.exporter} exporter's file was checked and not kept: {problem}{notes}"


def to_onnx(
    model: nn.Module,
    path: str | Path,
    dynamic: Sequence[str] = DYNAMIC,
    opset: int = 18,
    sizes: Sequence[tuple[int, int]] | None = None,
    check: bool = True,
    size: int | None = None,
) -> ExportReport:
    """Writes `model` (in eval mode, fp32, on the CPU) to the ONNX file `path`, dynamic in `dynamic`.

    The dynamo exporter is tried first, the TorchScript exporter if it fails (the report says which). With
    `check`, the file is run in onnxruntime at `sizes` (default: `verify_sizes`) and batch 1 and 3, and is
    kept only if it equals eager within TOLERANCE. `size`: the example input's side (default: the weights').
    """
    check_format("onnx", opset)
    path, dynamic, hw, sizes = _prepare(model, path, dynamic, sizes, size)
    model = model.eval().float().cpu()
    start, result = time.perf_counter(), {}

    def write(tmp: str) -> None:
        exporter, notes, served = _onnx_export(model, _example(model, hw, dynamic), tmp, dynamic, opset)
        checked = _sizes_to_check(served, hw, sizes, model)
        if "hw" in dynamic:
            add_size_check(tmp, served)
        meta = metadata(model, exporter, dynamic, served)
        _add_onnx_metadata(tmp, meta)
        opset_used = opset if exporter == "dynamo" else min(opset, 20)
        report = ExportReport(path, "onnx", exporter, dynamic, hw, opset_used, meta, served, notes=notes)
        if check:
            batches = VERIFY_BATCHES if "batch" in dynamic else (1,)
            _verify(report, model, lambda: onnx_checks(tmp, model, checked, batches))
        result["report"] = report

    atomic_write(path, write)
    result["report"].seconds = time.perf_counter() - start
    return result["report"]


def to_torch_export(
    model: nn.Module,
    path: str | Path,
    dynamic: Sequence[str] = DYNAMIC,
    sizes: Sequence[tuple[int, int]] | None = None,
    check: bool = True,
    size: int | None = None,
) -> ExportReport:
    """Writes `torch.export.export(model)` with dynamic `dynamic` to `path` (a .pt2 file, `torch.export.save`).

    With `check`, the saved file is loaded back (`torch.export.load`) and run at `sizes` and batch 1 and 3;
    it is kept only if it equals eager within TOLERANCE. The metadata is the extra file `lgvit.json`.
    """
    check_format("torch-export")
    path, dynamic, hw, sizes = _prepare(model, path, dynamic, sizes, size, TORCH_EXPORT_FEWEST_PATCHES)
    model = model.eval().float().cpu()
    start = time.perf_counter()
    program, served = _torch_export(model, hw, dynamic)
    sizes = _sizes_to_check(served, hw, sizes, model)
    meta = metadata(model, "torch.export", dynamic, served)
    report = ExportReport(path, "torch-export", "torch.export", dynamic, hw, None, meta, served)

    def write(tmp: str) -> None:
        buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2 or a buffer, not the temporary name
        torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(meta)})
        Path(tmp).write_bytes(buffer.getvalue())
        if check:
            loaded = torch.export.load(io.BytesIO(Path(tmp).read_bytes())).module()
            batches = VERIFY_BATCHES if "batch" in dynamic else (1,)
            _verify(report, model, lambda: [_check(model, s, b, loaded) for s in sizes for b in batches])

    atomic_write(path, write)
    report.seconds = time.perf_counter() - start
    return report


def _torch_export(model: nn.Module, hw: tuple[int, int], dynamic: Sequence[str]) -> tuple:
    """(the program, the sizes it serves). Traced size-oblivious first, as the ONNX exporter traces: a window count
    of 1 at the example size is then not taken to stay 1, which would pin the program to the sizes with one window
    in that stage. Where that program needs a batch above 1 (a 1-channel conv input's memory format is ambiguous
    at batch 1), traced again as usual."""
    errors = []
    for oblivious in (True, False):
        try:
            with _quiet(), torch.fx.experimental._config.patch(backed_size_oblivious=oblivious):
                program = torch.export.export(
                    model, (_example(model, hw, dynamic),), dynamic_shapes=(_dims(model, dynamic),)
                )
            return program, _file_sizes(program, model, hw, dynamic)
        except Exception as e:  # any failure: the other way of tracing, then a refusal naming both
            errors.append(_first_line(e))
    raise RuntimeError(_refusal(model, "torch-export", dynamic, "; ".join(dict.fromkeys(errors))))


def export(model: nn.Module, path: str | Path, format: str = "onnx", **options) -> ExportReport:
    """`to_onnx` or `to_torch_export` by `format` (one of FORMATS)."""
    check_format(format, options.get("opset", 18))
    return to_onnx(model, path, **options) if format == "onnx" else to_torch_export(model, path, **options)


def format_report(report: ExportReport) -> str:
    """The report as text: the file, the exporter, the verification table and the metadata."""
    lines = [f"wrote {report.path} ({report.format}, {report.exporter} exporter"]
    lines[0] += f", opset {report.opset})" if report.opset else ")"
    lines += [f"  note: {n}" for n in report.notes]
    lines += [f"example input {report.size[0]}x{report.size[1]}, dynamic: {','.join(report.dynamic) or 'none'}"]
    lines += [f"serves {report.sizes.describe()}" + (" (and refuses other sizes)" if "hw" in report.dynamic else "")]
    if report.checks:
        lines += ["| size | batch | max abs diff |", "|---|---|---|"]
        lines += [f"| {c.size[0]}x{c.size[1]} | {c.batch} | {c.max_diff:.2e} |" for c in report.checks]
        lines += [f"all within {TOLERANCE} of eager PyTorch"]
    lines += ["metadata:"] + [f"  {k}: {_short(v)}" for k, v in report.metadata.items()]
    lines += [f"took {report.seconds:.1f} s"]
    return "\n".join(lines)


def _short(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
