"""The segmenter's Panoptic-DeepLab instance branch (`create_segmenter(head='panoptic')`, `--seg-head panoptic`):
its targets, the grouping of pixels by predicted centres and the grouped output (its training run is in
test_dense_train.py)."""

import pytest
import torch

import lgvit
from lgvit.data import FashionScenes, SceneConfig
from lgvit.dense.segmentation import (
    CENTER_SIGMA,
    IGNORE_INDEX,
    PanopticTargets,
    SegmentationCollate,
    instance_targets,
    segmentation_loss,
)
from lgvit.dense.segmenter import GROUP_WEIGHT, group_pixels, grouped_log_probs, instance_centers

TINY = dict(embed_dim=16, depths=(1, 1, 1), num_heads=(1, 2, 4))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _two_squares() -> torch.Tensor:
    """A (40, 60) instance map: -1 background, instance 0 at rows 5-14 x cols 5-24, instance 1 at 20-35 x 30-55."""
    instances = torch.full((40, 60), -1)
    instances[5:15, 5:25] = 0
    instances[20:36, 30:56] = 1
    return instances


def test_instance_targets_put_a_gaussian_at_each_centre_and_point_every_pixel_to_it() -> None:
    instances = _two_squares()
    heat, offset = instance_targets(instances)
    assert heat.shape == (40, 60) and offset.shape == (2, 40, 60)
    # the centres of mass are (9.5, 14.5) and (27.5, 42.5): the four nearest pixels share the peak
    assert heat[9, 14] == heat[10, 15] == heat.max() and heat[27, 42] == heat[28, 43]
    expected = torch.exp(torch.tensor(-(0.5**2 + 0.5**2) / (2 * CENTER_SIGMA**2)))
    torch.testing.assert_close(heat[9, 14], expected)
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(60.0), indexing="ij")
    pointed = torch.stack([ys + offset[0], xs + offset[1]])  # where each pixel points
    assert torch.equal(pointed[:, 5:15, 5:25], torch.tensor([9.5, 14.5]).view(2, 1, 1).expand(2, 10, 20))
    assert torch.equal(pointed[:, 20:36, 30:56], torch.tensor([27.5, 42.5]).view(2, 1, 1).expand(2, 16, 26))
    assert not offset[:, instances < 0].any()


def test_centres_are_the_heatmaps_local_maxima_above_the_threshold() -> None:
    heat = torch.zeros(30, 30)
    heat[5, 5], heat[5, 8], heat[20, 20], heat[25, 3] = 0.9, 0.5, 0.6, 0.05  # (5, 8) is within 3 px of (5, 5)
    assert sorted(map(tuple, instance_centers(heat).tolist())) == [(5, 5), (20, 20)]
    assert instance_centers(heat, top_k=1).tolist() == [[5, 5]]
    assert len(instance_centers(torch.zeros(8, 8))) == 0


def test_pixels_are_grouped_by_the_centre_their_offsets_point_to() -> None:
    instances = _two_squares()
    heat, offset = instance_targets(instances)
    groups = group_pixels(heat, offset, instances >= 0)
    assert (groups[instances < 0] == -1).all()
    first, second = groups[5, 5].item(), groups[20, 30].item()
    assert first != second and (groups[instances == 0] == first).all() and (groups[instances == 1] == second).all()
    assert (group_pixels(torch.zeros(40, 60), offset, instances >= 0) == -1).all()  # no centre, no groups


def test_a_group_outvotes_a_minority_patch_and_each_pixel_keeps_its_background_share() -> None:
    """Instance 0's pixels lean to class 1, but a 40% patch of them leans a little to class 2: with its group's vote
    the patch comes out class 1. The background and each pixel's background probability are unchanged, instance 1
    stays class 3, and a grouped pixel's class probabilities are half its own and half its group's."""
    instances = _two_squares()
    heat, offset = instance_targets(instances)
    logits = torch.full((4, 40, 60), -4.0)
    logits[0][instances < 0] = 4.0
    logits[0][instances >= 0] = torch.linspace(-1.0, 1.0, int((instances >= 0).sum()))
    logits[1][instances == 0] = 2.0
    logits[2, 5:9, 5:25] = 2.5  # 80 of instance 0's 200 pixels lean to class 2
    logits[3][instances == 1] = 2.0
    out = grouped_log_probs(logits[None], heat[None], offset[None])[0]  # (4, 40, 60)
    own = logits.softmax(0)
    assert (own.argmax(0)[5:9, 5:25] == 2).all()  # the minority patch, before grouping
    pred = out.argmax(0)
    assert (pred[instances == 0] == 1).all() and (pred[instances == 1] == 3).all() and (pred[instances < 0] == 0).all()
    torch.testing.assert_close(out.exp().sum(0), torch.ones(40, 60))  # log-probabilities
    torch.testing.assert_close(out.exp()[0], own[0])
    torch.testing.assert_close(out[:, instances < 0], own.log()[:, instances < 0])
    mask = instances == 0
    vote = own[1:, mask].sum(1) / own[1:, mask].sum()  # (3,): the group's class distribution
    expected = (1 - GROUP_WEIGHT) * own[1:, mask] + GROUP_WEIGHT * (1 - own[0, mask]) * vote[:, None]
    torch.testing.assert_close(out.exp()[1:, mask], expected)


def test_the_panoptic_segmenter_outputs_grouped_log_probs_at_the_input_size() -> None:
    model = lgvit.create_segmenter("gcvit_fmnist", 11, head="panoptic", fpn=32, head_channels=32, **TINY)
    x = torch.randn(2, 1, 67, 93)
    parts = model(x, parts=True)
    assert {k: tuple(v.shape) for k, v in parts.items()} == {
        "logits": (2, 11, 67, 93),
        "center": (2, 67, 93),
        "offset": (2, 2, 67, 93),
    }
    model.eval()
    with torch.no_grad():
        out, parts = model(x), model(x, parts=True)
    torch.testing.assert_close(out, grouped_log_probs(parts["logits"], parts["center"], parts["offset"]))
    plain = lgvit.create_segmenter("gcvit_fmnist", 11, fpn=32, head_channels=32, **TINY)
    assert set(plain.state_dict()) < set(model.state_dict())  # the fpn head's keys are unchanged
    with pytest.raises(ValueError, match="needs the background"):
        lgvit.create_segmenter("gcvit_fmnist", 1, head="panoptic", **TINY)
    with pytest.raises(ValueError, match=r"head='mask'.*\('fpn', 'panoptic'\)"):
        lgvit.create_segmenter("gcvit_fmnist", 11, head="mask", **TINY)


def test_panoptic_scenes_and_batches_carry_the_instances() -> None:
    cfg = SceneConfig(min_side=48, max_side=80)
    panoptic = FashionScenes(split="val", task="panoptic", num_scenes=3, config=cfg)
    segment = FashionScenes(split="val", task="segment", num_scenes=3, config=cfg)
    detect = FashionScenes(split="val", task="detect", num_scenes=3, config=cfg)
    items = [panoptic[i] for i in range(3)]
    for i, (image, target) in enumerate(items):
        assert torch.equal(image, segment[i][0]) and torch.equal(target["semantic"], segment[i][1])
        masks = detect[i][1]["masks"]  # (N, H, W)
        assert torch.equal(target["instances"][None] == torch.arange(len(masks))[:, None, None], masks)
    images, batch = SegmentationCollate([0.1], [0.2])(items)
    assert isinstance(batch, PanopticTargets) and batch.maps.shape == batch.center.shape == images[:, 0].shape
    h, w = items[1][1]["semantic"].shape
    assert (batch.maps[1, h:] == IGNORE_INDEX).all() and not batch.instance[1, h:].any()
    heat, offset = instance_targets(items[1][1]["instances"])
    assert torch.equal(batch.center[1, :h, :w], heat) and torch.equal(batch.offset[1, :, :h, :w], offset)
    model = lgvit.create_segmenter("gcvit_fmnist", 11, head="panoptic", fpn=32, head_channels=32, **TINY)
    loss, _ = segmentation_loss(model, images, batch)
    plain, _ = segmentation_loss(model, images, batch.maps)  # the same logits, cross-entropy alone
    assert torch.isfinite(loss) and loss > plain
