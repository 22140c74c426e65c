"""The Fashion-MNIST scenes (determinism, boxes and masks against the pasted pixels, the train/test garment
split) and the COCO and label-map folders with their errors."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgvit.data import DEFAULT_IDX_DIR, CocoFolder, FashionScenes, LabelMapFolder, SceneConfig, read_idx

SMALL = SceneConfig(min_side=64, max_side=112, max_objects=5, max_scale=2.5)


@pytest.fixture(scope="module")
def train() -> FashionScenes:
    return FashionScenes(split="train", num_scenes=50, config=SMALL)


@pytest.fixture(scope="module")
def val() -> FashionScenes:
    return FashionScenes(split="val", num_scenes=50, config=SMALL)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def test_scenes_are_a_function_of_seed_split_and_index(val: FashionScenes) -> None:
    again = FashionScenes(split="val", num_scenes=50, config=SMALL)
    later = [again[i] for i in (7, 3, 7)]  # another order, another object: the same scenes
    for (x, t), i in zip(later, (7, 3, 7), strict=True):
        y, u = val[i]
        assert torch.equal(x, y) and _same(t, u)
    other = FashionScenes(split="val", num_scenes=50, config=SMALL, seed=1)
    assert not all(torch.equal(val[i][0].flatten()[:10], other[i][0].flatten()[:10]) for i in range(5))
    assert len({tuple(val[i][0].shape) for i in range(20)}) > 5  # sizes vary, non-square included
    assert {len(val.compose(i)[2]) for i in range(50)} >= {1, 2, 3}


def _check_scene(data: FashionScenes, i: int) -> None:
    """Each instance's mask is the part of its pasted garment no later garment covers; the image holds the
    garment's pixels there; the box is the mask's extent; the label map is the masks' classes."""
    image, target = data[i]
    segment = copy.copy(data)
    segment.task = "segment"
    _, seg = segment[i]
    _, _, placements = data.compose(i)
    masks, boxes = target["masks"], target["boxes"]
    assert masks.shape == (len(placements), *image.shape[1:]) and (masks.sum(0) <= 1).all()
    expected_seg = torch.zeros_like(seg)
    for k, p in enumerate(placements):
        garment = data.garment(p)
        pasted = torch.zeros_like(masks[k])
        pasted[p.top : p.top + p.side, p.left : p.left + p.side] = garment > data.config.threshold
        later = masks[k + 1 :].any(0)
        assert torch.equal(masks[k], pasted & ~later)
        assert masks[k].sum() >= data.config.min_visible * pasted.sum() > 0
        ys, xs = torch.nonzero(masks[k], as_tuple=True)
        assert boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        window = image[0, p.top : p.top + p.side, p.left : p.left + p.side]
        seen = masks[k, p.top : p.top + p.side, p.left : p.left + p.side]
        assert torch.equal(window[seen], garment[seen] / 255)
        assert target["labels"][k] == data.garment_labels[p.garment] + 1
        expected_seg[masks[k]] = target["labels"][k]
    assert torch.equal(seg, expected_seg)
    free = ~masks.any(0)  # (H, W) pixels no garment shows on
    background = data.background(i)  # (H, W) levels 0-255
    assert background.shape == image.shape[1:] and torch.equal(image[0][free], background[free] / 255)
    assert background.max() <= data.config.texture_level


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_masks_and_label_maps_agree_with_the_pasted_pixels(split: str, train, val) -> None:
    data = train if split == "train" else val
    for i in range(12):
        _check_scene(data, i)


def test_train_scenes_hold_only_train_garments_and_val_scenes_only_test_garments(train, val) -> None:
    root = Path(DEFAULT_IDX_DIR)
    train_file = read_idx(next(root.glob("train-images-idx3-ubyte*")))
    test_file = read_idx(next(root.glob("t10k-images-idx3-ubyte*")))
    assert torch.equal(train.garments, train_file) and torch.equal(val.garments, test_file)
    test_bytes = {bytes(g.numpy()) for g in test_file}
    used = [p.garment for i in range(len(train)) for p in train.compose(i)[2]]
    assert used and not any(bytes(train.garments[g].numpy()) in test_bytes for g in used)
    assert all(0 <= p.garment < len(test_file) for i in range(len(val)) for p in val.compose(i)[2])


def test_scene_items_follow_torchvision_conventions(val: FashionScenes) -> None:
    image, target = val[0]
    assert image.dtype == torch.float32 and image.shape[0] == 1 and image.min() >= 0 and image.max() <= 1
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["masks"].dtype == torch.bool
    rgb = FashionScenes(split="val", num_scenes=2, in_chans=3, task="segment", config=SMALL)
    x, seg = rgb[0]
    assert x.shape[0] == 3 and torch.equal(x[0], image[0]) and seg.dtype == torch.int64 and seg.max() <= 10


def test_scene_errors() -> None:
    with pytest.raises(ValueError, match="split='test'.*'train' or 'val'"):
        FashionScenes(split="test")
    with pytest.raises(ValueError, match="task='boxes'"):
        FashionScenes(task="boxes")
    with pytest.raises(ValueError, match="min_side"):
        SceneConfig(min_side=16)
    with pytest.raises(ValueError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(FileNotFoundError, match="no t10k-images"):
        FashionScenes(root="/nonexistent", split="val")
    with pytest.raises(IndexError, match="3 scenes"):
        FashionScenes(split="val", num_scenes=3)[3]


# COCO and label-map folders


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _coco(root: Path) -> dict:
    _png(root / "images" / "a.png", np.full((20, 30, 3), 128, np.uint8))
    _png(root / "images" / "b.png", np.zeros((16, 16, 3), np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 16, "width": 16},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 4, 4], "area": 16, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        ],
    }  # fmt: skip
    (root / "instances.json").write_text(json.dumps(data))
    return data


def test_coco_folder_gives_torchvision_targets(tmp_path: Path) -> None:
    _coco(tmp_path)
    data = CocoFolder(tmp_path)
    assert len(data) == 2 and data.classes == ["background", "dog", "cat"]
    image, target = data[0]
    assert image.shape == (3, 20, 30) and torch.allclose(image, torch.full_like(image, 128 / 255))
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 24, 14]]  # the crowd annotation left out
    assert target["labels"].tolist() == [2, 1] and target["image_id"] == 1
    masks = target["masks"]
    assert masks.shape == (2, 20, 30) and masks.dtype == torch.bool
    assert masks[0, 4:7, 3:11].all() and not masks[0, 10:].any()  # from the polygon
    assert masks[1].sum() == 16 and masks[1, 10:14, 20:24].all()  # no segmentation: the box
    _, empty = data[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, 16, 16)


def test_coco_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="images/ and instances.json"):
        CocoFolder(tmp_path)
    data = _coco(tmp_path)
    (tmp_path / "instances.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoFolder(tmp_path)
    (tmp_path / "instances.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="needs the lists annotations, categories"):
        CocoFolder(tmp_path)
    bad = {**data, "annotations": [{**data["annotations"][0], "category_id": 99}]}
    (tmp_path / "instances.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="category_id 99 not in categories"):
        CocoFolder(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match="1 images that are not in .*: b.png"):
        CocoFolder(tmp_path)
    _png(tmp_path / "images" / "b.png", np.zeros((10, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="b.png is 16x10 but .*says 16x16"):
        CocoFolder(tmp_path)[1]


def test_label_map_folder_pairs_images_and_png_maps(tmp_path: Path) -> None:
    label = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    _png(tmp_path / "images" / "x.jpg", np.full((2, 3, 3), 200, np.uint8))
    _png(tmp_path / "labels" / "x.png", label)
    image, seg = LabelMapFolder(tmp_path)[0]
    assert image.shape == (3, 2, 3) and seg.dtype == torch.int64 and seg.tolist() == label.tolist()
    _png(tmp_path / "labels" / "y.png", label)
    with pytest.raises(FileNotFoundError, match="1 files in .* have no images/<name>.<ext>: y"):
        LabelMapFolder(tmp_path)
    _png(tmp_path / "images" / "y.png", np.zeros((3, 3, 3), np.uint8))
    _png(tmp_path / "images" / "z.png", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="have no labels/<name>.png: z"):
        LabelMapFolder(tmp_path)
    (tmp_path / "images" / "z.png").unlink()
    with pytest.raises(ValueError, match="y.png is 3x2 but .*y.png is 3x3"):
        LabelMapFolder(tmp_path)[1]
    _png(tmp_path / "labels" / "y.png", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="is a RGB image: a label map holds one class index"):
        LabelMapFolder(tmp_path)[1]
    with pytest.raises(FileNotFoundError, match="images/ and labels/"):
        LabelMapFolder(tmp_path / "labels")
