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
from collections.abc import Sequence
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


def _side_rule(model: nn.Module) -> tuple[int, int]:
    """(smallest side, the multiple each side must be): one patch for token models, `min_size` for the others."""
    if isinstance(model, TokenModel):
        return model.patch_size, model.patch_size
    return getattr(model, "min_size", 1), 1


def export_size(model: nn.Module, size: int | None = None) -> tuple[int, int]:
    """The example input's (H, W): `size`, or the size of the model's weights (its pretrained_cfg)."""
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = int(cfg.get("input_size", (0, 224, 224))[-1])
    check_sizes(model, [(size, size)], "the export size (--size)")
    return size, size


def check_sizes(
    model: nn.Module, sizes: Sequence[tuple[int, int]], what: str = "a verification size", fewest_patches: int = 1
) -> None:
    """Raises a ValueError naming the size and the model's rule for one it does not accept (token models:
    multiples of the patch, at least `fewest_patches` of them)."""
    low, multiple = _side_rule(model)
    low = low * fewest_patches if multiple > 1 else low
    for h, w in sizes:
        if min(h, w) < low or h % multiple or w % multiple:
            rule = f"sides >= {low}" + (f" and multiples of {multiple}" if multiple > 1 else "")
            raise ValueError(f"{what} {h}x{w} is not one {model_name(model)} accepts: it needs {rule}")


def verify_sizes(model: nn.Module, size: tuple[int, int], fewest_patches: int = 1) -> list[tuple[int, int]]:
    """The export size and three others by the model's rules: a larger non-square one, a small non-square one
    (odd sides, which need window padding, for window models) and the smallest (for token models: of
    `fewest_patches` patches a side)."""
    n, low, p = size[0], *_side_rule(model)
    if p > 1:  # token models: other multiples of the patch
        return [size, (n + p, n + 2 * p), (3 * p, 2 * p), (fewest_patches * p, fewest_patches * p)]
    return [size, (n + low, n + 3 * low), (low + 7, 2 * low + 3), (low, low)]


def metadata(model: nn.Module, exporter: str, dynamic: Sequence[str]) -> dict[str, str]:
    """The preprocessing and provenance an exported file carries, each value a JSON string."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    low, multiple = _side_rule(model)
    meta = {
        "model_name": model_name(model),
        "lgvit_version": __version__,
        "exporter": exporter,
        "dynamic": list(dynamic),
        "in_chans": model.in_chans,
        "num_classes": model.num_classes,
        "min_side": low,
        "side_multiple": multiple,
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
    dynamic = tuple(dynamic)
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
    """torch.export Dims for the input's dynamic dimensions; token models' sides are multiples of their patch,
    at least `fewest_patches` of them."""
    from torch.export import Dim

    dims: dict[int, object] = {}
    if "batch" in dynamic:
        dims[0] = Dim("batch", min=1, max=4096)
    if "hw" in dynamic:
        low, multiple = _side_rule(model)
        if multiple > 1:
            dims[2] = multiple * Dim("h_patches", min=fewest_patches, max=1024)
            dims[3] = multiple * Dim("w_patches", min=fewest_patches, max=1024)
        else:
            dims[2], dims[3] = Dim("height", min=low, max=8192), Dim("width", min=low, max=8192)
    return dims


def _prepare(model: nn.Module, path: str | Path, dynamic: Sequence[str], sizes, size, fewest_patches: int = 1) -> tuple:
    """Validates the arguments before any work; returns (path, dynamic, export size, verification sizes)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an lgvit model (torch.nn.Module), got {type(model).__name__}")
    dynamic = _check_dynamic(dynamic)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "a folder, not a file: give the output file's path", str(path))
    probe_writable(path.parent)
    hw = export_size(model, size)
    if sizes is not None:
        sizes = [tuple(s) for s in sizes]
        check_sizes(model, sizes, fewest_patches=fewest_patches)
    if sizes is None or "hw" not in dynamic:
        sizes = verify_sizes(model, hw, fewest_patches) if "hw" in dynamic else [hw]
    return path, dynamic, hw, sizes


@contextlib.contextmanager
def _quiet():
    """Silences the exporters' progress prints and warnings (their errors still raise)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _onnx_export(model: nn.Module, x: torch.Tensor, tmp: str, dynamic: Sequence[str], opset: int) -> tuple[str, list]:
    """Writes `model` to `tmp` with the dynamo exporter, else the TorchScript one; (the one used, why not dynamo)."""
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
    notes = []
    for name, label, options in exporters:
        try:
            with _quiet():
                names = dict(input_names=["images"], output_names=["logits"])
                torch.onnx.export(model, (x,), tmp, dynamo=name == "dynamo", **names, **options)
            _check_graph_dynamic(tmp, dynamic)
            return name, notes
        except Exception as e:  # any exporter failure: try the fallback, and say why
            notes.append(f"{label} exporter: {_first_line(e)}")
    raise RuntimeError(_refusal(model, "onnx", dynamic, "; ".join(notes)))


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
        exporter, notes = _onnx_export(model, _example(model, hw, dynamic), tmp, dynamic, opset)
        meta = metadata(model, exporter, dynamic)
        _add_onnx_metadata(tmp, meta)
        report = ExportReport(
            path, "onnx", exporter, dynamic, hw, opset if exporter == "dynamo" else min(opset, 20), meta
        )
        report.notes = notes
        if check:
            _verify(
                report, model, lambda: onnx_checks(tmp, model, sizes, VERIFY_BATCHES if "batch" in dynamic else (1,))
            )
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
    try:
        with _quiet():
            program = torch.export.export(
                model, (_example(model, hw, dynamic),), dynamic_shapes=(_dims(model, dynamic),)
            )
    except Exception as e:
        raise RuntimeError(_refusal(model, "torch-export", dynamic, _first_line(e))) from e
    meta = metadata(model, "torch.export", dynamic)
    report = ExportReport(path, "torch-export", "torch.export", dynamic, hw, None, meta)

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
    if report.checks:
        lines += ["| size | batch | max abs diff |", "|---|---|---|"]
        lines += [f"| {c.size[0]}x{c.size[1]} | {c.batch} | {c.max_diff:.2e} |" for c in report.checks]
        lines += [f"all within {TOLERANCE} of eager PyTorch"]
    lines += ["metadata:"] + [f"  {k}: {_short(v)}" for k, v in report.metadata.items()]
    lines += [f"took {report.seconds:.1f} s"]
    return "\n".join(lines)


def _short(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
