"""Dense prediction: every staged family as a torchvision detector backbone (FasterRCNN, RetinaNet), the raw
maps of `create_model(features_only=True)`, pretrained weights, frozen stages, the segmenter at odd sizes,
and the errors."""

import math

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

import lgvit
from lgvit.data import FashionScenes, SceneConfig
from lgvit.features import FeatureMaps

_TINY4 = dict(embed_dims=(16, 24, 32, 40), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
FAMILIES = {  # one tiny config per staged family, 1 input channel like the scenes
    "gcvit": ("gcvit_fmnist", dict(embed_dim=16, depths=(1, 1, 1), num_heads=(1, 2, 4))),
    "swin": ("swin_fmnist", dict(embed_dim=16, depths=(1, 1, 1), num_heads=(1, 2, 4))),
    "maxvit": ("maxvit_fmnist", dict(embed_dims=(16, 24, 32), head_dim=8, stem_width=16)),
    "pvt": ("pvt_tiny", dict(_TINY4, in_chans=1)),
    "localvit_pvt": ("localvit_pvt_tiny", dict(_TINY4, in_chans=1)),
    "localvit_swin": (
        "localvit_swin_tiny",
        dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), in_chans=1),
    ),
}
DETECT = dict(min_size=64, max_size=96, image_mean=[0.5], image_std=[0.5])


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scenes() -> FashionScenes:
    cfg = SceneConfig(min_side=56, max_side=88, max_objects=3, max_scale=2.0)
    return FashionScenes(split="val", task="detect", num_scenes=4, config=cfg)


def _anchors(levels: int) -> AnchorGenerator:
    return AnchorGenerator(tuple((16 * 2**i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)


RCNN = dict(  # few proposals and samples: fast, and still every part of the R-CNNs runs
    rpn_batch_size_per_image=32,
    box_batch_size_per_image=32,
    box_detections_per_img=10,
    rpn_pre_nms_top_n_train=64,
    rpn_post_nms_top_n_train=32,
    rpn_pre_nms_top_n_test=64,
    rpn_post_nms_top_n_test=32,
    box_score_thresh=0.0,
)


def _faster_rcnn(name: str, overrides: dict) -> FasterRCNN:
    backbone = lgvit.create_backbone(name, fpn=32, **overrides)
    anchors = _anchors(len(backbone.names))
    return FasterRCNN(backbone, 11, rpn_anchor_generator=anchors, representation_size=32, **RCNN, **DETECT)


def _retinanet(name: str, overrides: dict) -> RetinaNet:
    backbone = lgvit.create_backbone(name, fpn=32, extra_levels=2, **overrides)
    return RetinaNet(
        backbone,
        num_classes=11,
        anchor_generator=_anchors(len(backbone.names)),
        score_thresh=0.0,
        topk_candidates=20,
        detections_per_img=10,
        **DETECT,
    )


def _check_detector(model: nn.Module, scenes: FashionScenes) -> None:
    """A train step gives finite losses with gradients in the first stage; eval on two sizes gives boxes."""
    images, targets = zip(*(scenes[i] for i in range(2)), strict=True)
    model.train()
    losses = model(list(images), [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    stage0 = model.backbone.body.model.stages[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage0.parameters())
    model.eval()
    sizes = [(64, 80), (75, 61)]  # one batch, two sizes: torchvision's transform pads them to one
    with torch.no_grad():
        out = model([torch.rand(1, h, w) for h, w in sizes])
    for det, (h, w) in zip(out, sizes, strict=True):
        assert len(det["boxes"]) > 0 and det["boxes"].shape[1] == 4 and len(det["scores"]) == len(det["labels"])
        assert (det["boxes"][:, 2] <= w + 1e-3).all() and (det["boxes"][:, 3] <= h + 1e-3).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_staged_family_trains_and_detects_in_faster_rcnn(family: str, scenes: FashionScenes) -> None:
    _check_detector(_faster_rcnn(*FAMILIES[family]), scenes)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_staged_family_trains_and_detects_in_retinanet(family: str, scenes: FashionScenes) -> None:
    _check_detector(_retinanet(*FAMILIES[family]), scenes)


def test_mask_rcnn_and_fcos_take_the_backbone(scenes: FashionScenes) -> None:
    """The other two detectors of the contract, on GC ViT: Mask R-CNN learns from the scenes' masks too."""
    name, overrides = FAMILIES["gcvit"]
    backbone = lgvit.create_backbone(name, fpn=32, **overrides)
    mask_rcnn = MaskRCNN(backbone, 11, rpn_anchor_generator=_anchors(4), **RCNN, **DETECT)
    images, targets = zip(*(scenes[i] for i in range(2)), strict=True)
    losses = mask_rcnn.train()(list(images), list(targets))
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        assert mask_rcnn.eval()([images[0]])[0]["masks"].shape[-2:] == images[0].shape[-2:]
    fcos_backbone = lgvit.create_backbone(name, fpn=32, extra_levels=2, **overrides)
    anchors = AnchorGenerator(tuple((8 * 2**i,) for i in range(5)), ((1.0,),) * 5)  # FCOS: one point per cell
    fcos = FCOS(fcos_backbone, 11, anchor_generator=anchors, score_thresh=0.0, topk_candidates=20, **DETECT)
    losses = fcos.train()(list(images), [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_levels_channels_and_strides_agree_with_feature_info(family: str) -> None:
    name, overrides = FAMILIES[family]
    info = lgvit.create_model(name, **overrides).feature_info
    n = len(info)
    x = torch.randn(2, 1, 67, 93)  # odd sides, not multiples of any stride
    for extra, added in ((0, ["pool"]), (2, ["p6", "p7"])):
        backbone = lgvit.create_backbone(name, fpn=24, extra_levels=extra, **overrides).eval()
        assert backbone.names == [str(i) for i in range(n)] + added
        assert backbone.strides[:n] == [f["reduction"] for f in info]
        with torch.no_grad():
            maps = backbone(x)
        assert list(maps) == backbone.names and backbone.out_channels == 24
        for m, s in zip(maps.values(), backbone.strides, strict=True):
            assert m.shape == (2, 24, math.ceil(67 / s), math.ceil(93 / s))
    raw = lgvit.create_backbone(name, fpn=None, out_indices=(1, -1), **overrides).eval()
    assert raw.out_channels == [info[1]["num_chs"], info[-1]["num_chs"]]
    assert raw.strides == [info[1]["reduction"], info[-1]["reduction"]]
    with torch.no_grad():
        assert [tuple(m.shape[1:]) for m in raw(x).values()] == [
            (info[i]["num_chs"], math.ceil(67 / info[i]["reduction"]), math.ceil(93 / info[i]["reduction"]))
            for i in (1, -1)
        ]


@pytest.mark.parametrize("family", ["gcvit", "pvt"])  # pvt: a token model whose input is padded to its grid
def test_features_only_gives_the_raw_maps_of_the_classifier(family: str) -> None:
    name, overrides = FAMILIES[family]
    classifier = lgvit.create_model(name, **overrides).eval()
    features = lgvit.create_model(name, features_only=True, out_indices=(0, 2), **overrides).eval()
    raw = lgvit.create_backbone(name, fpn=None, out_indices=(0, 2), **overrides).eval()
    features.model.load_state_dict({k: v for k, v in classifier.state_dict().items() if not k.startswith("head.fc")})
    raw.body.load_state_dict(features.state_dict())
    x = torch.randn(1, 1, 64, 96)  # a size every family takes as it is
    with torch.no_grad():
        want = classifier.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        got, named = features(x), raw(x)
    assert isinstance(features, FeatureMaps) and features.out_channels == [m.shape[1] for m in want]
    assert list(named) == ["0", "1"]
    for w, g, r in zip(want, got, named.values(), strict=True):
        assert torch.equal(w, g) and torch.equal(w, r)


def test_pretrained_classification_weights_load_with_the_head_dropped(tmp_path) -> None:
    name, overrides = FAMILIES["gcvit"]
    classifier = lgvit.create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "cls.safetensors"
    lgvit.save_weights(classifier, path)
    backbone = lgvit.create_backbone(name, pretrained=path, fpn=None, **overrides).eval()
    assert isinstance(backbone.body.model.head.fc, nn.Identity)
    assert backbone.body.pretrained_cfg["input_size"] == classifier.pretrained_cfg["input_size"]
    x = torch.randn(1, 1, 48, 80)
    with torch.no_grad():
        want = classifier.forward_intermediates(x, intermediates_only=True)
        got = list(backbone(x).values())
    assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))


def test_frozen_stages_and_norm_eval_follow_mmdet() -> None:
    name, overrides = FAMILIES["maxvit"]  # MaxViT has BatchNorms
    backbone = lgvit.create_backbone(name, frozen_stages=1, norm_eval=True, **overrides)
    model = backbone.body.model
    assert not any(p.requires_grad for p in [*model.stem.parameters(), *model.stages[0].parameters()])
    assert all(p.requires_grad for p in model.stages[1].parameters())
    backbone.train()
    assert not model.stem.training and not model.stages[0].training and model.stages[1].training
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    backbone(torch.randn(2, 1, 64, 64))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))
    whole = lgvit.create_backbone(name, frozen_stages=len(model.stages), **overrides)
    assert not any(p.requires_grad for p in whole.body.parameters())
    assert all(p.requires_grad for p in whole.fpn.parameters())


@pytest.mark.parametrize("family", ["gcvit", "swin", "localvit_pvt"])
def test_segmenter_logits_are_at_the_input_size_at_odd_sizes(family: str) -> None:
    name, overrides = FAMILIES[family]
    model = lgvit.create_segmenter(name, num_classes=11, fpn=32, head_channels=32, **overrides)
    for h, w in ((67, 93), (45, 61)):
        x = torch.randn(2, 1, h, w)
        logits = model(x)
        assert logits.shape == (2, 11, h, w)
    logits.sum().backward()
    stage0 = model.backbone.body.model.stages[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage0.parameters())


def test_the_segmenter_pads_to_multiples_of_32_with_its_pad_value_and_crops_back() -> None:
    """The same logits as the image padded by hand to 64x96 and cropped; 1 pads nothing; the value is used."""
    name, overrides = FAMILIES["gcvit"]
    overrides = {**overrides, "in_chans": 2}
    model = lgvit.create_segmenter(name, 5, fpn=32, head_channels=32, pad_value=(-1.5, 2.0), **overrides).eval()
    x = torch.randn(1, 2, 45, 67)
    by_hand = torch.cat([torch.full((1, 1, 64, 96), -1.5), torch.full((1, 1, 64, 96), 2.0)], 1)  # (1, 2, 64, 96)
    by_hand[..., :45, :67] = x
    with torch.no_grad():
        logits, whole = model(x), model(by_hand)
        torch.testing.assert_close(logits, whole[..., :45, :67], rtol=0, atol=1e-5)
        assert torch.equal(model(by_hand), whole)  # already a multiple: nothing more is padded
        model.size_divisible = 1
        unpadded = model(x)
    assert unpadded.shape == logits.shape and not torch.allclose(unpadded, logits, atol=1e-3)


def test_clear_errors() -> None:
    name, overrides = FAMILIES["gcvit"]
    with pytest.raises(ValueError, match="single-scale model.*use a staged model"):
        lgvit.create_backbone("deit_fmnist")
    with pytest.raises(ValueError, match="single-scale"):
        lgvit.create_model("tnt_tiny", features_only=True)
    with pytest.raises(ValueError, match=r"5 is out of range.*3 stages: use indices in 0\.\.2"):
        lgvit.create_backbone(name, out_indices=(0, 5), **overrides)
    with pytest.raises(ValueError, match="each stage once, shallow to deep"):
        lgvit.create_model(name, features_only=True, out_indices=(2, 1), **overrides)
    with pytest.raises(ValueError, match="features_only=True"):
        lgvit.create_model(name, out_indices=(0, 1))
    with pytest.raises(ValueError, match=r"frozen_stages=7 must be an int in -1\.\.3"):
        lgvit.create_backbone(name, frozen_stages=7, **overrides)
    with pytest.raises(ValueError, match="extra_levels=1 is invalid.*LastLevelP6P7"):
        lgvit.create_backbone(name, extra_levels=1, **overrides)
    with pytest.raises(ValueError, match="raw maps"):
        lgvit.create_backbone(name, fpn=None, extra_levels=2, **overrides)
    with pytest.raises(ValueError, match="head='uper' is not a segmentation head"):
        lgvit.create_segmenter(name, 11, head="uper", **overrides)
    with pytest.raises(ValueError, match="num_classes=0"):
        lgvit.create_segmenter(name, 0, **overrides)
    with pytest.raises(ValueError, match=r"size_divisible=0 must be an int >= 1 \(e.g. 32; 1 pads nothing\)"):
        lgvit.create_segmenter(name, 11, size_divisible=0, **overrides)
    with pytest.raises(ValueError, match=r"pad_value=\(0.0, 1.0\): give one value, or one per input channel \(1\)"):
        lgvit.create_segmenter(name, 11, pad_value=(0.0, 1.0), **overrides)
    with pytest.raises(ValueError, match="input channels"):
        lgvit.create_backbone(name, **overrides)(torch.randn(1, 3, 64, 64))


class _ConvStages(nn.Module):
    """A non-lgvit body (two strided conv stages), as a ResNet's would be under `Backbone`."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(1, 8, 3, 4, 1), nn.Conv2d(8, 16, 3, 2, 1)])
        self.out_channels, self.strides = [8, 16], [4, 8]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = torch.relu(stage(x))
            maps.append(x)
        return maps


@pytest.mark.parametrize("detector", ["fasterrcnn", "retinanet"])
def test_detector_on_puts_any_backbone_under_lgvits_detector(detector: str, scenes: FashionScenes) -> None:
    """`detector_on` (what `create_detector` and the family benchmark's ResNet-18 use) reads the body's
    strides for its anchors: a train step gives finite losses with gradients in the body, eval gives boxes."""
    from lgvit.dense.backbone import Backbone
    from lgvit.dense.detection import detector_on

    body = Backbone(_ConvStages(), 16, extra_levels=2 if detector == "retinanet" else 0)
    model = detector_on(detector, body, 11, 64, (0.2,), (0.3,))
    assert isinstance(model, FasterRCNN if detector == "fasterrcnn" else RetinaNet)
    sizes = model.anchor_generator.sizes if detector == "retinanet" else model.rpn.anchor_generator.sizes
    assert [s[0] for s in sizes] == [4 * s for s in body.strides]  # one size per level: 4x its stride
    images, targets = zip(*(scenes[i] for i in range(2)), strict=True)
    losses = model.train()(list(images), [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert body.body.stages[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()([images[0]])
    assert out[0]["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match="detector='yolo' is not one lgvit trains: choose one of fasterrcnn"):
        detector_on("yolo", body, 11, 64, (0.2,), (0.3,))


def _rois(images: int, k: int, extent: float) -> torch.Tensor:
    """(k, 5) random rois on `images - 1` images (the last has none), some past the map's edges, unsorted."""
    image = torch.randint(0, images - 1, (k, 1)).float()
    xy = torch.rand(k, 2) * extent * 1.2 - 0.1 * extent
    return torch.cat([image, xy, xy + torch.rand(k, 2) * extent * 0.6], 1)


@pytest.mark.parametrize(("output_size", "sampling_ratio"), [((7, 7), 2), ((14, 14), 2), ((3, 5), 1), ((7, 7), 3)])
def test_separable_roi_align_equals_torchvisions_forward_and_gradient(output_size, sampling_ratio) -> None:
    from torchvision.ops import roi_align as tv_roi_align

    from lgvit.dense.roi import separable_roi_align

    x = torch.randn(3, 5, 9, 13, requires_grad=True)
    rois = _rois(3, 40, 13 * 4)
    ours = separable_roi_align(x, rois, output_size, 0.25, sampling_ratio)
    ref = tv_roi_align(x, rois, output_size, 0.25, sampling_ratio, aligned=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * weight).sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)
    assert separable_roi_align(x, rois[:0], output_size, 0.25, sampling_ratio).shape == (0, 5, *output_size)
    # a bf16 map (autocast): the sampling weights are computed in fp32, so only bf16's rounding remains
    half = separable_roi_align(x.detach().bfloat16(), rois, output_size, 0.25, sampling_ratio)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref.detach(), atol=0.05, rtol=0.02)


def test_the_roi_pooler_matches_torchvisions_and_the_rcnns_use_it() -> None:
    """`RoIAlignPooler` assigns boxes to levels and pools them as `MultiScaleRoIAlign` does (outputs and input
    gradients); in inference it is torchvision's op itself. lgvit's R-CNNs pool with it."""
    from torchvision.ops import MultiScaleRoIAlign

    from lgvit.dense.detection import create_detector
    from lgvit.dense.roi import RoIAlignPooler

    names = ["0", "1", "2", "3"]
    maps = {n: torch.randn(2, 4, 24 // 2**i, 64 // 2**i, requires_grad=True) for i, n in enumerate(names)}  # 96x256
    boxes = [torch.tensor([[0, 0, 10, 12], [5, 3, 90, 80], [40, 30, 250, 90], [1, 1, 255, 95.0]]), torch.zeros(0, 4)]
    image_shapes = [(96, 256), (96, 256)]
    ours = RoIAlignPooler(names, 7, 2)(maps, boxes, image_shapes)
    ref = MultiScaleRoIAlign(names, 7, 2)(maps, boxes, image_shapes)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * weight).sum(), list(maps.values()))
    g_ref = torch.autograd.grad((ref * weight).sum(), list(maps.values()))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert torch.equal(RoIAlignPooler(names, 7, 2)(maps, boxes, image_shapes), ref)
    model = create_detector("maskrcnn", "gcvit_fmnist", 11, 64, (0.2,), (0.3,), fpn=32, in_chans=1)
    assert isinstance(model.roi_heads.box_roi_pool, RoIAlignPooler) and model.roi_heads.box_roi_pool.output_size == (
        7,
        7,
    )
    assert isinstance(model.roi_heads.mask_roi_pool, RoIAlignPooler) and model.roi_heads.mask_roi_pool.output_size == (
        14,
        14,
    )
