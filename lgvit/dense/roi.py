"""RoIAlign for training the R-CNNs on the CPU: torchvision's `roi_align` as two matrix products per image.

torchvision's CPU `roi_align` backward scatters each sample into the gradient one value at a time, on one
thread: it was 37% of a Faster R-CNN training step on the Fashion scenes (docs/dense.md, "RoIAlign as two
matrix products"). Bilinear sampling is separable, so pooling a RoI is `My @ X @ Mx^T`, with `My` (out_h, H) and
`Mx` (out_w, W) holding each bin's averaged sampling weights along one axis; autograd then back-propagates two
GEMMs. Its cost grows with the whole map (H x W) rather than with the samples, so it is used only where it
pays: on the CPU, for maps of at most `DENSE_MAX_CELLS` cells, with gradients on. Elsewhere (inference, export,
CUDA, large maps) this is torchvision's own op. The two agree up to float rounding (tests/test_dense.py).
"""

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

DENSE_MAX_CELLS = 64 * 64  # above this, torchvision's op was as fast (measured in docs/dense.md)


def _axis_weights(start: torch.Tensor, length: torch.Tensor, size: int, bins: int, samples: int) -> torch.Tensor:
    """(K, bins, size): each bin's weight on each cell along one axis, by roi_align's rules (aligned=False):
    `samples` evenly spaced points per bin, bilinear between cells, points beyond [-1, size] weigh nothing."""
    step = length.clamp(min=1.0) / bins  # (K,)
    dev = start.device
    # (bins, samples): the points' offsets from the RoI's start, in bins
    offsets = torch.arange(bins, device=dev)[:, None] + (torch.arange(samples, device=dev) + 0.5) / samples
    p = start[:, None, None] + step[:, None, None] * offsets  # (K, bins, samples) in cells
    weight = ((p >= -1.0) & (p <= size)).to(start.dtype) / samples
    p = p.clamp(min=0)
    low = p.floor().long().clamp(max=size - 1)
    frac = torch.where(low >= size - 1, 0.0, p - low)  # at the last cell, its value alone
    high = (low + 1).clamp(max=size - 1)
    m = start.new_zeros(start.shape[0], bins, size)
    m.scatter_add_(2, low, weight * (1 - frac))
    return m.scatter_add_(2, high, weight * frac)


def roi_align(
    input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """torchvision's `roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned=False)`:
    (N, C, H, W) maps and (K, 5) rois (image index, x1, y1, x2, y2) -> (K, C, out_h, out_w). Training on the
    CPU, on maps of at most `DENSE_MAX_CELLS` cells, it runs as `separable_roi_align`."""
    h, w = input.shape[-2:]
    dense = input.device.type == "cpu" and input.requires_grad and torch.is_grad_enabled() and h * w <= DENSE_MAX_CELLS
    if dense and sampling_ratio >= 1 and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        return separable_roi_align(input, rois, output_size, spatial_scale, sampling_ratio)
    return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned=False)


def separable_roi_align(
    input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """`roi_align` as `My @ X @ Mx^T` per RoI, one pair of matrix products per image (`sampling_ratio` >= 1;
    any order of rois)."""
    image = rois[:, 0]
    if (image[1:] < image[:-1]).any():  # pool them in image order, return them in the given one
        order = image.argsort(stable=True)
        return separable_roi_align(input, rois[order], output_size, spatial_scale, sampling_ratio)[order.argsort()]
    n, c, h, w = input.shape
    out_h, out_w = output_size
    with torch.no_grad():
        box = rois[:, 1:].float() * spatial_scale  # (K, 4) in cells; weights in fp32, then the map's dtype
        my = _axis_weights(box[:, 1], box[:, 3] - box[:, 1], h, out_h, sampling_ratio).to(input.dtype)  # (K, out_h, H)
        mx = _axis_weights(box[:, 0], box[:, 2] - box[:, 0], w, out_w, sampling_ratio).to(input.dtype)  # (K, out_w, W)
        counts = torch.bincount(rois[:, 0].long(), minlength=n).tolist()
    pooled = []
    for i, (wy, wx) in enumerate(zip(my.split(counts), mx.split(counts), strict=True)):
        rows = wy.flatten(0, 1) @ input[i].transpose(0, 1).reshape(h, c * w)  # (k * out_h, C * W)
        rows = rows.view(-1, out_h, c, w)  # (k, out_h, C, W)
        pooled.append(rows @ wx[:, None].transpose(-1, -2))  # (k, out_h, C, out_w)
    return torch.cat(pooled).permute(0, 2, 1, 3)  # (K, C, out_h, out_w)


class RoIAlignPooler(MultiScaleRoIAlign):
    """torchvision's `MultiScaleRoIAlign` (the same levels, scales and outputs) on `roi_align` above."""

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        maps = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(maps, image_shapes, self.canonical_scale, self.canonical_level)
        rois = _convert_to_roi_format(boxes)  # (K, 5), sorted by image
        if len(maps) == 1:
            return roi_align(maps[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)  # (K,) the level of each box
        first = maps[0]
        out = first.new_zeros(rois.shape[0], first.shape[1], *self.output_size)
        for level, (fmap, scale) in enumerate(zip(maps, self.scales, strict=True)):
            idx = torch.where(levels == level)[0]
            out[idx] = roi_align(fmap, rois[idx], self.output_size, scale, self.sampling_ratio).to(out.dtype)
        return out


def box_pooler(output_size: int) -> nn.Module:
    """The R-CNN RoI pooler torchvision builds by default (levels '0'-'3', sampling ratio 2), on `roi_align`."""
    return RoIAlignPooler(["0", "1", "2", "3"], output_size, sampling_ratio=2)
