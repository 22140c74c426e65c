"""Real-data counterparts of the Fashion scenes, ImageFolder's dense cousins:

- `CocoFolder`: `images/` + `instances.json` (COCO format) for detection and instance segmentation, read with
  pycocotools, items in torchvision's detection convention;
- `LabelMapFolder`: `images/` + `labels/` (PNG label maps of the same stem) for semantic segmentation;
- `save_coco_folder` and `save_label_map_folder` write any dataset in those layouts (the Fashion scenes, say), so
  a folder of real data can be checked against a known one.

Missing folders, files and unknown ids are found when the dataset is made; an image whose size disagrees with
its annotation or label map raises when it is read, naming both files.
"""

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import pil_to_tensor

from ..files import atomic_write, atomic_write_text
from .folder import load_image, pil_mode

_SHOWN = 5  # missing files named in an error


def _listing(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"no folder {path}: {what}")
    return path


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return pil_to_tensor(img).float() / 255  # (C, H, W) in [0, 1]


def _read_coco(path: Path) -> dict:
    """The parsed annotation file, checked for COCO's three lists."""
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file {path}: a COCO folder holds images/ and instances.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): write it in COCO's format") from e
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{path} is not a COCO instances file: it needs the lists {', '.join(missing)}")
    return data


def _check_ids(data: dict, path: Path) -> None:
    """Every annotation names a listed image and category, and has a box."""
    images, cats = {im["id"] for im in data["images"]}, {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            raise ValueError(f"{path}: annotation {ann.get('id')} names image_id {ann.get('image_id')} not in images")
        if ann.get("category_id") not in cats:
            raise ValueError(
                f"{path}: annotation {ann.get('id')} names category_id {ann.get('category_id')} not in categories"
            )
        if not (isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4):
            raise ValueError(f"{path}: annotation {ann.get('id')} has no [x, y, w, h] bbox")


class CocoFolder(Dataset):
    """A COCO folder: `root/images/` and `root/instances.json`, in torchvision's detection convention.

    Items are (image (C, H, W) float in [0, 1], {'boxes': (N, 4) xyxy float, 'labels': (N,) int64 in 1..K,
    'masks': (N, H, W) bool (with `masks`), 'image_id': int}). Labels number the categories 1..K in the order
    of their ids (`classes[label]` names them, `classes[0]` is 'background'); crowd annotations and empty
    boxes are left out. Needs pycocotools (`pip install 'lgvit[dense]'`).
    """

    def __init__(self, root: str | Path, masks: bool = True, in_chans: int = 3) -> None:
        try:
            from pycocotools.coco import COCO
        except ImportError as e:
            raise ImportError("CocoFolder reads COCO files with pycocotools: pip install 'lgvit[dense]'") from e
        self.root, self.masks, self.mode = Path(root), masks, pil_mode(in_chans)
        self.images_dir = _need_dir(self.root / "images", "a COCO folder holds images/ and instances.json")
        path = self.root / "instances.json"
        data = _read_coco(path)
        _check_ids(data, path)
        absent = [im["file_name"] for im in data["images"] if not (self.images_dir / im["file_name"]).is_file()]
        if absent:
            raise FileNotFoundError(
                f"{path} lists {len(absent)} images that are not in {self.images_dir}: {_listing(absent)}; "
                "add them or remove their entries"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs)
        cat_ids = sorted(self.coco.cats)
        self.label_of = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.classes = ["background", *(self.coco.cats[c]["name"] for c in cat_ids)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.coco.imgs[self.ids[index]]
        path = self.images_dir / info["file_name"]
        img = load_image(str(path), self.mode)
        if (img.height, img.width) != (info.get("height", img.height), info.get("width", img.width)):
            raise ValueError(
                f"{path} is {img.width}x{img.height} but {self.root / 'instances.json'} says "
                f"{info['width']}x{info['height']}: fix the annotation or the image"
            )
        anns = [
            a
            for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"]))
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)  # (N, 4) xywh
        boxes[:, 2:] += boxes[:, :2]  # (N, 4) xyxy
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(info["id"]),
        }
        if self.masks:
            masks = [torch.from_numpy(self._mask(a, info)).bool() for a in anns]
            target["masks"] = torch.stack(masks) if masks else torch.zeros(0, img.height, img.width, dtype=torch.bool)
        return _to_tensor(img), target

    def image_size(self, index: int) -> tuple[int, int]:
        """Image `index`'s (height, width) as instances.json gives it (else read from the image)."""
        info = self.coco.imgs[self.ids[index]]
        if "height" in info and "width" in info:
            return int(info["height"]), int(info["width"])
        img = load_image(str(self.images_dir / info["file_name"]), self.mode)
        return img.height, img.width

    def _mask(self, ann: dict, info: dict) -> np.ndarray:
        """The annotation's (H, W) mask; an annotation without a segmentation is filled from its box."""
        if ann.get("segmentation"):
            with warnings.catch_warnings():  # pycocotools' decode predates numpy 2's copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                return self.coco.annToMask(ann)
        x, y, w, h = ann["bbox"]
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        return mask


class LabelMapFolder(Dataset):
    """Semantic segmentation from `root/images/` and `root/labels/`: each image has a PNG label map of its stem
    (`images/a.jpg` <-> `labels/a.png`), one class index per pixel (255 is commonly the ignore index).

    Items are (image (C, H, W) float in [0, 1], (H, W) int64 label map).
    """

    def __init__(self, root: str | Path, in_chans: int = 3) -> None:
        self.root, self.mode = Path(root), pil_mode(in_chans)
        layout = "a label-map folder holds images/ and labels/ (PNG maps with the images' names)"
        images_dir, labels_dir = _need_dir(self.root / "images", layout), _need_dir(self.root / "labels", layout)
        images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.name.lower().endswith(IMG_EXTENSIONS)}
        labels = {p.stem: p for p in sorted(labels_dir.glob("*.png"))}
        if not images:
            raise FileNotFoundError(f"{images_dir} holds no images ({', '.join(IMG_EXTENSIONS)})")
        for have, lack, kind in ((images, labels, "labels/<name>.png"), (labels, images, "images/<name>.<ext>")):
            if unmatched := sorted(set(have) - set(lack)):
                raise FileNotFoundError(
                    f"{len(unmatched)} files in {self.root} have no {kind}: {_listing(unmatched)}; "
                    "add the missing files or remove these"
                )
        self.pairs = [(images[k], labels[k]) for k in sorted(images)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        img = load_image(str(image_path), self.mode)
        with Image.open(label_path) as lab:
            if lab.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(
                    f"{label_path} is a {lab.mode} image: a label map holds one class index per pixel "
                    "(a grayscale or palette PNG)"
                )
            label = torch.from_numpy(np.array(lab, dtype=np.int64))  # (H, W)
        if tuple(label.shape) != (img.height, img.width):
            raise ValueError(
                f"{label_path} is {label.shape[1]}x{label.shape[0]} but {image_path} is {img.width}x{img.height}: "
                "a label map must match its image"
            )
        return _to_tensor(img), label

    def image_size(self, index: int) -> tuple[int, int]:
        """Pair `index`'s (height, width), from its label map's header (its image must match it)."""
        path = self.pairs[index][1]
        try:
            with Image.open(path) as lab:
                return lab.height, lab.width
        except OSError as e:
            raise ValueError(f"cannot read label map {path}: {e}; replace or remove the pair") from e


def _save_png(path: Path, array: np.ndarray) -> None:
    """A (H, W) or (H, W, 3) uint8 array as a PNG, written atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _image_array(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) float image in [0, 1] as (H, W) or (H, W, 3) uint8."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()


def save_coco_folder(dataset: Dataset, root: str | Path, classes: list[str]) -> Path:
    """Writes a detection dataset (items as `CocoFolder`'s, with or without 'masks') as a COCO folder:
    `root/images/000000.png`, ... and `root/instances.json`, masks as COCO's compressed RLE, `classes[label]`
    naming category `label` (`classes[0]`, the background, is not a category). Every file is written
    atomically, the JSON last, so an interrupted export is not a valid folder. Returns `root`."""
    from pycocotools import mask as coco_mask

    root = Path(root)
    images, annotations = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        name = f"{index:06d}.png"
        _save_png(root / "images" / name, _image_array(image))
        images.append({"id": index + 1, "file_name": name, "height": image.shape[1], "width": image.shape[2]})
        for k, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True)):
            x1, y1, x2, y2 = box
            ann = {"id": len(annotations) + 1, "image_id": index + 1, "category_id": label, "iscrowd": 0}
            ann |= {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}  # COCO: the mask's, if any
            if "masks" in target:
                mask = target["masks"][k].numpy().astype(np.uint8)  # (H, W)
                rle = coco_mask.encode(np.asfortranarray(mask))
                ann |= {
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": int(mask.sum()),
                }
            annotations.append(ann)
    categories = [{"id": i, "name": name} for i, name in enumerate(classes) if i > 0]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(root / "instances.json", json.dumps(coco))
    return root


def save_label_map_folder(dataset: Dataset, root: str | Path) -> Path:
    """Writes a segmentation dataset ((image, (H, W) int64 label map) items) as a label-map folder:
    `root/images/000000.png` and `root/labels/000000.png` (8-bit maps: class indices 0-255), atomically.
    Returns `root`."""
    root = Path(root)
    for index in range(len(dataset)):
        image, labels = dataset[index]
        if labels.min() < 0 or labels.max() > 255:
            raise ValueError(f"item {index}'s label map holds {labels.min()}..{labels.max()}: 8-bit PNGs take 0-255")
        _save_png(root / "images" / f"{index:06d}.png", _image_array(image))
        _save_png(root / "labels" / f"{index:06d}.png", labels.to(torch.uint8).numpy())
    return root
