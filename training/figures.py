"""The report figures: the confusion matrix, predictions beside their truth, and a run's training curves.

Figures are drawn on matplotlib's Agg canvas (no pyplot, no global state) and written as PNG files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segserve import imaging
from segserve.classes import ASSET, CLASS_NAMES, CORROSION, PALETTE

MAX_PREDICTION_ROWS = 8
# Line colours for the classes in plots: the palette, darkened a little so lines read on white.
_LINE_COLORS = {name: tuple(0.8 * PALETTE[i] / 255) for i, name in enumerate(CLASS_NAMES)}


def _new_figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _format_count(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 100_000_000 else f"{count:,}"


def plot_confusion(cm: np.ndarray, path: Path, title: str = "") -> None:
    """Two heatmaps side by side: pixel counts, and counts normalised by true class (rows sum to 100%)."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.full(cm.shape, np.nan), where=rows > 0)
    fig = _new_figure(11, 4.8)
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], cm, max(int(cm.max()), 1), "pixels", "Blues", lambda v: _format_count(int(v))),
        (axes[1], norm, 1.0, "share of the true class", "Greens", lambda v: "n/a" if np.isnan(v) else f"{v:.1%}"),
    )
    for ax, values, top, label, cmap, fmt in panels:
        shown = np.nan_to_num(values.astype(np.float64))
        image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=top)
        fig.colorbar(image, ax=ax, shrink=0.8, label=label)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                color = "white" if shown[i, j] / top > 0.55 else "black"
                ax.text(j, i, fmt(values[i, j]), ha="center", va="center", color=color)
        ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
        ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    axes[0].set_title("pixel counts")
    axes[1].set_title("row-normalised (recall on the diagonal)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


def plot_predictions(
    images: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    path: Path,
    ids: Sequence[str] | None = None,
    image_iou: Sequence[Sequence[float]] | None = None,
    title: str = "",
) -> None:
    """Grid of at most MAX_PREDICTION_ROWS images spread over the split: image | truth | prediction | overlay.

    ids label the rows; image_iou: each image's own (unsmoothed) IoU per class (``segserve.metrics.table``'s
    ``images["iou"]``), shown for corrosion and asset.
    """
    from matplotlib.patches import Patch

    n = len(images)
    rows = np.unique(np.linspace(0, n - 1, min(n, MAX_PREDICTION_ROWS)).round().astype(int))
    fig = _new_figure(10, 2.5 * len(rows) + 0.8)
    axes = np.atleast_2d(fig.subplots(len(rows), 4))
    for r, i in enumerate(rows):
        label = f"id {ids[i]}" if ids is not None else f"#{i}"
        if image_iou is not None:  # the image's own (unsmoothed) IoU of corrosion and asset
            per_class = image_iou[i]
            scores = ["n/a" if np.isnan(per_class[c]) else f"{per_class[c]:.2f}" for c in (CORROSION, ASSET)]
            label += f"\nIoU corr. {scores[0]}, asset {scores[1]}"
        panels = (images[i], imaging.colorize(truth[i]), imaging.colorize(pred[i]), imaging.overlay(images[i], pred[i]))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=9)
    for c, heading in enumerate(("image", "ground truth", "prediction", "prediction overlay")):
        axes[0, c].set_title(heading)
    handles = [Patch(color=PALETTE[c] / 255, label=name) for c, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)


def plot_history(
    history: list[dict[str, float]], out_dir: Path, best_epoch: int | None = None
) -> list[tuple[str, str]]:
    """Training curves as PNGs in out_dir: loss, validation IoU (mean and per class), learning rate.

    Returns the (title, file name) of each figure written.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]

    def series(key: str) -> list[float] | None:
        if not all(key in row for row in history):
            return None
        return [row[key] for row in history]

    def finish(ax, ylabel: str, twin=None) -> None:
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        # below the axes, so that no curve is ever hidden behind it
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3)

    written: list[tuple[str, str]] = []
    if series("loss"):
        fig = _new_figure(8, 4.8)
        ax = fig.subplots()
        ax.plot(epochs, series("loss"), label="training loss (cross-entropy + Dice)", color="C0")
        twin = None
        if series("accuracy"):
            twin = ax.twinx()
            twin.plot(epochs, series("accuracy"), color="C1", alpha=0.7, label="training pixel accuracy")
            if series("val_pixel_accuracy"):
                twin.plot(epochs, series("val_pixel_accuracy"), color="C2", alpha=0.7, label="val pixel accuracy")
            twin.set_ylabel("pixel accuracy (lighter lines)")
        finish(ax, "loss", twin)
        ax.set_title("Training loss and pixel accuracy")
        fig.savefig(out_dir / "curves_loss.png", dpi=100)
        written.append(("Training loss", "curves_loss.png"))

    if series("val_miou"):
        fig = _new_figure(12, 5.2)
        left, right = fig.subplots(1, 2, sharey=True)
        left.plot(epochs, series("val_miou"), label="mean IoU", color="k")
        if series("val_mdice"):
            left.plot(epochs, series("val_mdice"), label="mean Dice", color="0.5")
        left.set_title("Validation means (standard)")
        finish(left, "score")
        for name in CLASS_NAMES:
            if series(f"val_iou_{name}"):
                right.plot(epochs, series(f"val_iou_{name}"), color=_LINE_COLORS[name], label=f"{name}")
            if series(f"val_per_image_iou_{name}"):
                right.plot(
                    epochs,
                    series(f"val_per_image_iou_{name}"),
                    color=_LINE_COLORS[name],
                    linestyle="--",
                    alpha=0.6,
                    label=f"{name}, per-image avg",
                )
        right.set_title("Validation IoU per class")
        finish(right, "IoU")
        left.set_ylim(0, 1)
        fig.savefig(out_dir / "curves_iou.png", dpi=100)
        written.append(("Validation IoU", "curves_iou.png"))

    if series("lr"):
        fig = _new_figure(8, 3.8)
        ax = fig.subplots()
        ax.plot(epochs, series("lr"), color="C4", label="learning rate at the end of the epoch")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.set_title("Learning rate")
        finish(ax, "learning rate")
        fig.savefig(out_dir / "curves_lr.png", dpi=100)
        written.append(("Learning rate", "curves_lr.png"))
    return written
