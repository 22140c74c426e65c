"""Batches of similar image size for the dense tasks (`lgvit.data.grouping`): the same images in each epoch,
far less padding, a repeatable order, sizes read without loading the images, and the loader `lgvit train` uses."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lgvit.data import CocoFolder, FashionScenes, LabelMapFolder, SceneConfig, save_coco_folder, save_label_map_folder
from lgvit.data.grouping import POOL_BATCHES, SizeGroupedSampler, grouped_order
from lgvit.dense.segmentation import IGNORE_INDEX, SegmentationCollate
from lgvit.training.config import TrainConfig
from lgvit.training.distributed import Dist
from lgvit.training.loop import _train_loader
from lgvit.training.tasks import make_task

SCENES = SceneConfig(min_side=64, max_side=128)


def _padding(order: list[int], size, batch_size: int) -> float:
    """The share of a padded batch that is padding, over the whole batches of `order`."""
    real = padded = 0
    for b in range(0, len(order) - len(order) % batch_size, batch_size):
        sizes = [size(i) for i in order[b : b + batch_size]]
        real += sum(h * w for h, w in sizes)
        padded += batch_size * max(h for h, _ in sizes) * max(w for _, w in sizes)
    return 1 - real / padded


def test_grouped_batches_hold_the_same_images_with_far_less_padding() -> None:
    scenes = FashionScenes(split="train", num_scenes=2 * POOL_BATCHES * 8 + 5, config=SCENES)
    indices = torch.randperm(len(scenes), generator=torch.Generator().manual_seed(0)).tolist()
    order = grouped_order(indices, scenes.image_size, 8, torch.Generator().manual_seed(1))
    assert sorted(order) == sorted(indices) and order[-5:] == indices[-5:]  # the remainder stays last
    pool = POOL_BATCHES * 8
    assert set(order[:pool]) == set(indices[:pool])  # images move only within their pool: the shuffle holds
    random, grouped = _padding(indices, scenes.image_size, 8), _padding(order, scenes.image_size, 8)
    assert random > 0.3 and grouped < random / 3, (random, grouped)
    again = grouped_order(indices, scenes.image_size, 8, torch.Generator().manual_seed(1))
    other = grouped_order(indices, scenes.image_size, 8, torch.Generator().manual_seed(2))
    assert again == order and other != order
    batches = lambda o: sorted(tuple(sorted(o[b : b + 8])) for b in range(0, len(o) - 5, 8))  # noqa: E731
    assert batches(other) == batches(order)  # the seed shuffles the batches, not what is in them


def test_the_sampler_and_small_sets() -> None:
    sizes = {i: (i % 3 + 1, 5 - i % 3) for i in range(10)}
    sampler = SizeGroupedSampler(list(range(10)), sizes.__getitem__, 4, seed=3)
    assert len(sampler) == 10 and sorted(sampler) == list(range(10)) and list(sampler) == list(sampler)
    assert list(sampler)[-2:] == [8, 9]
    assert grouped_order([], sizes.__getitem__, 4, torch.Generator()) == []
    assert grouped_order([7, 1], sizes.__getitem__, 4, torch.Generator()) == [7, 1]  # no whole batch


def test_image_sizes_are_those_of_the_items(tmp_path: Path) -> None:
    scenes = FashionScenes(split="val", task="detect", num_scenes=4, config=SceneConfig(min_side=32, max_side=80))
    assert len({scenes.image_size(i) for i in range(4)}) > 1
    assert all(scenes.image_size(i) == tuple(scenes[i][0].shape[1:]) for i in range(4))
    coco = CocoFolder(save_coco_folder(scenes, tmp_path / "coco", ["background", *scenes.classes[1:]]), in_chans=1)
    assert all(coco.image_size(i) == scenes.image_size(i) for i in range(4))
    path = tmp_path / "coco" / "instances.json"
    data = json.loads(path.read_text())
    for image in data["images"]:  # width and height are optional in COCO files: then the image says
        del image["width"], image["height"]
    path.write_text(json.dumps(data))
    assert all(CocoFolder(tmp_path / "coco", in_chans=1).image_size(i) == scenes.image_size(i) for i in range(4))
    maps = FashionScenes(split="val", task="segment", num_scenes=4, config=SceneConfig(min_side=32, max_side=80))
    folder = LabelMapFolder(save_label_map_folder(maps, tmp_path / "seg"), in_chans=1)
    assert all(folder.image_size(i) == tuple(maps[i][1].shape) for i in range(4))
    (tmp_path / "seg" / "labels" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read label map .*000001.png.*replace or remove the pair"):
        folder.image_size(1)


def test_lgvit_train_batches_scenes_of_similar_size() -> None:
    """The loader `lgvit train --task segment` builds: grouped by default, the same scenes either way."""
    cfg = TrainConfig(task="segment", train_scenes=POOL_BATCHES * 8, scene_size=128, batch_size=8)
    task = make_task(cfg)
    data = task.data()
    batches = {}
    for group in (True, False):
        loader = _train_loader(data, replace(cfg, group_sizes=group), Dist(), 0, 0, None, task.collate(data))
        assert isinstance(loader.collate_fn, SegmentationCollate)
        batches[group] = [(x.numel(), int((y != IGNORE_INDEX).sum())) for x, y in loader]
    padded = {g: sum(n for n, _ in b) for g, b in batches.items()}
    labelled = {g: sum(n for _, n in b) for g, b in batches.items()}
    assert labelled[True] == labelled[False]  # the same scenes' pixels
    assert padded[True] < 0.8 * padded[False]  # in much less padding
