"""Graph capture of the windowed families (GC ViT, Swin, MaxViT, LocalViT-Swin) at any size: torch.export with
dynamic batch/H/W, ONNX (dynamo) in onnxruntime, torch.compile with one graph and no recompiles, and no traced
tensor left in a cache after an export."""

import pytest
import torch
from conftest import randomize_
from torch.export import Dim

import lgvit

# small configs with 2x2 windows, so that every stage's map is larger than its window from 65 px on
SMALL = {
    "gcvit_tiny": dict(
        embed_dim=8, depths=(1, 2, 1, 1), num_heads=(1, 1, 2, 2), window_sizes=(2, 2, 2, 2), img_size=64
    ),
    "swin_tiny": dict(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=2),
    "localvit_swin_tiny": dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=2),
    "maxvit_tiny_224": dict(embed_dims=(8, 16), depths=(1, 1), stem_width=8, head_dim=8, window_size=2),
}
EXPORTABLE = ["swin_tiny", "maxvit_tiny_224", "localvit_swin_tiny"]
# GC ViT: its pooling depth gives one program a bounded size range, which lgvit.export finds (tests/test_export.py)
SIZES = [(65, 65), (97, 127), (120, 70)]  # all need window padding; two non-square


def _model(name: str) -> torch.nn.Module:
    overrides = dict(SMALL[name])
    if name.startswith("localvit"):
        overrides["locality"] = lgvit.get_spec(name).config.locality
    return randomize_(lgvit.create_model(name, **overrides)).eval()


def _input(h: int, w: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(h * w + batch))


def _dynamic() -> tuple[dict, ...]:
    hw = Dim("h", min=65, max=256), Dim("w", min=65, max=256)
    return ({0: Dim("batch", min=1, max=16), 2: hw[0], 3: hw[1]},)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_torch_export_runs_at_other_sizes_and_leaves_no_fake_tensor(name: str) -> None:
    model = _model(name)
    with torch.no_grad():
        before = {(s, b): model(_input(*s, b)) for s in SIZES for b in (1, 3)}
    program = torch.export.export(model, (_input(96, 112, 2),), dynamic_shapes=_dynamic()).module()
    for (size, batch), ref in before.items():
        assert (program(_input(*size, batch)) - ref).abs().max() <= 1e-4, (size, batch)
    fresh = _model(name)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():  # the same model and a fresh one: real tensors, as before the export
        after = model(_input(*SIZES[1]))
        fresh = fresh(_input(*SIZES[1]))
    assert type(after) is torch.Tensor and type(fresh) is torch.Tensor
    assert torch.equal(after, before[(SIZES[1], 1)]) and torch.equal(fresh, after)


@pytest.mark.parametrize("name", ["maxvit_tiny_224"])  # Swin's partitions are the same code: 20 s saved
def test_onnx_dynamo_export_equals_eager_at_other_sizes(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _model(name)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (_input(96, 112, 2),), str(path), dynamo=True, dynamic_shapes=_dynamic(), verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    for size in SIZES:  # MaxViT's TorchScript-exported file was silently wrong here (baked padding mask)
        for batch in (1, 3):
            x = _input(*size, batch)
            with torch.no_grad():
                ref = model(x)
            out = torch.from_numpy(session.run(None, {feed: x.numpy()})[0])
            assert (out - ref).abs().max() <= 1e-4, (size, batch)


# inference_mode for every family (the eval-time bias cache broke graphs there); no_grad and train on GC ViT,
# which has every kind of block (local, global-query, the shared attention and its bias cache)
CAPTURE_CASES = [(name, "inference_mode") for name in SMALL] + [("gcvit_tiny", "no_grad"), ("gcvit_tiny", "train")]


@pytest.mark.parametrize(("name", "mode"), CAPTURE_CASES)
def test_dynamo_captures_one_graph(name: str, mode: str) -> None:
    model = _model(name)
    x = _input(97, 127, 2)
    if mode == "train":
        explain = torch._dynamo.explain(model.train())(x)
    else:
        with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
            explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons


@pytest.mark.parametrize("name", list(SMALL))
def test_compile_dynamic_does_not_recompile_for_a_new_size(name: str) -> None:
    # both sizes in one size range of GC ViT's pooling depths, and above the 20480 elements at which torch's CPU
    # conv changes backend on the stem's output (a guard of torch's own; every size from 64 px up on real models)
    torch._dynamo.reset()
    model = _model(name)
    compiled = torch.compile(model, backend="eager", dynamic=True, fullgraph=True)
    with torch.no_grad():
        ref = model(_input(120, 101))
        compiled(_input(97, 127))
        frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        out = compiled(_input(120, 101))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert (out - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("name", list(SMALL))
def test_fx_traces_through_the_blocks_and_create_feature_extractor_returns_the_stage_maps(name: str) -> None:
    # the steps whose Python depends on the map's size are torch.fx.wrap leaf functions: no tracer arguments
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _model(name)
    nodes = {f"stages.{i}": str(i) for i in range(len(model.stages))}
    extractor = create_feature_extractor(model, nodes)
    graph = torch.fx.symbolic_trace(model)
    modules = {n.target for n in graph.graph.nodes if n.op == "call_module"}
    assert any(m.endswith("norm1") for m in modules)  # the blocks are traced through, not leaves
    for size in [(97, 127), (120, 70)]:
        x = _input(*size, 2)
        with torch.no_grad():
            out, ref = extractor(x), model.forward_intermediates(x, intermediates_only=True)
            assert (graph(x) - model(x)).abs().max() <= 1e-5, size
        assert list(out) == list(nodes.values()) and len(ref) == len(out)
        for got, want in zip(out.values(), ref, strict=True):
            assert got.shape == want.shape and (got - want).abs().max() <= 1e-5, size
    # the input checks stay in the extractor's pruned graph: lgvit's errors, not a conv's
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        extractor(torch.randn(2, 1, 97, 127))
    with pytest.raises(ValueError, match=f"smaller than this model's minimum {model.min_size}x"):
        extractor(torch.randn(2, 3, model.min_size - 1, 127))
