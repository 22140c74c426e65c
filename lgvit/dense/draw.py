"""Pictures of dense predictions next to the ground truth: boxes and instance masks
(torchvision.utils.draw_bounding_boxes, draw_segmentation_masks) or label maps, in one PNG grid."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from ..files import atomic_write

SCORE_SHOWN = 0.5  # predicted boxes below this score are not drawn


def _palette(n: int) -> list[tuple[int, int, int]]:
    """`n` distinct colours (matplotlib's tab20 order, background black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(n - 1)]


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) float in [0, 1] -> (3, H, W) uint8."""
    return (image.expand(3, -1, -1).clamp(0, 1) * 255).round().to(torch.uint8)


def draw_boxes(image: torch.Tensor, result: dict, classes: Sequence[str]) -> torch.Tensor:
    """(C, H, W) image in [0, 1] with `result`'s boxes (and masks, if it has them), labelled by class (and score,
    if it has scores: predictions, the ones >= SCORE_SHOWN) -> (3, H, W) uint8."""
    colors = _palette(len(classes))
    keep = result["scores"] >= SCORE_SHOWN if "scores" in result else torch.ones(len(result["labels"]), dtype=bool)
    labels = result["labels"][keep].tolist()
    out = to_rgb(image)
    if "masks" in result and keep.any():
        masks = result["masks"][keep]
        masks = masks[:, 0] > 0.5 if masks.ndim == 4 else masks.bool()  # predictions: (N, 1, H, W) probabilities
        out = draw_segmentation_masks(out, masks, alpha=0.4, colors=[colors[c] for c in labels])
    names = [classes[c] for c in labels]
    if "scores" in result:
        names = [f"{n} {s:.2f}" for n, s in zip(names, result["scores"][keep].tolist(), strict=True)]
    if not labels:  # nothing to draw (torchvision warns on empty boxes)
        return out
    return draw_bounding_boxes(out, result["boxes"][keep], names, [colors[c] for c in labels], width=1)


def draw_label_map(image: torch.Tensor, label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, H, W) image in [0, 1] with a (H, W) label map's classes painted over it -> (3, H, W) uint8."""
    colors = _palette(num_classes)
    masks = label_map[None] == torch.arange(1, num_classes)[:, None, None]  # (classes - 1, H, W): background unpainted
    return draw_segmentation_masks(to_rgb(image), masks, alpha=0.5, colors=colors[1:])


def save_grid(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], path: Path, scale: int = 2) -> Path:
    """A PNG with one row per (ground truth, prediction) pair of (3, H, W) uint8 pictures, scaled up `scale` times
    (nearest), pictures of different sizes padded to the largest; written atomically."""
    h = max(p.shape[1] for pair in pairs for p in pair)
    w = max(p.shape[2] for pair in pairs for p in pair)
    tiles = [F.pad(p, (0, w - p.shape[2], 0, h - p.shape[1])) for pair in pairs for p in pair]  # each (3, h, w)
    grid = make_grid(torch.stack(tiles), nrow=2, padding=4, pad_value=255)  # (3, H', W')
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    array = np.ascontiguousarray(grid.permute(1, 2, 0).numpy())  # (H', W', 3)
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
    return path
