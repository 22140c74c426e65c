"""The figures of `lgvit explain` and of the training report: heat maps blended on the image (matplotlib, Agg),
one panel per head or stage, a colour bar, written atomically.

Every panel is 2.4 inches at 100 dpi (240 px) with 9-pt titles, so a figure is readable at 100%.
"""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ..files import atomic_write  # noqa: E402
from .cam import default_stage, grad_cam, layer_cam  # noqa: E402
from .maps import attention_rollout, collect, to_maps  # noqa: E402

PANEL, DPI = 2.4, 100
Panels = list[tuple[str, torch.Tensor]]  # (panel title, (h, w) map)


def display_image(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """A normalised (C, H, W) image as shown: (H, W) for one channel, (H, W, 3) for three, in [0, 1]."""
    img = x.detach().cpu().float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    img = img.clamp(0, 1)
    return img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)  # (H, W) or (H, W, 3)


def _cell_stride(hw: tuple[int, int], size: tuple[int, int], reduction: int) -> int:
    """The pixels per cell of an (h, w) map on an (H, W) image: the level's stride where h = ceil(H / stride),
    else the stride that tiles the image (TNT's pixel maps, PVT's reduced keys)."""
    if -(-size[0] // reduction) != hw[0] or -(-size[1] // reduction) != hw[1]:
        return size[0] // hw[0]
    return reduction


Centre = tuple[float, float]  # (row, col) pixel of cell (0, 0)'s centre: `model.cell_centre(level, size)`


def _geometry(hw: tuple[int, int], size: tuple[int, int], reduction: int, centre: Centre | None) -> tuple[int, Centre]:
    """The pixels per cell and cell (0, 0)'s centre of an (h, w) map on an (H, W) image: the level's, or for a
    map that only tiles the image (`_cell_stride`) or no `centre`, the tiling's (cell i over r*i .. r*i + r - 1)."""
    r = _cell_stride(hw, size, reduction)
    if centre is None or r != reduction:
        return r, ((r - 1) / 2, (r - 1) / 2)
    return r, centre


def fit_to_image(m: torch.Tensor, size: tuple[int, int], reduction: int, centre: Centre | None = None) -> torch.Tensor:
    """(..., h, w) maps of a level with stride `reduction` -> (..., H, W) on the image, bilinearly.

    Cell (i, j)'s value lands on its centre, pixel `centre` + r * (i, j) (default: the cells tile the image,
    cell i over pixels r*i .. r*i + r - 1), and is held flat past the outer cells' centres. A padded stage's
    h = ceil(H / r) cells reach past the image: the pixels beyond it are not drawn. Maps whose side is not
    ceil(H / reduction) (TNT's pixel maps, PVT's reduced keys) tile the image exactly."""
    h, w = m.shape[-2:]
    r, (c0, c1) = _geometry((h, w), size, reduction, centre)
    flat = m.detach().cpu().float().reshape(-1, 1, h, w)  # (N, 1, h, w)
    # each pixel's position in cells, normalised to [-1, 1] over the cell centres (grid_sample, align_corners)
    rows = (torch.arange(size[0]) - c0) / r * 2 / max(h - 1, 1) - 1  # (H,)
    cols = (torch.arange(size[1]) - c1) / r * 2 / max(w - 1, 1) - 1  # (W,)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    grid = grid.expand(flat.shape[0], *grid.shape)  # (N, H, W, 2)
    up = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]  # (N, H, W)
    return up.reshape(*m.shape[:-2], *up.shape[-2:])  # (..., H, W)


def peak(
    m: torch.Tensor, size: tuple[int, int], reduction: int, centre: Centre | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) rows and columns of the pixel of the (H, W) image that each (B, h, w) map of a level of stride
    `reduction` points at: the centre of its maximal cell, placed as `fit_to_image` places it (`centre` +
    r * (i, j), rounded down), inside the image.

    Not the argmax of the resized map: bilinear resizing is flat over the outer half-cell of a map, and of tied
    pixels argmax takes the first, so a maximum in a top or left edge cell would point at row or column 0."""
    r, (c0, c1) = _geometry(tuple(m.shape[-2:]), size, reduction, centre)
    cell = m.flatten(1).argmax(1)  # (B,) index into the row-major (h, w) map
    rows = (cell // m.shape[-1] * r + int(c0)).clamp(0, size[0] - 1)
    return rows, (cell % m.shape[-1] * r + int(c1)).clamp(0, size[1] - 1)


def pointing_hits(rows: torch.Tensor, cols: torch.Tensor, boxes: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """(B,) whether each point (rows[b], cols[b]) lies within `tolerance` pixels (Euclidean) of its box, (B, 4)
    as (top, left, bottom, right), inclusive. 0 is the strict pointing game; Zhang et al. (2016, TorchRay's
    `PointingGame`) count a point within 15 px of the object on PASCAL VOC and COCO images."""
    dr = (boxes[:, 0] - rows).clamp_min(0) + (rows - boxes[:, 2]).clamp_min(0)  # rows outside the box
    dc = (boxes[:, 1] - cols).clamp_min(0) + (cols - boxes[:, 3]).clamp_min(0)  # columns outside the box
    return dr.square() + dc.square() <= tolerance**2


def _upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) map resized bilinearly to the image's (H, W), its minimum to 0 and its maximum to 1."""
    h = F.interpolate(heat.detach().cpu().float()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return ((h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)).clamp(0, 1)  # (H, W)


def show(ax: plt.Axes, image: torch.Tensor, heat: torch.Tensor | None = None, title: str = "") -> object:
    """The image on `ax`, with `heat` (a (h, w) map) blended on it; returns the heat map's artist."""
    ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    art = None
    if heat is not None:
        art = ax.imshow(_upsample(heat, tuple(image.shape[:2])).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return art


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """The figure as a PNG at `path`, rendered to memory first and then written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def _wrap(rows: list[tuple[str, Panels]], width: int = 8) -> list[tuple[str, Panels]]:
    """Rows of more than `width` panels (many heads) split into several."""
    return [(label, panels[i : i + width]) for label, panels in rows for i in range(0, max(len(panels), 1), width)]


def panels_figure(image: torch.Tensor, title: str, rows: list[tuple[str, Panels]], path: Path) -> Path:
    """One row per (label, panels), at most 8 panels a row: the image (titled `title` in the first row, the
    label below), then the overlays; one colour bar for all (each map spans its own minimum to maximum)."""
    rows = _wrap(rows)
    cols = 1 + max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(PANEL * cols + 0.8, PANEL * len(rows) + 0.5), squeeze=False)
    art = None
    for r, (label, panels) in enumerate(rows):
        show(axes[r, 0], image, None, title if r == 0 else "")
        axes[r, 0].text(0.5, -0.08, label, transform=axes[r, 0].transAxes, ha="center", va="top", fontsize=9)
        for c in range(1, cols):
            if c <= len(panels):
                art = show(axes[r, c], image, panels[c - 1][1], panels[c - 1][0])
            else:
                axes[r, c].axis("off")
    fig.colorbar(art, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label="each map, min to max")
    return save_figure(fig, path)


def grid_figure(
    images: list[torch.Tensor], titles: list[str], path: Path, heats: list[torch.Tensor] | None = None
) -> Path:
    """Images (each with its title, and its heat map if `heats`) in rows of up to 8: the report's grids."""
    cols = min(8, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(images):
            show(ax, images[i], heats[i] if heats else None, titles[i])
        else:
            ax.axis("off")
    fig.tight_layout(h_pad=1.5)  # room for the two-line titles between rows
    return save_figure(fig, path)


def top_title(logits: torch.Tensor, classes: list[str], topk: int) -> str:
    """The top-k classes with their probabilities, one a line."""
    p, i = logits.float().softmax(-1).topk(min(topk, len(classes)))
    return "\n".join(f"{classes[j]} {100 * q:.1f}%" for q, j in zip(p.tolist(), i.tolist(), strict=True))


def stage_of(name: str) -> int:
    """The stage (hierarchical models, PVT) or block (DeiT, TNT) a module's name is in."""
    return int(name.split(".")[1])


def _block_key(name: str) -> str:
    """'stages.i.blocks.j' or 'blocks.j': the block a module belongs to."""
    parts = name.split(".")
    return ".".join(parts[:4] if parts[0] == "stages" and len(parts) > 4 else parts[:2])


def _last_block(model: nn.Module, names: list[str], stage: int, global_query: bool) -> list[str]:
    """The attention modules of the last block of `stage` that are (or are not) global-query attention."""
    picked = [
        n
        for n in names
        if stage_of(n) == stage and getattr(model.get_submodule(n), "global_query", False) == global_query
    ]
    last = _block_key(picked[-1]) if picked else None
    return [n for n in picked if _block_key(n) == last]


def _fit(model: nn.Module, m: torch.Tensor, level: int, x: torch.Tensor) -> torch.Tensor:
    """A map of `feature_info[level]`'s resolution on the (H, W) of the image batch `x` (`fit_to_image`), each
    cell on the pixel the model centres it on."""
    size = tuple(x.shape[-2:])
    return fit_to_image(m, size, model.feature_info[level]["reduction"], model.cell_centre(level, size))


def _heads(m: torch.Tensor) -> torch.Tensor:
    """One image's map as (heads, h, w): window maps averaged over their query slots."""
    return m[0].mean(1) if m.ndim == 5 else m[0]  # (heads, h, w)


def attention_rows(
    model: nn.Module, x: torch.Tensor, stage: int | None, global_query: bool
) -> tuple[torch.Tensor, list[tuple[str, Panels]]]:
    """Logits and one row per attention module of the stage's last (global-query or local) block: its heads.
    `stage` None: the last stage that has such attention."""
    logits, raw = collect(model, x)
    kind = [n for n in raw if getattr(model.get_submodule(n), "global_query", False) == global_query]
    stages = sorted({stage_of(n) for n in kind})
    stage = stages[-1] if stage is None and stages else stage
    if stage not in stages:
        what = "global-query attention" if global_query else "attention"
        raise ValueError(f"--stage {stage}: {type(model).__name__} has {what} in stages {stages}: choose one of them")
    names = _last_block(model, kind, stage, global_query)
    maps = to_maps(model, {n: raw[n] for n in names}, x.shape[0])
    fitted = {n: _fit(model, _heads(maps[n]), stage, x) for n in names}  # each (heads, H, W)
    return logits, [(n, [(f"head {h}", m) for h, m in enumerate(fitted[n])]) for n in names]


def local_global_rows(model: nn.Module, x: torch.Tensor) -> list[tuple[str, Panels]]:
    """GC ViT: per stage, the last local block's and the last global-query block's maps, heads averaged."""
    _, raw = collect(model, x)
    maps = to_maps(model, raw, x.shape[0])
    rows = []
    for stage in sorted({stage_of(n) for n in maps}):
        local, glob = _last_block(model, list(maps), stage, False), _last_block(model, list(maps), stage, True)
        if local and glob:
            panels = [
                ("local attention", _fit(model, _heads(maps[local[-1]]).mean(0), stage, x)),
                ("global query", _fit(model, _heads(maps[glob[-1]]).mean(0), stage, x)),
            ]
            rows.append((f"stage {stage}", panels))
    return rows


CAMS = {"gradcam": ("Grad-CAM", grad_cam), "layercam": ("Layer-CAM", layer_cam)}


def cam_rows(
    model: nn.Module, x: torch.Tensor, stage: int | None, method: str, layer: str | None = None
) -> tuple[torch.Tensor, list]:
    """Logits and one row of `method`'s panels (a key of `CAMS`): the module named `layer`, `stage`, or every
    stage of a hierarchical model (the default level of a class-token model). A layer's cells tile the image."""
    name, cam_of = CAMS[method]
    if layer is not None:
        cam, logits = cam_of(model, x, layer=layer)
        size = tuple(x.shape[-2:])
        return logits, [(name, [(f"{name}, {layer}", fit_to_image(cam[0], size, -(-size[0] // cam.shape[1])))])]
    if stage is None and model.head.pool != "token":
        levels = list(range(len(model.feature_info)))
    else:
        levels = [default_stage(model) if stage is None else stage]
    panels, logits = [], None
    for level in levels:
        cam, logits = cam_of(model, x, stage=level)
        panels.append((f"{name}, level {level % len(model.feature_info)}", _fit(model, cam[0], level, x)))
    return logits, [(name, panels)]


def explain_image(
    model: nn.Module,
    x: torch.Tensor,
    image: torch.Tensor,
    classes: list[str],
    method: str,
    stage: int | None,
    topk: int,
    out: Path,
    layer: str | None = None,
) -> list[Path]:
    """The PNGs of one prepared image `x` (1, C, H, W) shown as `image`: `{out}_input.png`, `{out}_{method}.png`
    (the top-k in the first title, one overlay per head or level) and, for GC ViT's attention maps,
    `{out}_local_global.png`. `stage` None: the last stage (attention), every stage or the default level
    (Grad-CAM, Layer-CAM); `layer`: Grad-CAM or Layer-CAM of that module instead."""
    if method in CAMS:
        logits, rows = cam_rows(model, x, stage, method, layer)
    elif method == "rollout":
        with torch.no_grad():
            logits = model.eval()(x)
        rows = [("rollout", [("attention rollout", _fit(model, attention_rollout(model, x)[0], -1, x))])]
    else:
        logits, rows = attention_rows(model, x, stage, method == "global")
    title = top_title(logits[0], classes, topk)
    fig, ax = plt.subplots(figsize=(PANEL, PANEL + 0.5))
    show(ax, image, None, title)
    paths = [save_figure(fig, Path(f"{out}_input.png")), panels_figure(image, title, rows, Path(f"{out}_{method}.png"))]
    if method in ("attention", "global") and any(getattr(m, "global_query", False) for m in model.modules()):
        paths.append(panels_figure(image, title, local_global_rows(model, x), Path(f"{out}_local_global.png")))
    return paths
