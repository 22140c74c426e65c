"""`train(cfg)`: data, model, optimizer and schedule, then epochs of train/evaluate/checkpoint/report.

The EMA, the evaluation pass and the data are parameters of `train`, so a study (benchmarks/ema_batchnorm.py)
can swap one without patching the module.
"""

import dataclasses
import itertools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, default_collate

from ..data import AugmentConfig, DataBundle, TensorImages, build_data, mix_transform, pad_class_names
from ..data.batched import InMemoryLoader
from ..data.grouping import SizeGroupedSampler
from ..dense.backbone import body_parameters
from ..factory import create_model
from ..files import probe_writable, remove_stale_temps
from ..registry import build_config, get_spec
from .checkpoint import FORMAT, load_checkpoint, rng_state, save_atomic, seed_all, set_rng_state
from .config import TrainConfig, check_config, parse_model_kwargs
from .dense_report import dense_report
from .distributed import Dist, close_distributed, gather_objects, init_distributed
from .ema import ModelEma
from .engine import NonFiniteLoss, StepOptions, TrainState, epoch_train_metrics, evaluate, train_one_epoch
from .optim import build_optimizer, warmup_cosine
from .report import MetricsLog, image_grids, plot_confusion, plot_curves, write_summary
from .tasks import CLASSIFY, Task, default_output, make_task

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

EmaFactory = Callable[[nn.Module, float], ModelEma]  # (model, decay) -> an EMA of the model
Evaluate = Callable[[nn.Module, Iterable, int, StepOptions, Dist], dict]  # engine.evaluate's signature


@dataclass
class TrainResult:
    model: nn.Module  # final weights (not the EMA)
    history: list[dict]
    best: dict
    output: Path
    completed: bool  # False when stopped by a signal (resume with --resume)


class SignalStop:
    """Turns the first SIGINT/SIGTERM into a stop request (save, then exit); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step ...", file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested


class SkipSampler(Sampler):
    """The indices of `sampler` after the first `skip` (to resume in the middle of an epoch)."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


class MixCollate:
    """default_collate, then MixUp/CutMix on the batch when configured."""

    def __init__(self, mix) -> None:
        self.mix = mix

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate(batch)
        return self.mix(x, y) if self.mix is not None else (x, y)


def train_sampler(ds: Dataset, d: Dist, seed: int, epoch: int) -> DistributedSampler:
    """This process's shuffled share of `ds` for `epoch`: disjoint across processes, repeatable from the seed."""
    sampler = DistributedSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return sampler


def _batched(ds: Dataset, cfg: TrainConfig) -> bool:
    """Whether `ds` is served whole batches at a time (in-memory images, in this process, not switched off)."""
    return isinstance(ds, TensorImages) and ds.batch_transform is not None and cfg.batch_augment and not cfg.workers


def _train_loader(
    data: DataBundle, cfg: TrainConfig, d: Dist, epoch: int, skip_batches: int, mix, collate: Callable | None = None
) -> DataLoader | InMemoryLoader:
    order = train_sampler(data.train, d, cfg.seed, epoch)
    seed = cfg.seed * 100_003 + epoch * 1_009 + d.rank  # the workers' and the size grouping's
    if cfg.group_sizes and hasattr(data.train, "image_size"):  # images of varied sizes (the dense tasks')
        order = SizeGroupedSampler(order, data.train.image_size, cfg.batch_size, seed)
    sampler = SkipSampler(order, skip_batches * cfg.batch_size)
    if _batched(data.train, cfg):
        return InMemoryLoader(data.train, sampler, cfg.batch_size, drop_last=True, mix=mix)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        data.train,
        cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate or MixCollate(mix),  # collate: a dense task's
        drop_last=True,
        generator=gen,
        pin_memory=d.device.type == "cuda",
    )


def val_loader(
    ds: Dataset, batch_size: int, workers: int, d: Dist, collate: Callable | None = None, batched: bool = False
) -> DataLoader | InMemoryLoader:
    """This process's strided, unpadded shard of the val set (summed over processes, every image counts once);
    `batched`: in-memory images transformed a batch at a time (see `_batched`)."""
    shard = range(d.rank, len(ds), d.world)
    if batched:
        return InMemoryLoader(ds, shard, batch_size)
    return DataLoader(Subset(ds, shard) if d.enabled else ds, batch_size, num_workers=workers, collate_fn=collate)


def _refuse_data_conflicts(kwargs: dict, derived: dict[str, int], source: str) -> None:
    """--model-kwargs may not set num_classes or in_chans otherwise than the data does."""
    for key, value in derived.items():
        if key in kwargs and kwargs[key] != value:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"--model-kwargs {key}={kwargs[key]!r} conflicts with {key}={value} from {source}: lgvit train "
                f"takes {key} from the data; drop it from --model-kwargs and use {flag} {kwargs[key]!r} instead"
            )


def _model_overrides(cfg: TrainConfig, num_classes: int, data: DataBundle) -> dict:
    kwargs = parse_model_kwargs(cfg.model_kwargs)
    derived = {"num_classes": num_classes, "in_chans": data.in_chans}
    source = f"the data ({len(data.classes)} classes, {data.in_chans}-channel images from {data.root})"
    _refuse_data_conflicts(kwargs, derived, source)
    overrides = {**kwargs, **derived}
    if cfg.drop_path is not None:
        overrides["drop_path_rate"] = cfg.drop_path
    return overrides


def _check_resume(ckpt: dict, cfg: TrainConfig, overrides: dict, d: Dist) -> None:
    old = ckpt["model_overrides"]
    if ckpt["model_name"] != cfg.model or any(old[k] != overrides[k] for k in ("num_classes", "in_chans")):
        raise ValueError(
            f"the checkpoint was trained as {ckpt['model_name']} with {old['num_classes']} classes and "
            f"{old['in_chans']} channels, not {cfg.model} with {overrides['num_classes']} and "
            f"{overrides['in_chans']}: resume with the same --model and data, or pick a new --output"
        )
    arch = {k: v for k, v in overrides.items() if k not in ("num_classes", "in_chans", "drop_path_rate")}
    old_arch = {k: v for k, v in old.items() if k not in ("num_classes", "in_chans", "drop_path_rate")}
    if arch != old_arch:
        raise ValueError(f"the checkpoint was trained with --model-kwargs {old_arch}, not {arch}: resume with the same")
    if len(ckpt["rng"]) != d.world and d.main:
        print(f"note: resuming {len(ckpt['rng'])}-process training with {d.world}; the data order will differ")


def _amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return AMP[name]


@dataclass
class _Run:
    """What stays fixed through a run: config, data, model options, where things go, and the EMA and evaluation."""

    cfg: TrainConfig
    data: DataBundle
    overrides: dict
    opts: StepOptions
    d: Dist
    out: Path
    batches: int
    command: str
    make_ema: EmaFactory
    evaluate: Evaluate
    task: Task = CLASSIFY


def _build_state(run: _Run, model: nn.Module) -> TrainState:
    cfg, d = run.cfg, run.d
    model.to(d.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = run.make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaled = body_parameters(model) if cfg.backbone_lr_mult != 1 else []  # the dense tasks' pretrained stages
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, scaled, cfg.backbone_lr_mult)
    steps = math.ceil(run.batches / cfg.accum_steps)
    scheduler = warmup_cosine(optimizer, cfg.epochs * steps, round(cfg.warmup_epochs * steps), cfg.min_lr / cfg.lr)
    scaler = torch.amp.GradScaler(d.device.type) if cfg.amp == "fp16" else None
    wrapped = model
    if d.enabled:
        ids = [d.device.index] if d.device.type == "cuda" else None
        unused = any(getattr(m, "has_unused_parameters", False) for m in model.modules())  # GC ViT's 1-block stages
        wrapped = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=unused)
    if cfg.compile:  # dynamic: the last, smaller batch and the eval size reuse the graph, no recompile
        wrapped = torch.compile(wrapped, dynamic=True)
    return TrainState(wrapped, model, optimizer, scheduler, scaler, ema)


def _rank_sums(saved: dict | list[dict], d: Dist) -> dict[str, float]:
    """This process's partial sums of the interrupted epoch: its own when the world size is unchanged,
    else all of them on rank 0 (so the epoch's totals stay the same)."""
    per_rank = [saved] if isinstance(saved, dict) else saved  # older checkpoints hold rank 0's only
    if len(per_rank) == d.world:
        return dict(per_rank[d.rank])
    keys = ("loss", "correct", "count")
    return {k: sum(s[k] for s in per_rank) if d.main else 0.0 for k in keys}


def _restore(state: TrainState, ckpt: dict, d: Dist) -> None:
    state.raw.load_state_dict(ckpt["model"])
    saved = [len(g["params"]) for g in ckpt["optimizer"]["param_groups"]]
    if saved != [len(g["params"]) for g in state.optimizer.param_groups]:
        raise ValueError(
            f"the checkpoint's optimizer groups its parameters otherwise ({saved} per group) than this lgvit does "
            "(an older version: detectors and segmenters no longer decay the backbone's bias tables): finish the "
            "run with the lgvit that started it, or start it afresh in a new --output"
        )
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None and ckpt.get("ema"):
        state.ema.load_state_dict(ckpt["ema"])
    state.epoch, state.step, state.sums = ckpt["epoch"], ckpt["step"], _rank_sums(ckpt["sums"], d)
    rngs = ckpt["rng"]
    set_rng_state(rngs[d.rank] if d.rank < len(rngs) else rngs[0])


def _payload(run: _Run, state: TrainState, history: list[dict], best: dict, ranks: list[dict]) -> dict:
    """A checkpoint of plain containers and tensors, readable with torch.load(weights_only=True)."""
    data = run.data
    return {
        "format": FORMAT,
        "model_name": run.cfg.model,
        "model_overrides": run.overrides,
        "classes": data.classes,
        "data": data.settings(),
        "train_config": dataclasses.asdict(run.cfg),
        "model": state.raw.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "sums": [r["sums"] for r in ranks],  # every process's partial sums of the epoch, in rank order
        "rng": [r["rng"] for r in ranks],
        "history": history,
        "best": best,
        "world": run.d.world,
    }


def _save(run: _Run, state: TrainState, history: list[dict], best: dict, names: tuple[str, ...]) -> None:
    # every process's generators and partial sums, so each resumes its own stream and epoch totals
    ranks = gather_objects({"rng": rng_state(), "sums": dict(state.sums)}, run.d)
    if run.d.main:
        payload = _payload(run, state, history, best, ranks)
        for name in names:
            save_atomic(payload, run.out / name)


def _evaluate_epoch(run: _Run, state: TrainState, val: DataLoader) -> tuple[dict, dict]:
    """The epoch's val metrics (model and EMA) as a flat row, and the better of the two evaluations."""
    n = run.overrides["num_classes"]  # the head's outputs: more than the classes with a larger --num-classes
    keys, score = run.task.metrics, run.task.score  # classification: loss, top1, top5; best by top1
    result = run.evaluate(state.raw, val, n, run.opts, run.d)
    row = {f"val_{k}": result[k] for k in keys}
    best = dict(result, weights="model")
    if state.ema is not None:
        ema = run.evaluate(state.ema.module, val, n, run.opts, run.d)
        row.update({f"ema_{k}": ema[k] for k in keys})
        if _usable(ema, keys) and (ema[score] > result[score] or not _usable(result, keys)):
            best = dict(ema, weights="ema")
    return row, best


def _usable(result: dict, keys: tuple[str, ...] = CLASSIFY.metrics) -> bool:
    """Whether an evaluation may become the best: a NaN or infinite loss or accuracy (or metric) never does."""
    return all(math.isfinite(result[k]) for k in keys)


def _epoch_line(row: dict, epochs: int) -> str:
    val = "not validated (--val-every)"
    if "val_top1" in row:
        val = f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%"
    ema = f" | EMA top-1 {row['ema_top1']:.2f}%" if "ema_top1" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% | "
        f"{val}{ema} | {row['img_s']:.0f} img/s, {row['epoch_seconds']:.0f} s"
    )


def train_data(cfg: TrainConfig) -> DataBundle:
    """The datasets `train(cfg)` builds: `cfg.data` at the model's native size and channels unless overridden."""
    spec, kwargs = get_spec(cfg.model), parse_model_kwargs(cfg.model_kwargs)
    native = kwargs.get("img_size", spec.native_size)
    chans = cfg.in_chans or spec.config.in_chans
    _refuse_data_conflicts(kwargs, {"in_chans": chans}, f"the {chans}-channel images {cfg.model} trains on")
    build_config(spec, {**kwargs, "in_chans": chans})  # a bad --model-kwargs value fails before the data is read
    augment = AugmentConfig(cfg.augment, cfg.magnitude, cfg.erase_prob)
    return build_data(cfg.data, cfg.img_size or native, chans, augment, val_split=cfg.val_split)


def _setup(
    cfg: TrainConfig, d: Dist, command: str, data: DataBundle | None, make_ema: EmaFactory, evaluate: Evaluate
) -> tuple[_Run, nn.Module, dict | None]:
    """Data (`data`, or built from `cfg`), model and the checkpoint to resume from (if any)."""
    task = make_task(cfg)
    out = Path(cfg.output or default_output(cfg))
    if d.main:  # only rank 0 writes (on several machines, only node 0 has the folder)
        check_output(out)
        remove_stale_temps(out)  # what a killed checkpoint or report write left behind
    ckpt = load_checkpoint(out / "last.pt" if cfg.resume == "auto" else cfg.resume) if cfg.resume else None
    data = (task.data() if task.dense else train_data(cfg)) if data is None else data
    if data.train is None:
        raise ValueError(f"the data bundle of {data.root} has no training split (built with train=False)")
    num_classes = cfg.num_classes or len(data.classes)
    if num_classes < len(data.classes):
        raise ValueError(f"--num-classes {num_classes} is fewer than the {len(data.classes)} classes in {data.root}")
    batches = len(data.train) // d.world // cfg.batch_size
    if batches < 1:
        raise ValueError(f"{len(data.train)} training images make no full batch of {cfg.batch_size} per process")
    overrides = _model_overrides(cfg, num_classes, data)
    if ckpt is not None:
        _check_resume(ckpt, cfg, overrides, d)
        if task.dense and (why := task.resume_mismatch(ckpt)):
            raise ValueError(f"{why}: resume with the same flags, or pick a new --output")
    seed_all(cfg.seed)  # the same initial weights on every process
    if task.dense:
        model = task.model(overrides, data)
    else:
        model = create_model(cfg.model, pretrained=cfg.pretrained, **overrides)
    seed_all(cfg.seed + 1_000_003 * d.rank)  # then different augmentation and drop-path per process
    amp = _amp_dtype(cfg.amp, d.device)
    opts = StepOptions(d.device, amp, cfg.channels_last, cfg.accum_steps, cfg.clip_grad, cfg.label_smoothing, task.loss)
    evaluate = task.evaluate if task.dense else evaluate
    return _Run(cfg, data, overrides, opts, d, out, batches, command, make_ema, evaluate, task), model, ckpt


def check_output(out: Path) -> None:
    """Refuses a run folder that is a file or cannot be written in, before any data is read."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file, not a folder: give a folder for the run's checkpoints and report")
    try:
        probe_writable(out)
    except NotADirectoryError as e:
        raise ValueError(
            f"--output {out}: {e.filename} is a file, so no folder can be made there; give another --output"
        ) from None
    except OSError as e:
        raise ValueError(
            f"cannot write in {e.filename or out} ({e.strerror}), where the run's checkpoints and report go: "
            "make it writable or give another --output"
        ) from None


def _announce(run: _Run, model: nn.Module) -> None:
    params = sum(p.numel() for p in model.parameters()) / 1e6
    data = run.data
    skipped = f", {len(data.skipped)} unreadable files skipped" if data.skipped else ""
    print(
        f"training {run.cfg.model} ({params:.2f} M params) on {len(data.train)} {data.kind} images of "
        f"{len(data.classes)} classes from {data.root}{skipped}; {run.d.world} process(es) on {run.d.device}, "
        f"{torch.get_num_threads()} threads; output {run.out}"
    )


def train(
    cfg: TrainConfig,
    stop: Callable[[], bool] | None = None,
    command: str = "",
    *,
    ema: EmaFactory = ModelEma,
    evaluate: Evaluate = evaluate,
    data: DataBundle | None = None,
) -> TrainResult:
    """Runs the recipe in `cfg` (single process, or DDP under torchrun).

    Args:
        stop: polled after each optimizer step; True saves last.pt and returns (default: SIGINT/SIGTERM).
        command: the command line, written into summary.md.
        ema: builds the EMA from (model, cfg.ema_decay) when the decay is > 0; it is updated after each
            optimizer step, evaluated beside the model and checkpointed through its state_dict.
        evaluate: the evaluation pass, called with engine.evaluate's arguments for the model and the EMA.
        data: datasets to train and validate on instead of building them from `cfg` (see `train_data`);
            its img_size, in_chans and classes then set the model's and the checkpoint's.
    """
    check_config(cfg)
    d = init_distributed(cfg.device, cfg.threads, cfg.workers)
    try:
        run, model, ckpt = _setup(cfg, d, command, data, ema, evaluate)
        with SignalStop() as signals:
            return _fit(run, model, ckpt, stop or signals)
    finally:
        close_distributed()


def _fit(run: _Run, model: nn.Module, ckpt: dict | None, stop: Callable[[], bool]) -> TrainResult:
    cfg, d = run.cfg, run.d
    state = _build_state(run, model)
    history, best = [], {run.task.score: -1.0}
    if ckpt is not None:
        _restore(state, ckpt, d)
        history, best = list(ckpt["history"]), dict(ckpt["best"])
    if d.main:
        run.out.mkdir(parents=True, exist_ok=True)
        _announce(run, model)
    log = MetricsLog(run.out, fresh=ckpt is None) if d.main else None
    mix = mix_transform(cfg.num_classes or len(run.data.classes), cfg.mixup, cfg.cutmix)
    collate = run.task.collate(run.data) if run.task.dense else None
    batch = run.task.eval_batch(2 * cfg.batch_size)
    val = val_loader(run.data.val, batch, cfg.workers, d, collate, _batched(run.data.val, cfg))
    for epoch in range(state.epoch, cfg.epochs):
        state.epoch, t0 = epoch, time.perf_counter()
        loader = _train_loader(run.data, cfg, d, epoch, state.step, mix, collate)
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        if not _train_epoch(run, state, loader, stop, desc):
            _save(run, state, history, best, ("last.pt",))
            if d.main:
                print(f"stopped in epoch {epoch + 1} after {state.step} batches; saved {run.out / 'last.pt'}")
                print("continue with the same command and --resume")
            return TrainResult(state.raw, history, best, run.out, False)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, **epoch_train_metrics(state, d), "lr": state.optimizer.param_groups[0]["lr"]}
        t1 = time.perf_counter()
        validate = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
        evaluation, candidate = _evaluate_epoch(run, state, val) if validate else ({}, None)
        img_s = run.batches * cfg.batch_size * d.world / seconds
        row.update(evaluation, epoch_seconds=seconds, val_seconds=time.perf_counter() - t1, img_s=img_s)
        history.append(row)
        state.epoch, state.step, state.sums = epoch + 1, 0, {"loss": 0.0, "correct": 0.0, "count": 0.0}
        improved = (
            candidate is not None
            and _usable(candidate, run.task.metrics)
            and candidate[run.task.score] > best[run.task.score]
        )
        if improved:
            best = {**candidate, "epoch": epoch + 1}
        _save(run, state, history, best, ("last.pt", "best.pt") if improved else ("last.pt",))
        if d.main:
            print(run.task.epoch_line(row, cfg.epochs) if run.task.dense else _epoch_line(row, cfg.epochs))
            log.write(history)
    if d.main:
        log.close()
        _report(run, history, best, state.raw)
    return TrainResult(state.raw, history, best, run.out, True)


def _train_epoch(run: _Run, state: TrainState, loader: DataLoader, stop: Callable[[], bool], desc: str) -> bool:
    """train_one_epoch; a diverged loss says what was kept and what to change."""
    try:
        return train_one_epoch(state, loader, run.batches, run.opts, run.d, stop, desc)
    except NonFiniteLoss as e:
        last = run.out / "last.pt"
        kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was saved"
        raise NonFiniteLoss(
            f"{e}; {kept}. Train again with a lower --lr (this run: {run.cfg.lr:g}), a lower --drop-path, "
            "or --clip-grad 1 if it is off"
        ) from None


def _class_names(run: _Run) -> list[str]:
    """The data's class names, then one for each output of a head made larger with --num-classes."""
    return pad_class_names(run.data.classes, run.overrides["num_classes"])


def _report(run: _Run, history: list[dict], best: dict, model: nn.Module) -> None:
    """curves.png, confusion.png (best weights), the misclassified and CAM grids (`model`) and summary.md."""
    if run.task.dense:
        dense_report(run.task, run.data, history, best, model, run.out, run.command, run.d.device)
        return
    data, last = run.data, history[-1]
    plot_curves(history, run.out / "curves.png")
    title = f"{run.cfg.model}: {best['top1']:.2f}%"
    plot_confusion(best["confusion"], _class_names(run), run.out / "confusion.png", title)
    grids = image_grids(model, data.val, _class_names(run), (data.mean, data.std), run.out, run.d.device)
    final = {
        "data": data.root,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "val_from": data.val_from,
        "skipped": len(data.skipped),
        "epochs_done": last["epoch"],
        "train_minutes": sum(r["epoch_seconds"] for r in history) / 60,
        "val_minutes": sum(r.get("val_seconds", 0.0) for r in history) / 60,  # absent in older checkpoints
        "img_s": last["img_s"],
        "processes": run.d.world,
        "device": str(run.d.device),
        "val_top1": last["val_top1"],
        "val_top5": last["val_top5"],
        "best_top1": best["top1"],
        "best_weights": best["weights"],
        "best_epoch": best["epoch"],
        "per_class": best["per_class"][: len(data.classes)],  # the unused outputs of a larger head have no images
    }
    if "ema_top1" in last:
        final["ema_top1"] = last["ema_top1"]
    path = write_summary(run.out, final, data.classes, run.command, dataclasses.asdict(run.cfg), grids)
    print(f"best val top-1 {best['top1']:.2f}% ({best['weights']} weights, epoch {best['epoch']}); report: {path}")
