"""What a run leaves behind: metrics.csv/.jsonl, TensorBoard events, PNG plots (curves, confusion matrix,
the most confidently misclassified validation images, Grad-CAM overlays) and summary.md.

Every file but TensorBoard's is written atomically (lgvit.files), so a crash never leaves half of one.
"""

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402

from ..explain.cam import grad_cam  # noqa: E402
from ..explain.figures import display_image, grid_figure  # noqa: E402
from ..explain.maps import eval_mode  # noqa: E402
from ..files import atomic_write, atomic_write_text  # noqa: E402


class MetricsLog:
    """Rewrites metrics.jsonl and metrics.csv with the whole history each epoch; mirrors to TensorBoard if installed."""

    def __init__(self, out: Path, fresh: bool) -> None:
        self.out = out
        if fresh:  # a new run in an old folder starts a new log
            (out / "metrics.jsonl").unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is optional: pip install 'lgvit[tensorboard]'
            self.tb = None

    def write(self, history: list[dict]) -> None:
        """The files for `history` (all epochs so far, the checkpoint's), and its last row to TensorBoard."""
        row = history[-1]
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        atomic_write(self.out / "metrics.csv", lambda tmp: _write_csv(tmp, history))
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _write_csv(path: str, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in history for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(history)


def _save_png(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_history(
    history: list[dict], curves: Sequence[tuple[int, str, str]], titles: tuple[str, str], path: Path
) -> None:
    """Per-epoch curves on two side-by-side panels; `curves` are (panel 0 or 1, history key, label), and epochs
    without the key (not validated, --val-every) are left out."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for panel, key, label in curves:
        rows = [r for r in history if key in r]
        if rows:
            axes[panel].plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save_png(fig, path)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss (train, val) and accuracy (train, val, EMA) per epoch, side by side."""
    curves = (
        (0, "train_loss", "train"),
        (0, "val_loss", "val"),
        (0, "ema_loss", "val (EMA)"),
        (1, "train_acc", "train"),
        (1, "val_top1", "val top-1"),
        (1, "ema_top1", "val top-1 (EMA)"),
    )
    plot_history(history, curves, ("loss", "accuracy (%)"), path)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with the counts written in."""
    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save_png(fig, path)


@torch.no_grad()
def _predict(model: nn.Module, data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) labels and (N, classes) probabilities of `data` in eval mode."""
    labels, probs = [], []
    with eval_mode(model):
        for x, y in DataLoader(data, batch_size=128):
            probs.append(model(x.to(device)).float().softmax(-1).cpu())
            labels.append(y)
    return torch.cat(labels), torch.cat(probs)


def confident_mistakes(labels: torch.Tensor, probs: torch.Tensor, k: int) -> list[int]:
    """The up to `k` misclassified samples whose predicted class is most probable, most confident first."""
    conf, pred = probs.max(-1)
    wrong = (pred != labels).nonzero().flatten()
    return wrong[conf[wrong].argsort(descending=True, stable=True)][:k].tolist()


def image_grids(
    model: nn.Module,
    val: Dataset,
    classes: list[str],
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    out: Path,
    device: torch.device,
    prefix: str = "",
    limit: int = 2000,
) -> list[str]:
    """`{prefix}misclassified.png` (the 16 most confidently misclassified of the first `limit` val images,
    true and predicted label, if any is) and `{prefix}cam.png` (Grad-CAM of the predicted class on the
    first 8) in `out`; returns the names written. `norm`: the data's (mean, std), to show the images."""
    data = Subset(val, range(min(limit, len(val))))
    if not len(data):
        return []
    labels, probs = _predict(model, data, device)
    conf, pred = probs.max(-1)
    worst = confident_mistakes(labels, probs, 16)
    written = []
    if worst:
        images = [display_image(data[i][0], *norm) for i in worst]
        titles = [f"true {classes[labels[i]]}\npred {classes[pred[i]]} {100 * conf[i]:.0f}%" for i in worst]
        written.append(grid_figure(images, titles, out / f"{prefix}misclassified.png").name)
    first = list(range(min(8, len(data))))
    x = torch.stack([data[i][0] for i in first])  # (n, C, H, W)
    cam, _ = grad_cam(model, x.to(device))
    titles = [f"{classes[pred[i]]} {100 * conf[i]:.0f}%\n(true {classes[labels[i]]})" for i in first]
    images = [display_image(x[i], *norm) for i in first]
    written.append(grid_figure(images, titles, out / f"{prefix}cam.png", list(cam.cpu())).name)
    return written


def per_class_table(classes: list[str], per_class: list[float]) -> str:
    rows = [f"| {name} | {acc:.2f} |" for name, acc in zip(classes, per_class, strict=True)]
    return "\n".join(["| class | accuracy (%) |", "|---|---|", *rows])


_CAPTIONS = {
    "misclassified.png": "the most confidently misclassified validation images (final weights)",
    "cam.png": "Grad-CAM of the predicted class on validation images (final weights)",
}


def write_summary(
    out: Path, final: dict, classes: list[str], command: str, config: dict, images: list[str] = ()
) -> Path:
    """summary.md: final numbers, per-class accuracy, the plots (and the `images` grids), the command, the config."""
    lines = [
        "# Training summary",
        "",
        f"- model: `{config['model']}`, data: `{final['data']}` ({final['train_images']} train / "
        f"{final['val_images']} val images, {len(classes)} classes"
        + (f", {final['skipped']} unreadable files skipped" if final.get("skipped") else "")
        + ")"
        + (f"; validated on {final['val_from']}" if "val_from" in final else ""),
        f"- epochs: {final['epochs_done']} of {config['epochs']}, training {final['train_minutes']:.1f} min + "
        f"validation {final['val_minutes']:.1f} min, "
        f"{final['img_s']:.0f} train images/s, {final['processes']} process(es) on {final['device']}",
        f"- final val top-1: **{final['val_top1']:.2f}%** (top-5 {final['val_top5']:.2f}%)"
        + (f"; EMA top-1 {final['ema_top1']:.2f}%" if "ema_top1" in final else ""),
        f"- best: {final['best_top1']:.2f}% ({final['best_weights']} weights, epoch {final['best_epoch']}) "
        f"saved in `best.pt`; the last state is in `last.pt`",
        "",
        "![curves](curves.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        *(line for name in images for line in (f"![{_CAPTIONS.get(name, name)}]({name})", "")),
        "## Per-class accuracy (best weights)",
        "",
        per_class_table(classes, final["per_class"]),
        "",
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]
    path = out / "summary.md"
    atomic_write_text(path, "\n".join(lines))
    return path
