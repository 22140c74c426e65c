"""Shared test helpers: seeding and weight randomisation that makes parity tests able to fail."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every parameter and float buffer values that matter.

    Layer scales (1e-5 at init) would hide whole blocks and zero-initialised bias tables the
    relative-position index, so both get O(1) values; BatchNorm statistics are randomised.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
            elif "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return model


def check_intermediates(model: nn.Module, x: torch.Tensor, exact_size: bool = False) -> list[torch.Tensor]:
    """timm's `forward_intermediates` contract on `model` (in eval mode) for the batch `x`.

    One map per `feature_info` level with its channels and stride (sides rounded up unless
    `exact_size`), the final output equal to `forward_features`, index selection,
    `intermediates_only`, NHWC and `stop_early`. Returns the NCHW maps.
    """
    (b, _, h, w), info, n = x.shape, model.feature_info, len(model.feature_info)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert torch.equal(model.forward_head(final), model(x))
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        last_nhwc = model.forward_intermediates(x, indices=1, output_fmt="NHWC", intermediates_only=True)
        _, early_feats = model.forward_intermediates(x, indices=[0], stop_early=True)
    assert len(feats) == n
    for f, level in zip(feats, info, strict=True):
        r = level["reduction"]
        side = (h // r, w // r) if exact_size else (-(-h // r), -(-w // r))
        assert f.shape == (b, level["num_chs"], *side)
    assert torch.equal(picked[0], feats[0]) and torch.equal(picked[1], feats[-1])
    assert torch.equal(last_nhwc[0], feats[-1].permute(0, 2, 3, 1))
    assert len(early_feats) == 1 and torch.equal(early_feats[0], feats[0])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")
    return feats
