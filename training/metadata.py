"""A trained model's metadata, as a release (models/<name>.json) and a store version record it: where it came
from, what it was trained on, and its validation metrics in the layout the server reports (segserve.segmenter).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segserve import imaging
from segserve.metrics import RATIO_KEYS
from training.sources import LoadedModel

# The keys of a per-class row of ``val_metrics``, in order.
VAL_ROW_KEYS = ("class_id", "name", "iou", "dice", "precision", "recall", "per_image_iou", "per_image_dice")


def _defined(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def val_metrics(table: dict[str, Any], split: str = "val") -> dict[str, Any]:
    """A model's ``val_metrics`` from ``segserve.metrics.table``: ``per_class`` rows with class_id, name, iou,
    dice, precision, recall, per_image_iou and per_image_dice, the means, and what an inspector reads:
    ``ratio_mae`` (mean absolute error of the corrosion_asset_ratio), ``grade_exact`` and ``grade_within_one``
    (rust grade agreement). Undefined values (NaN) are left out.
    """
    rows = [{k: row[k] for k in VAL_ROW_KEYS if _defined(row[k])} for row in table["per_class"]]
    summary = {
        "split": split,
        "num_images": table["num_images"],
        "per_class": rows,
        "mean_iou": table["mean_iou"],
        "mean_dice": table["mean_dice"],
        "pixel_accuracy": table["pixel_accuracy"],
        "per_image_mean_iou": table["per_image_mean_iou"],
        "per_image_mean_dice": table["per_image_mean_dice"],
        **{k: table[k] for k in RATIO_KEYS},
    }
    return {k: v for k, v in summary.items() if _defined(v)}


def trained_on(config: dict[str, Any]) -> str:
    """The data folder and how many photos trained and validated the model, from a run's config.json."""
    data = Path(str(config["data"])).resolve()
    return f"{data} ({len(config['train_ids'])} train / {len(config['val_ids'])} val photos)"


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def build_metadata(
    config: dict[str, Any],
    state: dict[str, Any],
    val: dict[str, Any],
    trained_at: str,
    start: LoadedModel | None = None,
    start_val: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata of a model trained by a run, from the run's config.json and state.json and its ``val``
    metrics (:func:`val_metrics`); None values are left out.

    start: the model the run started from (``--init-from``, a fine-tune): its builder arguments, encoder
    weights and review thresholds carry over, and ``trained_from``, ``trained_on``, ``precision`` and
    ``start_val_metrics`` (its metrics on the same photos) are recorded.
    """
    meta = {
        "builder_kwargs": dict(start.builder_kwargs) if start else {},
        "input_size": int(config.get("input_size") or imaging.MODEL_INPUT_SIZE),
        "encoder_weights": start.metadata.get("encoder_weights") if start else config.get("encoder_weights"),
        "val_metrics": val,
        "train_seconds": state.get("train_seconds"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "dataset": Path(str(config["data"])).resolve().name if config.get("data") else "",
        "train_ids": config.get("train_ids", []),
        "val_ids": config.get("val_ids", []),
        "trained_at": trained_at,
    }
    if start is not None:
        meta.update(
            start_val_metrics=start_val,
            trained_from=start.description,
            trained_on=trained_on(config),
            precision=config.get("resolved_precision"),
        )
        if start.metadata.get("review"):
            meta["review"] = start.metadata["review"]
    return _drop_none(meta)
