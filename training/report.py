"""Evaluation reports: metrics.json, figures, report.md, and for a training run its curves and history.xlsx.

:func:`write_evaluation` scores predicted masks against the truth and writes the report into any folder
(``training.evaluate`` uses it for models from the store); :func:`write_run_report` does it for a run folder
of ``training.train`` and adds the training curves. All numbers come from ``segserve.metrics.table``;
:func:`metrics_json` lays its table out as metrics.json.
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
from training.data import Pair, load_arrays
from training.figures import plot_confusion, plot_history, plot_predictions
from training.formatting import display_name, duration, percent, plain
from training.prediction import predict_masks
from training.sources import RUN_MODEL, load_run_model

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.png"
REPORT_FILE = "report.md"
HISTORY_FILE = "history.csv"
HISTORY_XLSX = "history.xlsx"

# The original project's published test results: per-image smoothed averages, ResNet50 encoder initialised
# from ImageNet, on its own 22-image test split.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    name: a.published for name, a in ARCHITECTURES.items() if a.published
}
# The standard metrics of a class in metrics.json, in order.
_STANDARD_KEYS = ("iou", "dice", "precision", "recall", "true_pixels", "predicted_pixels")


def metrics_json(table: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json layout of a ``segserve.metrics.table``, NaN as None (strict JSON).

    ``standard``: per class (by name) and means from the confusion matrix summed over the split; ``per_image``:
    the original project's smoothed per-image averages; ``ratio_agreement``: what an inspector reads
    (``ratio_mae``, ``grade_exact``, ``grade_within_one``); ``ratios``: each image's corroded share of the asset
    and its ASTM D610 rust grade, truth and prediction; ``confusion_matrix``: rows true class, columns predicted.
    """
    rows, images = table["per_class"], table["images"]
    return plain(
        {
            "num_images": table["num_images"],
            "classes": [row["name"] for row in rows],
            "standard": {
                "per_class": {row["name"]: {k: row[k] for k in _STANDARD_KEYS} for row in rows},
                "mean_iou": table["mean_iou"],
                "mean_dice": table["mean_dice"],
                "pixel_accuracy": table["pixel_accuracy"],
            },
            "per_image": {
                "per_class": {
                    row["name"]: {"iou": row["per_image_iou"], "dice": row["per_image_dice"]} for row in rows
                },
                "mean_iou": table["per_image_mean_iou"],
                "mean_dice": table["per_image_mean_dice"],
            },
            "ratio_agreement": {k: table[k] for k in metrics.RATIO_KEYS},
            "ratios": {
                "truth": images["truth_ratio"],
                "predicted": images["predicted_ratio"],
                "truth_grade": images["truth_grade"],
                "predicted_grade": images["predicted_grade"],
            },
            "confusion_matrix": table["confusion_matrix"],
            "confusion_matrix_axes": "rows: true class, columns: predicted class",
        }
    )


def render_markdown(
    model_name: str,
    result: dict[str, Any],
    figures: Sequence[tuple[str, str]] = (),
) -> str:
    """The markdown report of a metrics.json dict, linking the figures given as (title, file name)."""
    display = display_name(model_name)
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
        facts.append(("training time", duration(result["train_seconds"])))
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
        shares = (c["iou"], c["dice"], c["precision"], c["recall"], c["true_pixels"] / total)
        lines.append(f"| {name} | " + " | ".join(percent(v, "%") for v in shares) + " |")
    lines += [
        f"| **mean** | **{percent(std['mean_iou'], '%')}** | **{percent(std['mean_dice'], '%')}** | | | |",
        "",
        f"Pixel accuracy: {percent(std['pixel_accuracy'], '%')}.",
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
        lines.append(f"| {name} | {percent(c['iou'], '%')} | {percent(c['dice'], '%')} |")
    lines += [f"| **mean** | **{percent(avg['mean_iou'], '%')}** | **{percent(avg['mean_dice'], '%')}** |", ""]
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
            "| " + " | ".join(percent(ratio[k], "%") for k in ("ratio_mae", "grade_exact", "grade_within_one")) + " |",
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
        cells = [percent(published[c][m], "%") for c in ("corrosion", "asset") for m in ("iou", "dice")]
        lines.append(f"| {display_name(arch)} (published) | " + " | ".join(cells) + " |")
    ours = [percent(avg["per_class"][c][m], "%") for c in ("corrosion", "asset") for m in ("iou", "dice")]
    lines += [f"| **{display} (this report, per-image)** | " + " | ".join(ours) + " |", ""]
    lines += ["## Figures", ""]
    for title, file_name in figures:
        lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    return "\n".join(lines).rstrip() + "\n"


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
    table = metrics.table(truth, pred)
    result = {"model": model_name, **plain(dict(extra)), **metrics_json(table)}
    if ids is not None:
        result["ids"] = [str(i) for i in ids]
    (out / METRICS_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")

    display = display_name(model_name)
    split = result.get("split", "")
    plot_confusion(np.asarray(result["confusion_matrix"]), out / CONFUSION_FILE, f"{display}, {split} split")
    image_iou = table["images"]["iou"]
    plot_predictions(images, truth, pred, out / PREDICTIONS_FILE, ids, image_iou, f"{display}, {split} split")
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


def write_run_report(run_dir: Path, data_dir: str, split_name: str, pairs: list[Pair]) -> dict[str, Any]:
    """The full report of a training run: evaluate best.keras on ``pairs`` and write, into run_dir,
    metrics.json, confusion_matrix.png, predictions.png, report.md and, when history.csv exists, the
    curves_*.png and history.xlsx. Returns the metrics.json dict.
    """
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
        "source": str(run_dir / RUN_MODEL),
        "input_size": size,
        "encoder_weights": config.get("encoder_weights"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "train_seconds": state.get("train_seconds"),
    }
    ids = [p.id for p in pairs]
    result = write_evaluation(run_dir, model_name, images, truth, pred, extra, ids=ids, figures=figures)
    print(
        f"report written to {run_dir}: {split_name} mIoU {percent(result['standard']['mean_iou'], '%')}, "
        f"corrosion IoU {percent(result['standard']['per_class']['corrosion']['iou'], '%')}",
        flush=True,
    )
    return result
