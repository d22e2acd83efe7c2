"""Evaluation reports: metrics.json, figures, report.md, and for a training run its curves and history.xlsx.

:func:`write_evaluation` evaluates predicted masks against the truth and writes the report into any folder
(``training.evaluate`` uses it for models from the store); :func:`write_run_report` does it for a run folder
of ``training.train`` and adds the training curves. All numbers come from :mod:`segserve.metrics`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segserve import imaging, metrics
from segserve.architectures import ARCHITECTURES
from segserve.classes import ASSET, CLASS_NAMES, CORROSION, PALETTE
from training.data import Pair, load_arrays

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.png"
REPORT_FILE = "report.md"
HISTORY_FILE = "history.csv"
HISTORY_XLSX = "history.xlsx"
MAX_PREDICTION_ROWS = 8

# The original project's published test results: per-image smoothed averages, ResNet50 encoder initialised
# from ImageNet, on its own 22-image test split.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {name: a.published for name, a in ARCHITECTURES.items()}
DISPLAY_NAMES = {name: a.display_name for name, a in ARCHITECTURES.items()}
# Line colours for the classes in plots: the palette, darkened a little so lines read on white.
_LINE_COLORS = {name: tuple(0.8 * PALETTE[i] / 255) for i, name in enumerate(CLASS_NAMES)}


# --------------------------------------------------------------------------------------------- metrics


def compute_metrics(truth: np.ndarray, pred: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Standard (split-level) and per-image metrics of class masks (N, H, W); returns (dict, per-image cms).

    ``ratio_agreement`` holds what an inspector reads (``segserve.metrics.ratio_agreement``): ``ratio_mae``,
    the mean absolute error of each image's corrosion_asset_ratio, and ``grade_exact`` / ``grade_within_one``,
    the shares of images whose ASTM D610 rust grade is the truth's; ``ratios`` the per-image values.
    """
    cms = np.stack([metrics.confusion_matrix(t, p) for t, p in zip(truth, pred, strict=True)])
    rep = metrics.report(cms.sum(axis=0))
    per_image = metrics.per_image_means(cms)
    standard = {
        "per_class": {
            name: {
                "iou": rep.iou[c],
                "dice": rep.dice[c],
                "precision": rep.precision[c],
                "recall": rep.recall[c],
                "true_pixels": int(rep.true_pixels[c]),
                "predicted_pixels": int(rep.predicted_pixels[c]),
            }
            for c, name in enumerate(CLASS_NAMES)
        },
        "mean_iou": rep.mean_iou,
        "mean_dice": rep.mean_dice,
        "pixel_accuracy": rep.pixel_accuracy,
    }
    averaged = {
        "per_class": {
            name: {"iou": per_image["iou"][c], "dice": per_image["dice"][c]} for c, name in enumerate(CLASS_NAMES)
        },
        "mean_iou": float(per_image["iou"].mean()),
        "mean_dice": float(per_image["dice"].mean()),
    }
    true_ratio = [metrics.corrosion_asset_ratio(metrics.class_pixels(t)) for t in truth]
    pred_ratio = [metrics.corrosion_asset_ratio(metrics.class_pixels(p)) for p in pred]
    result = {
        "num_images": len(cms),
        "classes": list(CLASS_NAMES),
        "standard": standard,
        "per_image": averaged,
        # What an inspector reads: the corroded share of the asset and its ASTM D610 grade, per image.
        "ratio_agreement": metrics.ratio_agreement(truth, pred),
        "ratios": {
            "truth": true_ratio,
            "predicted": pred_ratio,
            "truth_grade": [metrics.rust_grade(r) for r in true_ratio],
            "predicted_grade": [metrics.rust_grade(r) for r in pred_ratio],
        },
        "confusion_matrix": rep.confusion.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
    }
    return _plain(result), cms


def _plain(value: Any) -> Any:
    """NumPy scalars to Python ones and NaN to None, recursively, so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


# --------------------------------------------------------------------------------------------- figures


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
    cms: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Grid of at most MAX_PREDICTION_ROWS images spread over the split: image | truth | prediction | overlay."""
    from matplotlib.patches import Patch

    n = len(images)
    rows = np.unique(np.linspace(0, n - 1, min(n, MAX_PREDICTION_ROWS)).round().astype(int))
    fig = _new_figure(10, 2.5 * len(rows) + 0.8)
    axes = np.atleast_2d(fig.subplots(len(rows), 4))
    for r, i in enumerate(rows):
        label = f"id {ids[i]}" if ids is not None else f"#{i}"
        if cms is not None:  # the image's own (unsmoothed) IoU of corrosion and asset
            per_class = metrics.iou(cms[i])
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


# --------------------------------------------------------------------------------------------- report.md


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_markdown(
    model_name: str,
    result: dict[str, Any],
    figures: Sequence[tuple[str, str]] = (),
) -> str:
    """The markdown report of a metrics.json dict, linking the figures given as (title, file name)."""
    display = DISPLAY_NAMES.get(model_name, model_name)
    std, avg = result["standard"], result["per_image"]
    lines = [f"# {display}: evaluation on the {result.get('split', '?')} split", ""]
    facts = [("images", result["num_images"])]
    for key, label in (
        ("data_dir", "dataset"),
        ("source", "model"),
        ("input_size", "input size"),
        ("encoder_weights", "encoder initialisation"),
        ("best_epoch", "best epoch"),
        ("epochs_run", "epochs run"),
    ):
        if result.get(key) is not None:
            facts.append((label, result[key]))
    if result.get("train_seconds") is not None:
        facts.append(("training time", _duration(result["train_seconds"])))
    lines += [f"- {label}: {value}" for label, value in facts]
    lines += [
        "",
        "## Standard metrics",
        "",
        "From the confusion matrix summed over all pixels of the split; a class absent from both truth and",
        "prediction has no IoU or Dice (n/a) and the means skip it.",
        "",
        "| class | IoU | Dice | precision | recall | share of true pixels |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = sum(c["true_pixels"] for c in std["per_class"].values()) or 1
    for name, c in std["per_class"].items():
        lines.append(
            f"| {name} | {_pct(c['iou'])} | {_pct(c['dice'])} | {_pct(c['precision'])} | {_pct(c['recall'])} "
            f"| {_pct(c['true_pixels'] / total)} |"
        )
    lines += [
        f"| **mean** | **{_pct(std['mean_iou'])}** | **{_pct(std['mean_dice'])}** | | | |",
        "",
        f"Pixel accuracy: {_pct(std['pixel_accuracy'])}.",
        "",
        "## Per-image averages (the original project's metric)",
        "",
        "IoU and Dice of each image with 1e-7 added to numerator and denominator, averaged over the images;",
        "an image without a class scores 1 for it, which raises the averages of rare classes.",
        "",
        "| class | IoU | Dice |",
        "|---|---:|---:|",
    ]
    for name, c in avg["per_class"].items():
        lines.append(f"| {name} | {_pct(c['iou'])} | {_pct(c['dice'])} |")
    lines += [f"| **mean** | **{_pct(avg['mean_iou'])}** | **{_pct(avg['mean_dice'])}** |", ""]
    ratio = result.get("ratio_agreement")
    if ratio:
        lines += [
            "## What an inspector reads",
            "",
            "The corroded share of the asset (corrosion / (corrosion + asset) pixels, 0 with no asset) of each",
            "image against the truth's (mean absolute error, in percentage points), and its ASTM D610 rust grade",
            "(0-10): the share of images with the truth's grade, exactly and within one grade.",
            "",
            "| ratio MAE | grade exact | grade within one |",
            "|---:|---:|---:|",
            f"| {_pct(ratio['ratio_mae'])} | {_pct(ratio['grade_exact'])} | {_pct(ratio['grade_within_one'])} |",
            "",
        ]
    lines += [
        "## Compared with the original project",
        "",
        "Published per-image averages of the original project: ResNet50 encoder initialised from ImageNet, on",
        "its own 22-image test split. The numbers above come from a different split"
        + (f" and encoder initialisation ({result['encoder_weights']})" if result.get("encoder_weights") else "")
        + ", so the comparison is indicative only.",
        "",
        "| model | corrosion IoU | corrosion Dice | asset IoU | asset Dice |",
        "|---|---:|---:|---:|---:|",
    ]
    for arch, published in PUBLISHED.items():
        cells = [_pct(published[c][m]) for c in ("corrosion", "asset") for m in ("iou", "dice")]
        lines.append(f"| {DISPLAY_NAMES[arch]} (published) | " + " | ".join(cells) + " |")
    ours = [_pct(avg["per_class"][c][m]) for c in ("corrosion", "asset") for m in ("iou", "dice")]
    lines += [f"| **{display} (this report, per-image)** | " + " | ".join(ours) + " |", ""]
    lines += ["## Figures", ""]
    for title, file_name in figures:
        lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------- entry points


def write_evaluation(
    out_dir: str | Path,
    model_name: str,
    images: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    extra: dict[str, Any],
    *,
    ids: Sequence[str] | None = None,
    figures: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Evaluate predicted masks against the truth; write metrics.json, the confusion matrix and predictions
    figures and report.md into ``out_dir``. Returns the metrics.json dict.

    images: RGB uint8 (N, H, W, 3); truth, pred: class masks uint8 (N, H, W). ``extra`` (e.g. split, source,
    encoder_weights, best_epoch) is stored in metrics.json and shown in the report; ``ids`` label the
    prediction rows; ``figures`` are further (title, file name) images in ``out_dir`` for report.md to link.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    computed, cms = compute_metrics(truth, pred)
    result = {"model": model_name, **_plain(dict(extra)), **computed}
    if ids is not None:
        result["ids"] = [str(i) for i in ids]
    (out / METRICS_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")

    display = DISPLAY_NAMES.get(model_name, model_name)
    split = result.get("split", "")
    plot_confusion(np.asarray(result["confusion_matrix"]), out / CONFUSION_FILE, f"{display}, {split} split")
    plot_predictions(images, truth, pred, out / PREDICTIONS_FILE, ids, cms, f"{display}, {split} split")
    all_figures = [("Confusion matrix", CONFUSION_FILE), ("Predictions", PREDICTIONS_FILE), *figures]
    (out / REPORT_FILE).write_text(render_markdown(model_name, result, all_figures))
    return result


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history.csv as floats, one per epoch (the last row wins where a resumed run repeated one)."""
    by_epoch: dict[int, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
            if "epoch" in values:
                by_epoch[int(values["epoch"])] = values
    return [by_epoch[e] for e in sorted(by_epoch)]


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


def write_history_xlsx(history: list[dict[str, float]], figures: Sequence[tuple[str, str]], out_dir: Path) -> Path:
    """history.xlsx: the history table in sheet "history", the curve PNGs embedded in sheet "curves"."""
    from openpyxl import Workbook
    from openpyxl.drawing.image import Image as XlImage
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    sheet = wb.active
    sheet.title = "history"
    columns = list(dict.fromkeys(k for row in history for k in row))
    sheet.append(columns)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in history:
        sheet.append([int(row[k]) if k == "epoch" else row.get(k) for k in columns])
    for j, name in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(j)].width = max(10, len(name) + 2)
        if name not in ("epoch", "seconds", "lr"):
            for (cell,) in sheet.iter_rows(min_row=2, min_col=j, max_col=j):
                cell.number_format = "0.0000"
    sheet.freeze_panes = "B2"
    if history:
        sheet.auto_filter.ref = sheet.dimensions

    curves = wb.create_sheet("curves")
    row = 1
    for title, file_name in figures:
        curves.cell(row=row, column=1, value=title).font = Font(bold=True)
        picture = XlImage(str(out_dir / file_name))
        curves.add_image(picture, f"A{row + 1}")
        row += 3 + math.ceil(picture.height / 20)  # default row height is 15 pt = 20 px
    path = out_dir / HISTORY_XLSX
    wb.save(path)
    return path


def load_run_model(run_dir: str | Path):
    """The best checkpoint of a run folder, uncompiled."""
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)
    import training.losses  # noqa: F401  (registers the loss saved with the model)

    return keras.saving.load_model(Path(run_dir) / "best.keras", compile=False)


def write_run_report(run_dir: Path, data_dir: str, split_name: str, pairs: list[Pair]) -> dict[str, Any]:
    """The full report of a training run: evaluate best.keras on ``pairs`` and write, into run_dir,
    metrics.json, confusion_matrix.png, predictions.png, report.md and, when history.csv exists, the
    curves_*.png and history.xlsx. Returns the metrics.json dict.
    """
    from training.train import predict_masks

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    size = int(config.get("input_size", imaging.MODEL_INPUT_SIZE))
    model_name = str(config.get("model", run_dir.name))

    images, truth = load_arrays(pairs, size)
    pred = predict_masks(load_run_model(run_dir), images)

    figures: list[tuple[str, str]] = []
    history_path = run_dir / HISTORY_FILE
    if history_path.exists():
        history = read_history(history_path)
        if history:
            figures = plot_history(history, run_dir, state.get("best_epoch"))
            write_history_xlsx(history, figures, run_dir)
    extra = {
        "split": split_name,
        "data_dir": str(data_dir),
        "source": str(run_dir / "best.keras"),
        "input_size": size,
        "encoder_weights": config.get("encoder_weights"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "train_seconds": state.get("train_seconds"),
    }
    ids = [p.id for p in pairs]
    result = write_evaluation(run_dir, model_name, images, truth, pred, extra, ids=ids, figures=figures)
    print(
        f"report written to {run_dir}: {split_name} mIoU {_pct(result['standard']['mean_iou'])}, "
        f"corrosion IoU {_pct(result['standard']['per_class']['corrosion']['iou'])}",
        flush=True,
    )
    return result
