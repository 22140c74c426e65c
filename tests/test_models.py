"""Every registered model, at small overrides: build, forward at the native and an odd size, backward,
`forward_intermediates` against `feature_info`, gradient checkpointing, batch independence, and the
errors of bad configs and bad inputs. The per-family files keep only what is particular to a family
(parity with timm and the official code, counts, layouts)."""

import dataclasses
import functools

import pytest
import torch
from conftest import check_intermediates, randomize_

import lgvit
from lgvit.layers import Locality
from lgvit.models.base import ClassifierConfig, TokenModel
from lgvit.registry import FAMILIES, build_config

NAMES = lgvit.list_models()
BATCH = 2

# per family: narrow widths and shallow depths (at least one shifted / global-query block per model)
_SHRINK = {
    "gcvit": dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2)),
    "swin": dict(embed_dim=8, depths=(1, 2, 1, 1), num_heads=(1, 1, 2, 2)),
    "maxvit": dict(embed_dims=(8, 8, 16, 16), depths=(1, 1, 1, 1), stem_width=8, head_dim=8),
    "vit": dict(embed_dim=16, depth=2, num_heads=2),
    "pvt": dict(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1)),
    "tnt": dict(embed_dim=16, inner_dim=4, depth=2, num_heads=2, inner_num_heads=1),
}


def small_overrides(name: str) -> dict:
    """Overrides that make `name` tiny but keep its kind of blocks, windows and native size; none for *_fmnist."""
    spec = lgvit.get_spec(name)
    if name.endswith("_fmnist"):
        return {}
    out = dict(_SHRINK[spec.family])
    locality = getattr(spec.config, "locality", None)
    if locality is not None and locality.reduction is not None and locality.reduction > 4:
        out["locality"] = dataclasses.replace(locality, reduction=None)  # r = the block's width, as LocalViT-T/S
    return out


@functools.cache
def _model(name: str) -> torch.nn.Module:
    """A randomised small model of `name` in eval mode, built once; tests leave it as they found it."""
    return randomize_(lgvit.create_model(name, **small_overrides(name))).eval()


def _input(model: torch.nn.Module, h: int, w: int, batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, model.in_chans, h, w)


def _odd_size(model: torch.nn.Module) -> tuple[int, int]:
    """A non-square size away from the native one: odd sides for models that take any size, else
    sides that are other multiples of the patch."""
    if isinstance(model, TokenModel):
        return 3 * model.patch_size, 2 * model.patch_size
    return model.min_size + 7, 2 * model.min_size + 3


def _native(name: str) -> int:
    return lgvit.get_spec(name).native_size


def _smallest(model: torch.nn.Module) -> int:
    """The smallest side the model accepts: one patch, or one token in the last stage."""
    return model.patch_size if isinstance(model, TokenModel) else model.min_size


def test_every_family_has_small_overrides() -> None:
    assert set(_SHRINK) == set(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_at_native_odd_and_smallest_size(name: str) -> None:
    model, n, s = _model(name), _native(name), _smallest(_model(name))
    with torch.no_grad():
        for h, w in ((n, n), _odd_size(model), (s, s)):
            out = model(_input(model, h, w))
            assert out.shape == (BATCH, model.num_classes) and torch.isfinite(out).all(), (h, w)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = lgvit.create_model(name, **small_overrides(name)).train()
    model(_input(model, *_odd_size(model))).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_match_feature_info(name: str) -> None:
    model = _model(name)
    x = _input(model, *_odd_size(model))
    check_intermediates(model, x, exact_size=isinstance(model, TokenModel))
    assert [f["module"] for f in model.feature_info] == [f"{p}.{i}" for i, p in enumerate(_prefixes(model))]


def _prefixes(model: torch.nn.Module) -> list[str]:
    """The module path of each feature level: `stages` or `blocks`, whichever the model has."""
    return ["stages" if hasattr(model, "stages") else "blocks"] * len(model.feature_info)


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_output_and_gradients(name: str) -> None:
    model = lgvit.create_model(name, **small_overrides(name)).train()
    x = _input(model, *_odd_size(model))
    runs = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws in both runs
        out = model(x)
        out.square().sum().backward()
        runs.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0][1], runs[1][1], strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name: str) -> None:
    model = _model(name)
    x = _input(model, *_odd_size(model), batch=3)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_empty_output(name: str) -> None:
    model = _model(name)
    x = _input(model, *_odd_size(model), batch=0)
    with torch.no_grad():
        assert model(x).shape == (0, model.num_classes)
        assert all(f.shape[0] == 0 for f in model.forward_intermediates(x, intermediates_only=True))


@pytest.mark.parametrize("name", NAMES)
def test_head_interface(name: str) -> None:
    model = lgvit.create_model(name, **small_overrides(name)).eval()
    x = _input(model, *_odd_size(model))
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (BATCH, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (BATCH, 5) and model.num_classes == 5
        model.reset_classifier(0)
        assert torch.allclose(model(x), pre, atol=1e-6) and model.num_classes == 0
    with pytest.raises(ValueError, match="num_classes=-1 is invalid"):
        model.reset_classifier(-1)
    nwd = model.no_weight_decay()
    assert all(n in nwd for n, p in model.named_parameters() if p.ndim == 1 or "bias_table" in n)
    linear_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear_weights and not linear_weights & nwd


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_is_finite(name: str) -> None:
    model = _model(name)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_input(model, *_odd_size(model)))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_get_clear_errors(name: str) -> None:
    model = _model(name)
    h, w = _odd_size(model)
    with pytest.raises(TypeError, match=r"\(B, C, H, W\) image tensor, got list.*torch.stack"):
        model([torch.randn(model.in_chans, h, w)])
    with pytest.raises(TypeError, match="floating-point.*uint8.*float"):
        model(torch.zeros(1, model.in_chans, h, w, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) image batch.*shape"):
        model(torch.randn(model.in_chans, h, w))
    with pytest.raises(ValueError, match=f"expected {model.in_chans} input channels, got {model.in_chans + 1}"):
        model(torch.randn(1, model.in_chans + 1, h, w))
    small = _smallest(model) - 1
    with pytest.raises(ValueError, match="resize or pad"):
        model(_input(model, small, w, batch=1))
    with pytest.raises(ValueError, match="resize or pad"):
        model.forward_intermediates(_input(model, small, w, batch=1))


# ---------------------------------------------------------------------------------------------
# Configs: every field is checked when the config is made, whatever family


def _family_names() -> list[str]:
    """One model name per family config class (the first registered)."""
    seen: dict[type, str] = {}
    for name in NAMES:
        seen.setdefault(type(lgvit.get_spec(name).config), name)
    return list(seen.values())


def _bad_values(cfg: ClassifierConfig) -> list[tuple[str, object]]:
    """(field, invalid value) for every numeric field of `cfg`, derived from its value: ints 0 (num_classes
    -1), rates 1.0, ratios 0, per-stage tuples with a 0 entry or one entry short."""
    bad = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "num_classes":
            bad.append((f.name, -1))
        elif isinstance(v, (bool, Locality)) or v is None:
            continue
        elif f.name.endswith("_rate"):
            bad.append((f.name, 1.0))
        elif isinstance(v, (int, float)):
            bad.append((f.name, type(v)(0)))
        elif isinstance(v, tuple):
            bad.append((f.name, (type(v[0])(0), *v[1:])))
            bad.append((f.name, v[:-1]))
    return bad


BAD = [(n, field, value) for n in _family_names() for field, value in _bad_values(lgvit.get_spec(n).config)]


@pytest.mark.parametrize(("name", "field", "value"), BAD, ids=[f"{n}-{f}={v}" for n, f, v in BAD])
def test_every_config_field_is_checked(name: str, field: str, value: object) -> None:
    spec = lgvit.get_spec(name)
    with pytest.raises(ValueError, match=r"Config: \w+=.* is invalid: .*(must|needs)") as err:
        build_config(spec, {field: value})
    assert f"{field}=" in str(err.value) or "one entry per stage" in str(err.value)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("gcvit_tiny", dict(depths=(-1, 2, 2), num_heads=(2, 4, 8), window_sizes=(7, 7, 7)), r"depths=\(-1, 2, 2\)"),
        ("deit_tiny", dict(depth=-1), "depth=-1 is invalid: must be an int >= 1"),
        ("swin_fmnist", dict(num_classes=-1), "num_classes=-1 is invalid: must be an int >= 0"),
        ("gcvit_fmnist", dict(drop_path_rate=1.5), r"drop_path_rate=1.5 is invalid: .*\[0, 1\)"),
        ("gcvit_fmnist", dict(window_sizes=(0, 4, 2)), "window_sizes=.* must be an int >= 1"),
        ("swin_tiny", dict(window_size=0), "window_size=0"),
        ("swin_tiny", dict(depths=(2, 2, 2)), r"num_heads=.* needs one entry per stage of depths=\(2, 2, 2\)"),
        ("swin_tiny", dict(embed_dim=100), "stage 0 is 100 channels wide.*not a multiple of 3"),
        ("maxvit_tiny_224", dict(embed_dims=(32, 48, 64, 64)), "head_dim=32.*stage 1 is 48 channels"),
        ("maxvit_fmnist", dict(se_ratio=0.01), "se_ratio=0.01.*0 channels"),
        ("pvt_tiny", dict(sr_ratios=(8, 4, 2, 2)), r"set sr_ratios\[-1\] = 1"),
        ("tnt_tiny", dict(pixel_stride=3), "pixel_stride=3.*divide patch_size=16"),
        ("deit_tiny", dict(img_size=8), "img_size=8 is invalid: must be an int >= 16"),
        ("deit_tiny", dict(num_heads=5), "num_heads=5.*192 channels"),
        ("deit_tiny", dict(in_chans=3.0), "in_chans=3.0 is invalid: must be an int"),
    ],
)
def test_config_errors_name_the_field_and_range(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lgvit.create_model(name, **overrides)


def test_locality_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown locality act"):
        Locality("gelu")
    with pytest.raises(ValueError, match="reduction=0 is invalid"):
        Locality("hs+se", 0)
    with pytest.raises(ValueError, match="width_divisor=0 is invalid"):
        Locality("hs+se", width_divisor=0)


def test_the_registry_names_its_choices() -> None:
    with pytest.raises(TypeError, match=r"must be a str.*got None.*lgvit.list_models\(\)"):
        lgvit.create_model(None)
    with pytest.raises(TypeError, match="got 3"):
        lgvit.get_spec(3)
    with pytest.raises(KeyError, match="did you mean gcvit_tiny"):
        lgvit.create_model("gcvit_tinny")
    with pytest.raises(TypeError, match=r"no config option 'drop_path'.*did you mean drop_path_rate.*valid:"):
        lgvit.create_model("gcvit_xxtiny", drop_path=0.1)
