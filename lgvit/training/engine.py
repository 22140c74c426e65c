"""One training epoch and one evaluation pass; the loop around them is `loop.py`."""

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .distributed import Dist, all_sum
from .ema import ModelEma

MAX_BAD_STEPS = 3  # optimizer steps in a row with a NaN/inf loss or gradient before the run stops


class NonFiniteLoss(RuntimeError):
    """The training loss (or its gradient) was NaN or infinite for MAX_BAD_STEPS optimizer steps in a row."""


@dataclass
class StepOptions:
    """How each batch is run: device, memory format, autocast, accumulation, clipping, loss."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    accum_steps: int = 1
    clip_grad: float = 0.0
    label_smoothing: float = 0.0
    task_loss: Callable | None = None  # a dense task's (model, x, y) -> (loss, correct); None: cross-entropy


@dataclass
class TrainState:
    """Everything a checkpoint must hold to continue; `step` counts batches done in `epoch`."""

    model: nn.Module  # possibly DDP- or compile-wrapped
    raw: nn.Module  # the plain model: weights to save, evaluate and average
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: ModelEma | None
    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0})
    bad_steps: int = 0  # optimizer steps skipped in a row for a NaN/inf loss or gradient (not checkpointed)


def autocast(opts: StepOptions) -> contextlib.AbstractContextManager:
    """`torch.autocast` to `opts.amp_dtype` on `opts.device`, or nothing when autocast is off."""
    if opts.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(opts.device.type, dtype=opts.amp_dtype)


def _to_device(x: torch.Tensor, y: torch.Tensor, opts: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(opts.device, non_blocking=True)
    if opts.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(opts.device, non_blocking=True)


def _optimizer_step(state: TrainState, opts: StepOptions, finite_loss: bool) -> bool:
    """Clips and steps; skips the step (weights, schedule and EMA unchanged) when the loss or gradient is not finite.

    Returns whether the step was taken. With a GradScaler (fp16), an infinite gradient of a finite loss is
    the scaler's to handle (it skips the step and lowers its scale), so only a non-finite loss counts.
    """
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    taken = finite_loss
    if taken and state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
        if opts.clip_grad > 0:
            nn.utils.clip_grad_norm_(params, opts.clip_grad)
        state.scaler.step(state.optimizer)
        state.scaler.update()
    elif taken:
        norm = nn.utils.clip_grad_norm_(params, opts.clip_grad if opts.clip_grad > 0 else math.inf)
        taken = bool(torch.isfinite(norm))  # the same on every process: DDP has averaged the gradients
        if taken:
            state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if taken:
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update(state.raw)
    return taken


def train_one_epoch(
    state: TrainState,
    loader: Iterable,
    batches: int,
    opts: StepOptions,
    d: Dist,
    stop: Callable[[], bool],
    desc: str = "",
) -> bool:
    """Trains from batch `state.step` to `batches`; returns False if `stop()` asked to end early.

    `stop` is polled after each optimizer step (and agreed on by all processes), so a stopped run
    is always at an optimizer-step boundary and can be resumed exactly. A step whose loss or gradient is
    NaN/inf is skipped; MAX_BAD_STEPS of them in a row raise NonFiniteLoss.
    """
    model = state.model.train()
    bar = tqdm(total=batches, initial=state.step, desc=desc, disable=not d.main, dynamic_ncols=True, leave=False)
    start, seen, finite = time.perf_counter(), 0, True
    with bar:  # closed (its line cleared) on any exit, a diverged loss's error included
        for x, y in loader:
            x, y = _to_device(x, y, opts)
            update = (state.step + 1) % opts.accum_steps == 0 or state.step + 1 == batches
            value = _forward_backward(state, model, x, y, opts, update or not d.enabled)
            finite = finite and math.isfinite(value)
            state.step, seen = state.step + 1, seen + len(x)
            bar.update()
            if update:
                stop_now, finite = _agree(stop(), finite, d)
                _count_bad_step(state, _optimizer_step(state, opts, finite), batches, value)
                finite = True
                if bar.n % 10 == 0 or state.step == batches:
                    bar.set_postfix(_postfix(state, seen * d.world / (time.perf_counter() - start)))
                if stop_now:
                    return False
    return True


def _forward_backward(
    state: TrainState, model: nn.Module, x: torch.Tensor, y: torch.Tensor, opts: StepOptions, sync: bool
) -> float:
    """One batch's loss and gradient (DDP-synchronised if `sync`), counted in the epoch's sums when finite."""
    with contextlib.nullcontext() if sync else model.no_sync():
        with autocast(opts):
            if opts.task_loss is not None:  # lgvit.training.tasks.DenseTask.loss
                loss, correct = opts.task_loss(model, x, y)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=opts.label_smoothing)
                labels = y.argmax(1) if y.ndim == 2 else y  # soft MixUp/CutMix targets: the dominant class
                correct = (logits.argmax(1) == labels).sum()
        (state.scaler.scale(loss) if state.scaler else loss).div(opts.accum_steps).backward()
    value = loss.item()
    if math.isfinite(value):  # a skipped batch counts in no sum
        state.sums["loss"] += value * len(x)
        state.sums["correct"] += correct.item()
        state.sums["count"] += len(x)
    return value


def _postfix(state: TrainState, img_s: float) -> dict[str, str]:
    n = max(state.sums["count"], 1)
    lr = state.optimizer.param_groups[0]["lr"]
    loss, acc = state.sums["loss"] / n, 100 * state.sums["correct"] / n
    return {"loss": f"{loss:.3f}", "acc": f"{acc:.1f}", "lr": f"{lr:.2e}", "img/s": f"{img_s:.0f}"}


def _agree(stop: bool, finite: bool, d: Dist) -> tuple[bool, bool]:
    """(any process asked to stop, every process's loss was finite since the last step): one all-reduce."""
    flags = all_sum(torch.tensor([float(stop), float(not finite)]), d)
    return bool(flags[0] > 0), bool(flags[1] == 0)


def _count_bad_step(state: TrainState, taken: bool, batches: int, loss: float) -> None:
    """Counts skipped steps in a row; raises NonFiniteLoss at MAX_BAD_STEPS."""
    state.bad_steps = 0 if taken else state.bad_steps + 1
    if state.bad_steps >= MAX_BAD_STEPS:
        raise NonFiniteLoss(
            f"the training loss or its gradient was NaN or infinite for {MAX_BAD_STEPS} optimizer steps in a row "
            f"(epoch {state.epoch + 1}, batch {state.step} of {batches}, last loss here {loss:.4g}): the run "
            "diverged; those steps were skipped, so the weights stayed finite"
        )


def epoch_train_metrics(state: TrainState, d: Dist) -> dict[str, float]:
    """Loss and accuracy of the epoch's training batches, over all processes."""
    sums = all_sum(
        torch.tensor([state.sums["loss"], state.sums["correct"], state.sums["count"]], dtype=torch.float64), d
    )
    n = max(sums[2].item(), 1)
    return {"train_loss": sums[0].item() / n, "train_acc": 100 * sums[1].item() / n}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, opts: StepOptions, d: Dist) -> dict:
    """Loss, top-1, top-5 and the (true, predicted) confusion matrix over this process's shard, summed over all.

    The model must output exactly `num_classes` scores per image (a ValueError at the first batch says
    otherwise). Returns a dict with 'loss', 'top1', 'top5' (percent), 'per_class' (percent list) and 'confusion'.
    """
    model.eval()
    k = min(5, num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, top-k hits, count
    for x, y in loader:
        x, y = _to_device(x, y, opts)
        with autocast(opts):
            logits = model(x).float()
        if logits.ndim != 2 or logits.shape[1] != num_classes:
            raise ValueError(
                f"the model outputs {tuple(logits.shape[1:])} scores per image but the data has {num_classes} "
                f"classes: evaluate a model whose head has {num_classes} outputs (reset_classifier({num_classes}), "
                "or the checkpoint trained on these classes)"
            )
        totals[0] += F.cross_entropy(logits, y, reduction="sum").item()
        totals[1] += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().item()
        totals[2] += len(y)
        pairs = (y * num_classes + logits.argmax(1)).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)  # (true, pred)
    all_sum(confusion, d)
    all_sum(totals, d)
    n, per_class_n = max(totals[2].item(), 1), confusion.sum(1).clamp(min=1)
    return {
        "loss": totals[0].item() / n,
        "top1": 100 * confusion.diag().sum().item() / n,
        "top5": 100 * totals[1].item() / n,
        "per_class": (100 * confusion.diag() / per_class_n).tolist(),
        "confusion": confusion.long(),
    }
