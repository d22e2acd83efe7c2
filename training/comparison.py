"""Two models side by side on the same held-out photos: the metrics a fine-tune is judged by (per-class and mean
IoU, pixel accuracy, the corroded share's error, the rust grade's agreement), as a table of both and the change.

``training.finetune`` compares the start model with the fine-tuned one; ``training.evaluate --against`` a
store version with another (a candidate with the served version) before it is promoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segserve import metrics
from training.data import Sample
from training.formatting import percent
from training.metadata import val_metrics
from training.prediction import Option, answer_masks, predict_masks, run_option


def held_out_metrics(model: Any, images: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The metrics of a model on held-out photos at its input size through serving's path
    (``training.prediction.predict_masks``), in the layout of a release's ``val_metrics``
    (``training.metadata.val_metrics``), ratio agreement included."""
    return val_metrics(metrics.table(truth, predict_masks(model, images)), "val")


def answer_metrics(name: str, model: Any, samples: Sequence[Sample], split: str = "val") -> dict[str, Any]:
    """The metrics of a model's answers on photos at their own size, as the server answers them (the model
    service's prediction, then ``pipeline.postprocess``), in the layout of ``val_metrics``."""
    predictions = [run_option(Option((name,), False), {name: model}, s.model_input[None]) for s in samples]
    return val_metrics(metrics.table([s.truth for s in samples], answer_masks(predictions, samples)), split)


def _class_iou(name: str):
    return lambda m: next((row.get("iou") for row in m.get("per_class", []) if row["name"] == name), None)


# Rows of the side-by-side table: (label, getter). Shares read as percentages, ratio MAE in percentage points.
COMPARISON_ROWS = (
    ("mean IoU (%)", lambda m: m.get("mean_iou")),
    ("IoU corrosion (%)", _class_iou("corrosion")),
    ("IoU asset (%)", _class_iou("asset")),
    ("IoU background (%)", _class_iou("background")),
    ("per-image mean IoU (%)", lambda m: m.get("per_image_mean_iou")),
    ("pixel accuracy (%)", lambda m: m.get("pixel_accuracy")),
    ("ratio MAE (points, lower is better)", lambda m: m.get("ratio_mae")),
    ("grade exact (%)", lambda m: m.get("grade_exact")),
    ("grade within one (%)", lambda m: m.get("grade_within_one")),
)


def comparison_rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, change) as formatted strings."""
    rows = []
    for label, get in COMPARISON_ROWS:
        a, b = get(before), get(after)
        change = "" if a is None or b is None else f"{100 * (b - a):+.2f}"
        rows.append((label, percent(a), percent(b), change))
    return rows


def comparison_markdown(
    before: dict[str, Any], after: dict[str, Any], labels: tuple[str, str] = ("start", "fine-tuned")
) -> str:
    """The side-by-side table in markdown."""
    lines = [f"| metric | {labels[0]} | {labels[1]} | change |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {a} | {b} | {c} |" for label, a, b, c in comparison_rows(before, after)]
    return "\n".join(lines)


def print_comparison(
    before: dict[str, Any],
    after: dict[str, Any],
    labels: tuple[str, str] = ("start", "fine-tuned"),
    title: str = "held-out (val)",
) -> None:
    """Print the side-by-side table."""
    width = max(12, len(labels[1]) + 2)
    print(f"{title:<38}{labels[0]:>{width}}{labels[1]:>{width}}{'change':>9}")
    for label, a, b, c in comparison_rows(before, after):
        print(f"{label:<38}{a:>{width}}{b:>{width}}{c:>9}")


def verdict(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether ``after`` is the better model: a higher mean IoU."""
    return float(after["mean_iou"]) > float(before["mean_iou"])
