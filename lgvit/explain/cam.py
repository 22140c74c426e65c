"""Grad-CAM (Selvaraju et al., 2017) and Layer-CAM (Jiang et al., 2021) on any stage of any lgvit model,
NCHW maps or tokens alike.

Written here rather than taken from `grad-cam` (pytorch-grad-cam): that library wants one NCHW target
layer per model plus a per-family `reshape_transform` for token and NHWC stages, resizes the map to the
input with OpenCV and returns NumPy, and brings OpenCV and scikit-learn along. The stage outputs that
`feature_info` names are enough: a forward hook keeps the activation, autograd gives its gradient.
"""

import torch
from torch import nn

from .maps import eval_mode


def _as_map(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A stage output as (B, C, h, w): NCHW maps as they are, (B, prefix + h*w, C) tokens without the prefix."""
    if t.ndim == 4:
        return t
    B, L, C = t.shape
    return t[:, L - grid[0] * grid[1] :].transpose(1, 2).reshape(B, C, *grid)  # (B, C, h, w)


def default_stage(model: nn.Module) -> int:
    """The last level whose every token reaches the logits: the last stage, or for a class-token model
    the level before the last (after the last block the classifier reads the class token only)."""
    return -2 if model.head.pool == "token" else -1


def _level(model: nn.Module, stage: int | None) -> dict:
    """`feature_info[stage]`, checked: in range, and not a class-token model's last level."""
    info, n = model.feature_info, len(model.feature_info)
    stage = default_stage(model) if stage is None else stage
    if not -n <= stage < n:
        raise ValueError(f"--stage {stage} is out of range: {type(model).__name__} has levels 0 to {n - 1}")
    if model.head.pool == "token" and stage % n == n - 1:
        raise ValueError(
            f"--stage {stage} is the last level of a class-token model: only its class token reaches the logits, "
            f"so the patches' gradients are zero; choose an earlier level (default {n - 2})"
        )
    return info[stage]


def target_module(model: nn.Module, stage: int | None, layer: str | None) -> nn.Module:
    """The module whose output is explained: `layer` by name, or else `feature_info[stage]`'s."""
    if layer is None:
        return model.get_submodule(_level(model, stage)["module"])
    if stage is not None:
        raise ValueError("give a stage or a layer, not both")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(
            f"layer {layer!r} is not a module of {type(model).__name__}; "
            "see model.named_modules() for the names (e.g. 'stem.conv1')"
        ) from None


def _is_grid(hw: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether (h, w) is the (H, W) image's grid at one integer stride r (h = H // r or ceil(H / r), same r)."""
    return any(
        hw[0] in (size[0] // r, -(-size[0] // r)) and hw[1] in (size[1] // r, -(-size[1] // r))
        for r in range(1, max(size) + 1)
    )


def _layer_layout(out: torch.Tensor, x: torch.Tensor, layer: str) -> str:
    """'nchw' or 'nhwc': which of a named layer's 4-d output's axes are the grid of the (B, C, H, W) input `x`.
    Anything else (tokens, windows of several images, an output that reads both ways) is refused: a wrong guess
    would be a map of the wrong axes."""
    size, layouts = tuple(x.shape[-2:]), []
    if out.ndim == 4 and out.shape[0] == x.shape[0]:  # windows stack (B * windows, ...)
        layouts = [k for k, hw in (("nchw", out.shape[2:]), ("nhwc", out.shape[1:3])) if _is_grid(hw, size)]
    if len(layouts) != 1:
        why = "reads as both (B, C, h, w) and (B, h, w, C)" if layouts else "is not a map of the image's grid"
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}, which {why} for a {size[0]}x{size[1]} input; "
            "a layer must output (B, C, h, w) or (B, h, w, C) maps (a conv, a norm, a block of a windowed stage); "
            "use stage= (--stage) otherwise"
        )
    return layouts[0]


def _activation_and_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, stage: int | None, layer: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (B, C, h, w) output A of `feature_info[stage]` (or of the module named `layer`) for the batch `x`,
    d score / d A for `target`'s class (default: each image's top class), and the logits of the eval forward."""
    module = target_module(model, stage, layer)
    kept: list[torch.Tensor] = []
    hook = module.register_forward_hook(
        lambda m, i, o: kept.append(o[-1] if isinstance(o, tuple) else o)  # TNT's blocks: (pixels, patches)
    )
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))  # a graph even if every weight is frozen
            if not kept:
                raise ValueError(f"layer {layer!r} is not called by {type(model).__name__}'s forward; choose another")
            layout = _layer_layout(kept[-1], x, layer) if layer is not None else None
            target = logits.argmax(-1) if target is None else target.to(logits.device)
            (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), kept[-1])
    finally:
        hook.remove()
    if layout == "nhwc":
        return kept[-1].detach().permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2), logits.detach()  # (B, C, h, w)
    if layout == "nchw":
        return kept[-1].detach(), grad, logits.detach()  # A, dA: (B, C, h, w)
    r = _level(model, stage)["reduction"]
    grid = (x.shape[-2] // r, x.shape[-1] // r)
    return _as_map(kept[-1].detach(), grid), _as_map(grad, grid), logits.detach()  # A, dA: (B, C, h, w)


def _unit_max(cam: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps, each divided by its maximum (an all-zero map stays zero)."""
    return cam / cam.amax((1, 2), keepdim=True).clamp_min(1e-12)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    stage: int | None = None,
    layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the (B, C, H, W) batch `x` on `feature_info[stage]` (default: `default_stage`), or on the
    output of the module named `layer` (`grad-cam`'s target layer): a (B, C, h, w) or (B, h, w, C) map of the
    image's grid, told apart by which axes match the input's size at one stride (an output that reads both
    ways, or neither, is refused).

    relu(sum_c mean_hw(d score / d A_c) * A_c) per image, divided by its maximum: (B, h, w) in [0, 1] at
    the level's resolution (h = ceil(H / reduction) for the hierarchical models, H / patch for tokens).
    `target`: (B,) class indices whose score is explained (default: each image's top class). Returns
    (cam, logits); the logits are the eval forward's, with gradients on (float rounding apart from no_grad).
    """
    act, grad, logits = _activation_and_gradient(model, x, target, stage, layer)
    return _unit_max((grad.mean((2, 3), keepdim=True) * act).sum(1).clamp_min(0)), logits  # (B, h, w)


def layer_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    stage: int | None = None,
    layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-CAM (Jiang et al., 2021) of `x` on `feature_info[stage]`: as `grad_cam`, but each position
    weighs the activations by its own positive gradient, relu(sum_c relu(d score / d A_c(i, j)) * A_c(i, j)),
    instead of by the channel's mean gradient. Same arguments, shapes and normalisation as `grad_cam`."""
    act, grad, logits = _activation_and_gradient(model, x, target, stage, layer)
    return _unit_max((grad.clamp_min(0) * act).sum(1).clamp_min(0)), logits  # (B, h, w)
