"""Fashion-MNIST scenes: a detection and segmentation task built on the fly from the IDX files (docs/dense.md).

Each scene is a canvas of random height and width with 1 to 6 garments pasted at random positions and scales,
on black or a lightly textured background. A garment's mask is its pixels above a threshold; later garments
cover earlier ones (paste order), a placement that would leave an earlier garment less than `min_visible`
visible is drawn again, and each instance's box and mask are its visible pixels. Train scenes use only the
train split's garments, 'val' scenes only the 10,000 test garments. Scene `i` is a pure function of
(seed, split, i): the same on every machine, worker and epoch, with no cache.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes

from .idx import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, SPLITS, load_idx_split

TASKS = ("detect", "segment", "panoptic")
SCENE_CLASSES = ("background", *FASHION_MNIST_CLASSES)  # detection labels and label-map values index this
_TRIES = 10  # placements drawn per garment before it is left out


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn; every field is checked when the config is made."""

    min_side: int = 96  # canvas height and width, each uniform in [min_side, max_side]
    max_side: int = 192
    min_objects: int = 1  # garments tried per scene, uniform in [min_objects, max_objects]
    max_objects: int = 6
    min_scale: float = 1.0  # a garment's side is 28 px times a scale uniform in [min_scale, max_scale]
    max_scale: float = 3.0
    textured: float = 0.5  # the share of scenes on a textured (not black) background
    texture_level: int = 48  # the brightest background pixel, of 255
    threshold: int = 20  # a garment pixel above this (of 255) is pasted and part of its mask
    min_visible: float = 0.5  # the share of each garment's mask later garments may not hide

    def __post_init__(self) -> None:
        ints = ("min_side", "max_side", "min_objects", "max_objects", "texture_level", "threshold")
        for f in ints:
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                raise ValueError(f"SceneConfig: {f}={getattr(self, f)!r} must be an int >= 0")
        if not 28 <= self.min_side <= self.max_side:
            raise ValueError(f"SceneConfig: need 28 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"SceneConfig: need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if not (0 <= self.textured <= 1 and 0 <= self.min_visible <= 1):
            raise ValueError("SceneConfig: textured and min_visible are shares in [0, 1]")
        if self.threshold >= 255 or self.texture_level > 255:
            raise ValueError("SceneConfig: threshold and texture_level are pixel levels below 255")


@dataclass(frozen=True)
class Placement:
    """One pasted garment: its index in the split's IDX file, its class (0-9), where and how large."""

    garment: int
    label: int
    top: int
    left: int
    side: int


class FashionScenes(Dataset):
    """Scenes of pasted Fashion-MNIST garments in torchvision's detection or segmentation convention.

    Args:
        root: a Fashion-MNIST IDX folder (default: Debian's dataset-fashion-mnist).
        split: 'train' (garments of the train file) or 'val' (garments of the t10k file).
        task: 'detect' gives (image, {'boxes': (N, 4) xyxy float, 'labels': (N,) int64 in 1..10, 'masks':
            (N, H, W) bool}); 'segment' gives (image, (H, W) int64 map: 0 background, 1..10 the classes);
            'panoptic' gives (image, {'semantic': that map, 'instances': (H, W) int64, -1 on the background, else
            the index of the garment seen there, in paste order}).
        seed: scene i is a pure function of (seed, split, i).
        num_scenes: the dataset's length (default 10,000 train, 1,000 val scenes).
        config: how scenes are drawn (`SceneConfig`).
        in_chans: the image's channels, 1 or 3 (the gray image repeated); images are float in [0, 1].
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_IDX_DIR,
        split: str = "train",
        task: str = "detect",
        seed: int = 0,
        num_scenes: int | None = None,
        config: SceneConfig | None = None,
        in_chans: int = 1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a scene split: use 'train' or 'val'")
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not a scene task: use one of {', '.join(TASKS)}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans={in_chans!r}: scenes come as 1 (gray) or 3 (gray repeated) channels")
        num_scenes = (10_000 if split == "train" else 1_000) if num_scenes is None else num_scenes
        if not isinstance(num_scenes, int) or num_scenes < 1:
            raise ValueError(f"num_scenes={num_scenes!r} must be an int >= 1")
        self.split, self.task, self.seed, self.num_scenes = split, task, int(seed), num_scenes
        self.config, self.in_chans = config or SceneConfig(), in_chans
        images, labels = load_idx_split(Path(root), split)
        self.garments, self.garment_labels = images[:, 0], labels  # (N, 28, 28) uint8, (N,)
        self.classes = SCENE_CLASSES

    def __len__(self) -> int:
        return self.num_scenes

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene {index} is out of range: this set has {self.num_scenes} scenes")
        return np.random.default_rng([self.seed, list(SPLITS).index(self.split), index])

    def _side_lengths(self, rng: np.random.Generator) -> tuple[int, int]:
        """A scene's (height, width): the first draw of its generator."""
        h, w = rng.integers(self.config.min_side, self.config.max_side + 1, size=2)
        return int(h), int(w)

    def image_size(self, index: int) -> tuple[int, int]:
        """Scene `index`'s (height, width), without drawing the scene (for batches of similar size)."""
        return self._side_lengths(self._rng(index))

    def background(self, index: int) -> torch.Tensor:
        """Scene `index`'s (H, W) background without its garments: the same draws as `compose` begins with."""
        rng = self._rng(index)
        return self._background(rng, *self._side_lengths(rng))

    def garment(self, placement: Placement) -> torch.Tensor:
        """The garment of `placement` resized to its side: (side, side) float pixel levels 0-255."""
        g = self.garments[placement.garment][None, None].float()  # (1, 1, 28, 28)
        size = (placement.side, placement.side)
        return F.interpolate(g, size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0].round()

    def _background(self, rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
        """(h, w) float levels: black, or smooth noise up to `texture_level`."""
        if rng.random() >= self.config.textured:
            return torch.zeros(h, w)
        coarse = torch.from_numpy(rng.random((1, 1, h // 12 + 2, w // 12 + 2))).float()  # (1, 1, h', w')
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0, 0]  # (h, w)
        return (smooth.clamp(0, 1) * self.config.texture_level).round()

    def _draw(self, rng: np.random.Generator, h: int, w: int) -> Placement:
        c = self.config
        i = int(rng.integers(len(self.garments)))
        side = min(h, w, round(28 * rng.uniform(c.min_scale, c.max_scale)))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        return Placement(i, int(self.garment_labels[i]), top, left, side)

    def compose(self, index: int) -> tuple[torch.Tensor, torch.Tensor, list[Placement]]:
        """Scene `index`: its (H, W) float levels 0-255, its (H, W) owner map (-1 background, else the index
        into the placements of the garment seen there) and the placements, in paste order."""
        rng, c = self._rng(index), self.config
        h, w = self._side_lengths(rng)
        canvas, owner = self._background(rng, h, w), torch.full((h, w), -1)
        placements, areas = [], []
        for _ in range(int(rng.integers(c.min_objects, c.max_objects + 1))):
            for _ in range(_TRIES):
                p = self._draw(rng, h, w)
                g = self.garment(p)
                mask = torch.zeros(h, w, dtype=torch.bool)
                mask[p.top : p.top + p.side, p.left : p.left + p.side] = g > c.threshold
                trial = owner.masked_fill(mask, len(placements))
                seen = torch.bincount(trial[trial >= 0], minlength=len(placements) + 1)[: len(placements)]
                if int(mask.sum()) and all(int(s) >= c.min_visible * a for s, a in zip(seen, areas, strict=True)):
                    break
            else:
                continue  # no placement kept every earlier garment visible enough: leave this one out
            window = canvas[p.top : p.top + p.side, p.left : p.left + p.side]
            window[g > c.threshold] = g[g > c.threshold]
            owner, areas = trial, [*areas, int(mask.sum())]
            placements.append(p)
        return canvas, owner, placements

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor] | torch.Tensor]:
        canvas, owner, placements = self.compose(index)
        image = (canvas / 255).expand(self.in_chans, -1, -1).contiguous()  # (C, H, W)
        labels = torch.tensor([p.label + 1 for p in placements], dtype=torch.int64)
        if self.task != "detect":
            lookup = torch.cat([torch.zeros(1, dtype=torch.int64), labels])
            semantic = lookup[owner + 1]  # (H, W): 0 background, else the garment's class + 1
            return image, semantic if self.task == "segment" else {"semantic": semantic, "instances": owner}
        masks = owner[None] == torch.arange(len(placements))[:, None, None]  # (N, H, W)
        return image, {"boxes": _mask_boxes(masks), "labels": labels, "masks": masks}


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) non-empty bool masks -> (N, 4) float xyxy boxes of their pixel extents (x2, y2 exclusive)."""
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # (N, 4)
