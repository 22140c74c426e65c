"""RoIAlign forward + backward on the CPU: torchvision's op against lgvit's separable one (`lgvit.dense.roi`),
in one process, interleaved, at the shapes of lgvit's Fashion-scene R-CNNs and at COCO-like ones. It is what
`DENSE_MAX_CELLS` (where `lgvit.dense.roi.roi_align` stops using the separable op) rests on.

    python benchmarks/roi_align.py [--rounds 5] [--threads 2]

Each case pools K random boxes (7x7 bins, sampling ratio 2, as the R-CNN box head does) from an (N, C, H, W)
map and back-propagates a random gradient; it prints the median ms of each op and their ratio.
"""

import argparse
import statistics
import time

import torch
from torchvision.ops import roi_align as tv_roi_align

from lgvit.dense.roi import separable_roi_align

# (N, C, H, W, K): the scenes' stride-4 and stride-8 levels (batch 8, 128 sampled RoIs each), a 64x64 map,
# then COCO-like stride-8 and stride-16 levels of 800x1333 images (batch 2, 512 RoIs each)
CASES = [
    (8, 64, 32, 32, 1024),
    (8, 64, 16, 16, 1024),
    (8, 64, 64, 64, 1024),
    (2, 256, 100, 168, 1024),
    (2, 256, 50, 84, 1024),
]


def _case(n: int, c: int, h: int, w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An (N, C, H, W) map at stride 4 and (K, 5) boxes sorted by image: sides of 10 to 10 + W pixels, corners
    in the image's first three quarters."""
    x = torch.randn(n, c, h, w, requires_grad=True)
    image = torch.sort(torch.randint(0, n, (k,)))[0].float()
    xy = torch.rand(k, 2) * torch.tensor([w, h]) * 3
    wh = torch.rand(k, 2) * torch.tensor([w, h]) + 10
    return x, torch.cat([image[:, None], xy, xy + wh], 1)


def _ms(op, x: torch.Tensor, rois: torch.Tensor) -> float:
    t = time.perf_counter()
    out = op(x, rois)
    out.backward(torch.ones_like(out))
    x.grad = None
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ops = {
        "torchvision": lambda x, r: tv_roi_align(x, r, (7, 7), 0.25, 2, aligned=False),
        "separable": lambda x, r: separable_roi_align(x, r, (7, 7), 0.25, 2),
    }
    print("| (N, C, H, W), K | torchvision ms | separable ms | speed-up |\n|---|---|---|---|")
    for n, c, h, w, k in CASES:
        x, rois = _case(n, c, h, w, k)
        for op in ops.values():  # warm-up
            _ms(op, x, rois)
        times = {name: [] for name in ops}
        for _ in range(args.rounds):  # interleaved
            for name, op in ops.items():
                times[name].append(_ms(op, x, rois))
        tv, sep = (statistics.median(times[name]) for name in ops)
        print(f"| ({n}, {c}, {h}, {w}), {k} | {tv:.1f} | {sep:.1f} | {tv / sep:.2f}x |")


if __name__ == "__main__":
    main()
