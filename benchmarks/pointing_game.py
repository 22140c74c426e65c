"""The pointing game: does a map's maximum fall on the object? Fashion-MNIST garments on a larger black canvas.

Each test garment (28 x 28) is pasted at a random position of a `--canvas` x `--canvas` black image; its box is
the tight box of its non-zero pixels. The model is an `lgvit train` checkpoint: trained on such canvases
(`--make-data DIR` writes them as Fashion-MNIST-style IDX files, train garments on train canvases), or on the
28 px images and evaluated at the canvas size (every lgvit model runs at any size). Each map is resized to its
canvas with each cell on the pixel the model centres it on (`model.cell_centre`: GC ViT's stride-2 convs centre
cell i on pixel r*i, a patch embedding on r*i + (r - 1) / 2), and scores a hit when its maximum lies in the box,
or with `--tolerance T` within T pixels of it (the original game, Zhang et al. 2016, allows 15 px on PASCAL VOC
and COCO images of about 500 px: 3% of the side, 2 px on a 56 px canvas). Methods:

- `Grad-CAM, stage s` / `Layer-CAM, stage s`: Grad-CAM / Layer-CAM of the true class on stage s;
- `local attention, stage s` / `global query, stage s` (GC ViT), `attention` (Swin), `block` / `grid` (MaxViT):
  the last such block of stage s, averaged over heads and query slots (the attention each position receives);
- `Grad-CAM, LAYER` / `Layer-CAM, LAYER` (with `--layer LAYER`, GC ViT family only): Grad-CAM / Layer-CAM of
  the true class on the output of that module, e.g. `stem.down.norm1` (stride 2); GC ViT's stride-2 steps are
  3x3 convs padded by 1, so a map of stride r centres cell i on pixel r*i; with `--other-class`, the same of
  the next class, (true + 1) mod classes: a map that explains the class, not the image, should then point off
  the garment more often;
- `random`: a uniformly random point (the chance level: box area / canvas area).

    python benchmarks/pointing_game.py --make-data data/fashion-canvas-56 --canvas 56 --train-images 15000
    lgvit train --data data/fashion-canvas-56 --img-size 56 --epochs 3 --output runs/gcvit_canvas
    python benchmarks/pointing_game.py --checkpoint runs/gcvit_canvas/best.pt [--checkpoint ...] \
        [--images 1000] [--canvas 56] [--seed 0] [--tolerance 0 2] [--layer stem.down.norm1] [--figures docs/explain]
"""

import argparse
import textwrap
from pathlib import Path

import torch

from lgvit.data.build import resolve_data_dir
from lgvit.data.idx import load_idx_split, write_idx
from lgvit.explain import attention_maps, grad_cam, layer_cam
from lgvit.explain.figures import display_image, fit_to_image, panels_figure, peak, pointing_hits
from lgvit.models.gcvit import GCViT
from lgvit.tools.inference import from_checkpoint

# method -> ((B, h, w) map, its stride in pixels, the pixel of cell (0, 0)'s centre)
Maps = dict[str, tuple[torch.Tensor, int, tuple[float, float]]]


def canvases(n: int, side: int, seed: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, 1, side, side) uint8 canvases of `split`'s garments, (n,) labels, (n, 4) boxes (top, left, bottom,
    right; inclusive)."""
    images, labels = load_idx_split(resolve_data_dir(None), split)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=g)[:n]
    out = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    boxes = torch.zeros(n, 4, dtype=torch.long)
    for k, i in enumerate(pick.tolist()):
        top, left = torch.randint(0, side - 27, (2,), generator=g).tolist()
        out[k, :, top : top + 28, left : left + 28] = images[i]
        rows, cols = images[i][0].nonzero(as_tuple=True)
        boxes[k] = torch.tensor([top + rows.min(), left + cols.min(), top + rows.max(), left + cols.max()])
    return out, labels[pick], boxes


def make_data(root: Path, side: int, train: int, seed: int) -> None:
    """Fashion-MNIST-layout IDX files of canvases: `train` train garments, 2000 test garments (another seed)."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, split, n, s in (("train", "train", train, seed), ("t10k", "val", 2000, seed + 1)):
        images, labels, _ = canvases(n, side, s, split)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images[:, 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    print(f"wrote {train} train and 2000 val canvases of {side} px to {root}")


def _label(model: torch.nn.Module, name: str) -> str:
    """The method's name for an attention module."""
    stage = int(name.split(".")[1])
    if getattr(model.get_submodule(name), "global_query", False):
        return f"global query, stage {stage}"
    if "attn_grid" in name or "attn_block" in name:
        return f"{'grid' if 'attn_grid' in name else 'block'} attention, stage {stage}"
    return f"{'local ' if hasattr(model.stages[0], 'global_block') else ''}attention, stage {stage}"


def method_maps(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str], other_class: bool = False
) -> Maps:
    """Every method's (B, h, w) map of the batch `x` (true labels `y`) with its stride; later blocks of a kind win.
    With `other_class`, each `layers` CAM also for the next class, (y + 1) mod classes (a sanity check: a map
    that explains the class should point elsewhere when asked about a class that is not there)."""
    size = tuple(x.shape[-2:])

    def cells(stage: int) -> tuple[int, tuple[float, float]]:
        return model.feature_info[stage]["reduction"], model.cell_centre(stage, size)

    out = {}
    for name, m in attention_maps(model, x).items():
        out[_label(model, name)] = (m.mean((1, 2)), *cells(int(name.split(".")[1])))
    for stage in range(len(model.feature_info)):
        out[f"Grad-CAM, stage {stage}"] = (grad_cam(model, x, y, stage)[0], *cells(stage))
        out[f"Layer-CAM, stage {stage}"] = (layer_cam(model, x, y, stage)[0], *cells(stage))
    targets = [("", y)] + ([(", another class", (y + 1) % model.num_classes)] if other_class else [])
    for layer in layers:
        for method, cam_of in (("Grad-CAM", grad_cam), ("Layer-CAM", layer_cam)):
            for suffix, target in targets:
                cam = cam_of(model, x, target, layer=layer)[0]  # (B, h, w)
                stride = -(-size[0] // cam.shape[1])
                out[f"{method}, {layer}{suffix}"] = (cam, stride, (0.0, 0.0))  # GC ViT: cell i on r*i
    out["random"] = (torch.rand(x.shape[0], *size), 1, (0.0, 0.0))
    return out


def play(checkpoint: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Pointing-game accuracy (%) of every method of one checkpoint, one per `--tolerance`; writes its example
    figure if asked."""
    loaded = from_checkpoint(checkpoint)
    model = loaded.model.eval()
    if args.layer and not isinstance(model, GCViT):
        raise SystemExit(
            f"--layer: {checkpoint} is a {type(model).__name__}; only GC ViT's cell centres are known here"
        )
    images, labels, boxes = canvases(args.images, args.canvas, args.seed)
    mean, std = torch.tensor(loaded.mean)[:, None, None], torch.tensor(loaded.std)[:, None, None]
    scores: dict[str, list[int]] = {}
    correct = 0
    for i in range(0, len(images), 50):
        x = (images[i : i + 50].float() / 255 - mean) / std  # (b, 1, side, side)
        y = labels[i : i + 50]
        maps = method_maps(model, x, y, args.layer, args.other_class)
        for k, (m, r, c) in maps.items():
            rows, cols = peak(m, (args.canvas, args.canvas), r, c)
            got = [int(pointing_hits(rows, cols, boxes[i : i + 50], t).sum()) for t in args.tolerance]
            scores[k] = [a + b for a, b in zip(scores.get(k, [0] * len(got)), got, strict=True)]
        with torch.no_grad():
            correct += int((model(x).argmax(-1) == y).sum())
        if i == 0 and args.figures:
            _figure(loaded, x, maps, boxes[0], Path(args.figures) / f"pointing_{Path(checkpoint).parent.name}.png")
    n = len(images)
    print(f"{loaded.label}: top-1 on the {args.canvas} px canvases {100 * correct / n:.1f}%")
    return {k: [100 * v / n for v in hit] for k, hit in scores.items()}


def _figure(loaded: object, x: torch.Tensor, maps: Maps, box: torch.Tensor, path: Path) -> None:
    image = display_image(x[0], loaded.mean, loaded.std)
    side = tuple(x.shape[-2:])
    panels = [  # titles wrapped to the panel's width
        (textwrap.fill(k, 18), fit_to_image(m[0], side, r, c)) for k, (m, r, c) in maps.items() if k != "random"
    ]
    title = f"box: rows {box[0]}-{box[2]}\ncols {box[1]}-{box[3]}"
    panels_figure(image, title, [("", panels)], path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", default=[], help="an lgvit train checkpoint (repeatable)")
    p.add_argument("--make-data", default=None, help="write train/val canvases as IDX files to this folder")
    p.add_argument("--train-images", type=int, default=15000, help="train canvases, with --make-data")
    p.add_argument("--images", type=int, default=1000, help="test garments to place")
    p.add_argument("--canvas", type=int, default=84, help="canvas side in pixels")
    p.add_argument("--seed", type=int, default=0, help="placements (--make-data uses it and the next seed)")
    p.add_argument(
        "--tolerance",
        type=float,
        nargs="+",
        default=[0.0],
        help="pixels a point may lie off the box and still hit, one column each (Zhang et al.: 15 px on VOC/COCO)",
    )
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        help="also Grad-CAM and Layer-CAM on this module's output (GC ViT; repeatable)",
    )
    p.add_argument(
        "--other-class",
        action="store_true",
        help="also each --layer CAM of the next class, (true + 1) mod classes: is the map class-blind?",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figures", default=None, help="folder for one example figure per checkpoint")
    args = p.parse_args()
    if args.other_class and not args.layer:
        p.error("--other-class scores the --layer maps: add --layer NAME (e.g. --layer stem.conv1)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the random baseline
    if args.make_data:
        make_data(Path(args.make_data), args.canvas, args.train_images, args.seed)
    for ckpt in args.checkpoint:
        scores = play(ckpt, args)
        heads = " | ".join(f"hits within {t:g} px" if t else "hits (strict)" for t in args.tolerance)
        print(f"\n| method ({Path(ckpt).parent.name}) | {heads} |\n|---|{'---|' * len(args.tolerance)}")
        for k, v in scores.items():
            print(f"| {k} | {' | '.join(f'{x:.1f}%' for x in v)} |")
        print()


if __name__ == "__main__":
    main()
