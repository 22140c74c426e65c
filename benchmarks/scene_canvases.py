"""Single-garment Fashion scenes as a classification set: pretraining a backbone at the scenes' scales.

Each image is a `FashionScenes` scene of exactly one garment on a `--side` x `--side` canvas, drawn as the
dense task draws its scenes (a side of 28 px times a scale in [1, 3], black or lightly textured background);
its label is the garment's class. Train images come from the train garments, the t10k file from the test
garments, as in the scenes. Written as Fashion-MNIST-layout IDX files, so `lgvit train --data DIR` reads them:

    python benchmarks/scene_canvases.py --out data/scene84 --side 84 --train 60000
    lgvit train --model localvit_gcvit_fmnist --pretrained runs/localvit_gcvit_140/best.pt --data data/scene84 \
        --img-size 84 --val-split 5000 --epochs 2 --lr 1e-3 --output runs/scene84
    lgvit train --task detect --backbone localvit_gcvit_fmnist --pretrained runs/scene84/best.pt ...

`--occluders K` draws each canvas as a scene of 1 to K + 1 garments and keeps one of them, at random, on its
visible pixels alone (the others' pixels are put back to the background): a classifier then learns to name
garments with parts hidden, as about half are in the 64-128 px scenes (docs/dense.md, "Pretraining on partly
hidden garments").
"""

import argparse
from pathlib import Path

import torch

from lgvit.data import FASHION_MNIST_CLASSES, FashionScenes, SceneConfig, resolve_data_dir, write_idx
from lgvit.files import atomic_write_text


def visible_alone(scenes: FashionScenes, index: int) -> tuple[torch.Tensor, int] | None:
    """Scene `index` with one of its garments, drawn at random, kept on its visible pixels only: the others'
    pixels are put back to the scene's background. (side, side) levels 0-255 and the garment's class, or None
    for a scene that kept no garment."""
    canvas, owner, placements = scenes.compose(index)
    if len(placements) <= 1:  # nothing to take out
        return (canvas, placements[0].label) if placements else None
    pick = int(torch.randint(len(placements), (), generator=torch.Generator().manual_seed(index)))
    others = (owner >= 0) & (owner != pick)  # (side, side) pixels of the garments not kept
    return torch.where(others, scenes.background(index), canvas), placements[pick].label


def single_garments(split: str, n: int, side: int, seed: int, occluders: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, side, side) uint8 canvases of one garment each and their (n,) uint8 classes (0-9). With `occluders`
    k > 0, each canvas is a scene of 1 to k + 1 garments of which one is shown on its visible pixels alone, so
    that many garments have parts hidden, as in the scenes (`visible_alone`)."""
    config = SceneConfig(min_side=side, max_side=side, min_objects=1, max_objects=1 + occluders)
    scenes = FashionScenes(resolve_data_dir(None), split, "segment", seed, num_scenes=2 * n, config=config)
    images, labels = torch.zeros(n, side, side, dtype=torch.uint8), torch.zeros(n, dtype=torch.uint8)
    k = 0
    for i in range(len(scenes)):
        item = visible_alone(scenes, i)
        if item is not None:  # a garment with no pixel above the threshold is left out of its scene
            images[k], labels[k] = item[0].round().to(torch.uint8), item[1]
            k += 1
            if k == n:
                return images, labels
    raise RuntimeError(f"only {k} of {2 * n} {split} scenes kept a garment")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the IDX files")
    p.add_argument("--side", type=int, default=84, help="canvas side in pixels (at least 84 holds a 3x garment)")
    p.add_argument("--train", type=int, default=60000, help="train canvases")
    p.add_argument("--val", type=int, default=2000, help="test-garment canvases (the t10k file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--occluders",
        type=int,
        default=0,
        help="up to this many other garments pasted over and around each one, then taken out again: the garment "
        "is shown on its visible pixels alone (0: one garment, whole)",
    )
    args = p.parse_args()
    if args.occluders < 0:
        p.error(f"--occluders {args.occluders}: give 0 (whole garments) or more")
    if args.side < 28 or args.train < 1 or args.val < 1:
        p.error(f"--side {args.side} must be at least 28 (a garment's side), --train and --val at least 1")
    out = Path(args.out)
    for prefix, split, n in (("train", "train", args.train), ("t10k", "val", args.val)):
        images, labels = single_garments(split, n, args.side, args.seed, args.occluders)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels)
    atomic_write_text(out / "classes.txt", "\n".join(FASHION_MNIST_CLASSES) + "\n")
    print(f"wrote {args.train} train and {args.val} test-garment canvases of {args.side} px to {out}")


if __name__ == "__main__":
    main()
