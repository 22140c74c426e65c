"""Token families (DeiT, LocalViT on ViT / PVT / TNT, PVT, TNT) through every deployment path at any size
their rules allow (H and W positive multiples of `model.patch_size`): torch.export with dynamic batch and
H x W, the dynamo ONNX exporter in onnxruntime, torch.compile with one graph and no recompilation, and FX.

Every model is exported or compiled at its native size (where the position embedding is not resized, the
case that used to pin a trace to one size) and run at other sizes, batch 1 and 3, against eager."""

import functools

import pytest
import torch
from conftest import randomize_
from torch.export import Dim

import lgvit
from lgvit.layers import ClassifierHead, Locality
from lgvit.models.base import HierarchicalBackbone, check_min_size

NATIVE = 64  # the small configs' img_size: the position embeddings' grid is NATIVE / patch
_SHRINK = {
    "vit": dict(embed_dim=16, depth=1, num_heads=2, img_size=NATIVE),
    "pvt": dict(embed_dims=(8, 16), num_heads=(1, 2), depths=(1, 1), sr_ratios=(2, 1), mlp_ratios=(2, 2)),
    "tnt": dict(embed_dim=16, inner_dim=4, depth=1, num_heads=2, inner_num_heads=1, img_size=NATIVE),
}
NAMES = ["deit_tiny", "localvit_tiny", "pvt_tiny", "localvit_pvt_tiny", "tnt_tiny", "localvit_tnt_tiny"]
# The slow paths (export, ONNX, compile) run one model per base: the LocalViT forms of ViT and PVT hold all of
# DeiT's and PVT's code but the plain MLP (which TNT's pixel MLP covers), and the locality FFN on TNT's
# patch tokens is LocalViT-T's (one class token).
TRACED = ["localvit_tiny", "localvit_pvt_tiny", "tnt_tiny"]
SIDES = [(2, 3), (5, 2), (6, 6)]  # other sizes, in patches: non-square, small, larger than native
TOL = 1e-4


def _build(name: str) -> torch.nn.Module:
    """A randomised small model of `name` in eval mode, native size NATIVE; the same weights every call."""
    torch.manual_seed(0)
    spec = lgvit.get_spec(name)
    over = dict(_SHRINK[spec.family], num_classes=10)
    if spec.family == "pvt":
        over["img_size"] = NATIVE
    if getattr(spec.config, "locality", None) is not None:
        over["locality"] = Locality("hs+se", 4)
    model = randomize_(lgvit.create_model(name, **over)).eval()
    with torch.no_grad():
        model.head.fc.weight.mul_(20)  # outputs of order 1, so a wrong position embedding shows
    return model


_model = functools.cache(_build)  # one per name; tests leave it in eval mode


def _sizes(model: torch.nn.Module) -> list[tuple[int, int, int]]:
    """(batch, H, W) runs away from the export size: every side in SIDES at batch 1 and 3."""
    p = model.patch_size
    return [(b, h * p, w * p) for h, w in SIDES for b in (1, 3)]


def _dynamic(model: torch.nn.Module) -> dict:
    """Dynamic batch and H, W as multiples of the patch (the token models' rule)."""
    p, most = model.patch_size, 512 // model.patch_size
    return {"x": {0: Dim("batch", min=1, max=64), 2: p * Dim("h", min=1, max=most), 3: p * Dim("w", min=1, max=most)}}


def _native_input() -> torch.Tensor:
    return torch.randn(2, 3, NATIVE, NATIVE)


@functools.cache
def _program(name: str) -> torch.export.ExportedProgram:
    """`name`'s small model exported at the native size, batch 2, with dynamic batch and H x W."""
    return torch.export.export(_model(name), (_native_input(),), dynamic_shapes=_dynamic(_model(name)))


def test_small_configs_cover_the_token_families() -> None:
    assert {lgvit.get_spec(n).family for n in NAMES} == {lgvit.get_spec(n).family for n in TRACED} == set(_SHRINK)
    assert all(_model(n).patch_size * 2 <= NATIVE for n in NAMES)


@pytest.mark.parametrize("name", TRACED)
def test_torch_export_with_dynamic_batch_and_size_equals_eager(name: str) -> None:
    model, fresh, x0 = _model(name), _build(name), torch.randn(1, 3, 3 * NATIVE // 2, NATIVE)
    with torch.no_grad():
        before = fresh(x0)
    exported = _program(name).module()
    with torch.no_grad():
        for b, h, w in [(2, NATIVE, NATIVE), *_sizes(model)]:
            x = torch.randn(b, 3, h, w)
            assert (exported(x) - model(x)).abs().max() <= TOL, (b, h, w)
        after = fresh(x0), _build(name)(x0)
    assert all(type(y) is torch.Tensor and torch.equal(y, before) for y in after)  # no traced tensor leaks


@pytest.mark.parametrize("name", TRACED)
def test_dynamo_onnx_with_dynamic_batch_and_size_equals_eager(name: str, tmp_path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model, path = _model(name), tmp_path / f"{name}.onnx"
    torch.onnx.export(_program(name), (), path, dynamo=True)  # the dynamo exporter, from the ExportedProgram
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert not any(isinstance(d, int) for i, d in enumerate(inp.shape) if i != 1), inp.shape  # B, H, W symbolic
    with torch.no_grad():
        for b, h, w in _sizes(model):
            x = torch.randn(b, 3, h, w)
            (out,) = session.run(None, {inp.name: x.numpy()})
            assert (torch.from_numpy(out) - model(x)).abs().max() <= TOL, (b, h, w)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "train"])
@pytest.mark.parametrize("name", TRACED)
def test_dynamo_captures_one_graph_without_breaks(name: str, mode: str) -> None:
    model = _model(name)
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "train": torch.enable_grad}[mode]
    torch._dynamo.reset()
    try:
        model.train(mode == "train")
        with context():
            explained = torch._dynamo.explain(model)(torch.randn(2, 3, 3 * model.patch_size, 2 * model.patch_size))
    finally:
        model.eval()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("name", TRACED)
def test_compile_dynamic_serves_new_sizes_without_recompiling(name: str) -> None:
    """One graph for every batch >= 2 and size. (Dynamo specialises batch 1, and a first square input gives
    H and W one symbol, so the first non-square one recompiles once: its "duck sizing".)"""
    from torch._dynamo.utils import counters

    model, p = _model(name), _model(name).patch_size
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend="eager")
    with torch.no_grad():
        for b, h, w in [(2, 3 * p, 2 * p), (3, 2 * p, 5 * p), (2, NATIVE, NATIVE)]:  # non-square first: see below
            x = torch.randn(b, 3, h, w)
            assert (compiled(x) - model(x)).abs().max() <= TOL, (b, h, w)
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_model_keeps_the_input_checks() -> None:
    """Under torch.compile the checks still raise their ValueError (with fullgraph=True dynamo wraps it in
    torch._dynamo.exc.Unsupported, the message kept)."""
    model, p = _model("deit_tiny"), _model("deit_tiny").patch_size
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True, backend="eager")
    with torch.no_grad(), pytest.raises(ValueError, match=f"positive multiples of {p}"):
        compiled(torch.randn(2, 3, 2 * p + 1, 2 * p))
    with torch.no_grad(), pytest.raises(ValueError, match="expected 3 input channels, got 4"):
        compiled(torch.randn(2, 4, 2 * p, 2 * p))


@pytest.mark.parametrize("name", NAMES)
def test_fx_feature_extractor_returns_each_level(name: str) -> None:
    """`stages.{i}` of PVT are NCHW maps; `blocks.{i}` of DeiT / TNT are (B, 1 + N, C) tokens, whose grid
    part is the map `forward_intermediates` gives."""
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    model, p = _model(name), _model(name).patch_size
    nodes = [f["module"] for f in model.feature_info]
    extractor = feature_extraction.create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(3, 3, 5 * p, 3 * p)
    with torch.no_grad():
        got = extractor(x)
        want = model.forward_intermediates(x, intermediates_only=True)
        assert (torch.fx.symbolic_trace(model)(x) - model(x)).abs().max() <= TOL
    assert list(got) == nodes
    for node, ref in zip(nodes, want, strict=True):
        out = got[node]
        if out.ndim == 3:  # tokens: the class token (if any) first
            out = out[:, out.shape[1] - ref.shape[2] * ref.shape[3] :].transpose(1, 2).reshape(ref.shape)
        assert out.shape == ref.shape and (out - ref).abs().max() <= TOL, node
    # the input checks stay in the extractor's pruned graph: lgvit's errors, not a conv's
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        extractor(torch.randn(2, 1, 5 * p, 3 * p))
    with pytest.raises(ValueError, match=f"positive multiples of {p}"):
        extractor(torch.randn(2, 3, 5 * p + 1, 3 * p))


class _Backbone(HierarchicalBackbone):
    """The smallest hierarchical model: two stride-2 convs, `min_size` 8, to test the base class's checks."""

    def __init__(self) -> None:
        super().__init__()
        self.in_chans, self.min_size = 3, 8
        self.stem = torch.nn.Conv2d(3, 4, 3, 2, 1)
        self.stages = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, 2, 1))
        self.head = ClassifierHead(4, 5, 0.0)
        self.feature_info = [dict(num_chs=4, reduction=4, module="stages.0")]


def test_min_size_check_traces_in_export_and_fx() -> None:
    """torch.export with H, W ranges from `min_size` up exports; a range below it fails with the fix
    (Dim min=8); FX records the check as one call that still raises the ValueError."""
    model, x = _Backbone().eval(), torch.randn(2, 3, 21, 13)

    def dims(low: int) -> dict:
        return {"x": {0: Dim("batch", min=1, max=8), 2: Dim("h", min=low, max=256), 3: Dim("w", min=low, max=256)}}

    exported = torch.export.export(model, (x,), dynamic_shapes=dims(8)).module()
    with torch.no_grad():
        for size in ((1, 3, 8, 11), (3, 3, 40, 9)):
            y = torch.randn(size)
            assert (exported(y) - model(y)).abs().max() <= TOL
    with pytest.raises(torch._dynamo.exc.UserError, match=r"Dim\('h', min=8"):
        torch.export.export(model, (x,), dynamic_shapes=dims(1))
    traced = torch.fx.symbolic_trace(model)
    assert any(n.target is check_min_size for n in traced.graph.nodes)
    with pytest.raises(ValueError, match="smaller than this model's minimum 8x8"):
        traced(torch.randn(1, 3, 7, 30))
