"""The batch-at-a-time augmentation of in-memory images against the per-image torchvision pipeline, the
in-memory loader, the held-out validation split and validation every N epochs."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_data import make_idx_dir, make_image_folder
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lgvit.data import AugmentConfig, build_data
from lgvit.data.batched import BatchTransform, InMemoryLoader, random_crop, random_erase, random_flip
from lgvit.data.build import holdout_indices
from lgvit.data.transforms import crop_padding
from lgvit.training.config import TrainConfig
from lgvit.training.loop import train

MEAN, STD = (0.3,), (0.35,)


def _images(n: int, side: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _per_image(x: torch.Tensor, augment: AugmentConfig) -> torch.Tensor:
    from lgvit.data.transforms import train_transform

    tf = train_transform(x.shape[-1], MEAN, STD, augment, from_files=False)
    return torch.stack([tf(img) for img in x])


@pytest.mark.parametrize("augment", ["none", "trivial", "randaug"])
def test_batch_transform_matches_the_per_image_pipeline_in_shape_dtype_and_range(augment: str) -> None:
    cfg = AugmentConfig(augment, 9, 0.5)
    x = _images(64)
    torch.manual_seed(0)
    batched, single = BatchTransform(MEAN, STD, cfg)(x), _per_image(x, cfg)
    assert batched.shape == single.shape == (64, 1, 28, 28) and batched.dtype == single.dtype == torch.float32
    low, high = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    for out in (batched, single):
        assert low - 1e-6 <= out.min() and out.max() <= high + 1e-6
    evaluation = BatchTransform(MEAN, STD)(x)  # no augmentation: exactly the per-image eval transform
    expected = torch.stack([v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])(i) for i in x])
    torch.testing.assert_close(evaluation, expected, rtol=0, atol=0)


def test_random_crop_is_the_padded_crop_at_the_drawn_offsets() -> None:
    x, pad = _images(16, side=12), 3
    torch.manual_seed(1)
    out = random_crop(x, pad)
    torch.manual_seed(1)
    top, left = torch.randint(0, 2 * pad + 1, (2, 16))
    padded = TF.pad(x, [pad])
    for i in range(16):
        assert torch.equal(out[i], TF.crop(padded[i], int(top[i]), int(left[i]), 12, 12))


def test_crop_offsets_and_flips_are_drawn_per_image_at_the_configured_rates() -> None:
    n, side = 4000, 28
    pad = crop_padding(side)
    x = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    x[:, :, 10, 5] = 255  # one marked pixel, left of centre
    torch.manual_seed(2)
    out = random_crop(x, pad)
    rows, cols = out[:, 0].flatten(1).argmax(1).div(side, rounding_mode="floor"), out[:, 0].flatten(1).argmax(1) % side
    shifts = (rows - 10 + pad) * (2 * pad + 1) + (cols - 5 + pad)  # the offset index, 0 .. (2 pad + 1)^2 - 1
    counts = torch.bincount(shifts, minlength=(2 * pad + 1) ** 2).float()
    assert len(counts) == (2 * pad + 1) ** 2 and counts.min() > 0  # every offset of v2.RandomCrop's range
    assert (counts / n - 1 / len(counts)).abs().max() < 0.025
    flipped = random_flip(x)[:, 0, 10]  # (n, side): the marked row
    mirrored = flipped[:, side - 1 - 5] == 255
    assert abs(mirrored.float().mean().item() - 0.5) < 0.03
    assert torch.equal(mirrored, flipped[:, 5] != 255)  # each image either as it was or mirrored


@pytest.mark.parametrize("p", [0.25, 1.0])
def test_random_erase_matches_torchvision_in_rate_and_area(p: float) -> None:
    n, side = 3000, 28
    x = torch.ones(n, 1, side, side)
    torch.manual_seed(3)
    batched = (random_erase(x, p) == 0).flatten(1).float().mean(1)  # erased share of each image
    tv = v2.RandomErasing(p=p, value=0)
    single = torch.stack([(tv(img) == 0).float().mean() for img in x])
    for erased in (batched, single):
        assert abs((erased > 0).float().mean().item() - p) < 0.03 * max(1.0, p * 2)
    b, s = batched[batched > 0], single[single > 0]
    assert abs(b.mean() - s.mean()) < 0.015 and abs(b.std() - s.std()) < 0.015  # area ~ U(0.02, 0.33)
    assert b.min() >= 0.01 and b.max() <= 0.37  # 0.02 to 0.33 of the image, boxes rounded to whole pixels


def test_erased_boxes_are_rectangles() -> None:
    torch.manual_seed(4)
    out = random_erase(torch.ones(200, 1, 20, 24), 1.0)
    for img in out[:, 0]:
        rows, cols = (img == 0).nonzero(as_tuple=True)
        if len(rows):
            h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert len(rows) == h * w


def test_in_memory_loader_serves_the_dataloader_batches(tmp_path: Path) -> None:
    data = build_data(str(make_idx_dir(tmp_path / "idx", 70, 20)), 28, 1)  # no augmentation: deterministic
    order = torch.randperm(70, generator=torch.Generator().manual_seed(0)).tolist()
    fast = list(InMemoryLoader(data.train, order, 32, drop_last=True))
    slow = list(DataLoader(data.train, 32, sampler=order, drop_last=True))
    assert len(fast) == len(slow) == 2 == len(InMemoryLoader(data.train, order, 32, drop_last=True))
    for (xf, yf), (xs, ys) in zip(fast, slow, strict=True):
        assert torch.equal(yf, ys)
        torch.testing.assert_close(xf, xs, rtol=0, atol=0)
    assert [len(y) for _, y in InMemoryLoader(data.val, range(20), 8)] == [8, 8, 4]


def test_held_out_split_is_fixed_disjoint_and_used_for_validation(tmp_path: Path) -> None:
    keep, held = holdout_indices(100, 10)
    assert len(held) == 10 and len(keep) == 90 and not set(keep.tolist()) & set(held.tolist())
    assert torch.equal(held, holdout_indices(100, 10)[1])
    root = make_idx_dir(tmp_path / "idx", 64, 16)
    data = build_data(str(root), 28, 1, AugmentConfig(), val_split=12)
    assert (len(data.train), len(data.val)) == (52, 12) and "held-out" in data.val_from
    full, (keep, held) = build_data(str(root), 28, 1, AugmentConfig()), holdout_indices(64, 12)
    assert torch.equal(data.val.images, full.train.images[held])
    assert torch.equal(data.train.images, full.train.images[keep])
    folder = build_data(str(make_image_folder(tmp_path / "tree", per_class=6)), 32, 3, AugmentConfig(), val_split=4)
    assert len(folder.val) == 4 and "train/" in folder.val_from
    with pytest.raises(ValueError, match="--val-split 64 must be between 1 and 63"):
        build_data(str(root), 28, 1, AugmentConfig(), val_split=64)


def test_validation_every_n_epochs_and_after_the_last(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "idx", 96, 32)
    cfg = TrainConfig(data=str(root), output=str(tmp_path / "run"), epochs=3, batch_size=32, threads=1, val_every=2)
    result = train(replace(cfg, val_split=16))
    assert ["val_top1" in r for r in result.history] == [False, True, True]
    assert result.best["epoch"] in (2, 3) and (tmp_path / "run" / "curves.png").is_file()
    assert "validated on 16 held-out training images" in (tmp_path / "run" / "summary.md").read_text()
    with pytest.raises(ValueError, match="--val-every must be at least 1"):
        train(replace(cfg, val_every=0))
