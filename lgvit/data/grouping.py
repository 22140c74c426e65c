"""Batches of images of similar size, so that a dense model's padded batches hold less padding.

A segmenter's batch is padded to its largest height and width; with scene sides uniform in [64, 128] a random
batch of 8 is about 63% image and 37% padding, and the model computes on all of it. torchvision's detection
references group batches by aspect ratio for the same reason (`GroupedBatchSampler`); here both sides count.
"""

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

POOL_BATCHES = 64  # batches whose indices are grouped together: 512 images at batch 8


def grouped_order(
    indices: list[int], size: Callable[[int], tuple[int, int]], batch_size: int, generator: torch.Generator
) -> list[int]:
    """`indices` reordered so that each run of `batch_size` holds images of similar (height, width).

    Each pool of `POOL_BATCHES` batches' worth of consecutive indices is sorted by height, cut into runs of
    about sqrt(pool) batches, each run sorted by width and cut into batches; the pool's batches are then
    shuffled by `generator`. The `len(indices) % batch_size` last indices stay last, as they were (a loader
    with drop_last drops the same images), so every batch is a batch of the grouping.
    """
    whole = len(indices) - len(indices) % batch_size
    pool = POOL_BATCHES * batch_size
    sizes = {i: size(i) for i in indices[:whole]}  # each read once
    out: list[int] = []
    for start in range(0, whole, pool):
        members = sorted(indices[start : min(start + pool, whole)], key=lambda i: sizes[i][0])
        run = batch_size * math.ceil(math.sqrt(len(members) / batch_size))
        ordered = [
            i for r in range(0, len(members), run) for i in sorted(members[r : r + run], key=lambda i: sizes[i][1])
        ]
        batches = [ordered[b : b + batch_size] for b in range(0, len(ordered), batch_size)]
        out += [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]
    return out + indices[whole:]


class SizeGroupedSampler(Sampler[int]):
    """`sampler`'s indices in batches of similar image size (`grouped_order`), for a loader of `batch_size`.

    The order is a pure function of `sampler`'s order and `seed`, so skipping the first k * batch_size indices
    resumes a run exactly. `size(i)` gives image i's (height, width) without loading it.
    """

    def __init__(self, sampler: Sampler[int], size: Callable[[int], tuple[int, int]], batch_size: int, seed: int):
        self.sampler, self.size, self.batch_size, self.seed = sampler, size, batch_size, seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        return iter(grouped_order(list(self.sampler), self.size, self.batch_size, generator))

    def __len__(self) -> int:
        return len(self.sampler)
