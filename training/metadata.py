"""A trained model's metadata, as a release (models/<name>.json) and a store version record it: where it came
from, what it was trained on, and its validation metrics in the layout the server reports (segserve.segmenter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segserve import imaging, store
from segserve.errors import SegServeError
from segserve.metrics import RATIO_KEYS
from training.sources import LoadedModel

# The keys of a per-class row of ``val_metrics``, in order.
VAL_ROW_KEYS = ("class_id", "name", "iou", "dice", "precision", "recall", "per_image_iou", "per_image_dice")
# The training options that make a model's recipe (training.loop's, by their argparse names), recorded with it.
RECIPE_KEYS = (
    "epochs",
    "batch_size",
    "crop_size",
    "input_size",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "patience",
    "val_every",
    "encoder_weights",
    "augment",
    "loss",
    "fit_on",
    "seed",
    "precision",
)


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


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """The recipe of a run (its config.json): the training options of ``RECIPE_KEYS`` it ran with."""
    return {k: config[k] for k in RECIPE_KEYS if config.get(k) is not None}


def read_recipe(name: str, source: str) -> dict[str, Any]:
    """The recipe a release records (its metadata's ``recipe``): ``release`` (models/<name>.json), a release
    folder, or a release's metadata file. SegServeError when there is none."""
    path = Path(source)
    if source == "release":
        path = store.release_paths(name, store.DEFAULT_RELEASE_DIR)[1]
    elif path.is_dir():
        path = store.release_paths(name, path)[1]
    try:
        recipe = json.loads(path.read_text()).get("recipe")
    except (OSError, ValueError) as exc:
        raise SegServeError(f"--recipe {source}: {path} cannot be read as a release's metadata ({exc})") from exc
    if not isinstance(recipe, dict):
        raise SegServeError(f"--recipe {source}: {path} records no recipe")
    return {k: v for k, v in recipe.items() if k in RECIPE_KEYS}


def trained_on(config: dict[str, Any]) -> str:
    """The data folder and how many photos trained and validated the model, from a run's config.json."""
    data = Path(str(config["data"])).resolve()
    return f"{data} ({len(config['train_ids'])} train / {len(config['val_ids'])} val photos)"


def trained_photos(meta: dict[str, Any], data_dir: str | Path, ids: Sequence[str]) -> list[str]:
    """The photos among ``ids`` of ``data_dir`` that the model of ``meta`` was trained on (its ``train_ids``,
    when its ``dataset`` is that folder's name), in the order of ``ids``."""
    if meta.get("dataset") != Path(data_dir).resolve().name:
        return []
    trained = set(meta.get("train_ids") or ())
    return [i for i in ids if i in trained]


MEASURE_ELSEWHERE = (
    "Measure it on photos it was not trained on, or measure the release of its recipe's run on the train split."
)


def require_held_out(
    metas: dict[str, dict[str, Any]],
    data_dir: str | Path,
    ids: Sequence[str],
    split: str,
    remedy: str = MEASURE_ELSEWHERE,
) -> None:
    """Raise SegServeError when a model of ``metas`` ({name: metadata}) was trained on any of the photos it is
    about to be measured on: its scores there would measure its fit, not how it answers a new photo. A final fit
    (``--fit-on train+val``) was trained on the val split; its recorded val metrics are its recipe's run's."""
    for name, meta in metas.items():
        seen = trained_photos(meta, data_dir, ids)
        if not seen:
            continue
        shown = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
        source = meta.get("validation_source")
        where = f" Its recorded val metrics come from {source}." if source else ""
        raise SegServeError(
            f"{name} was trained on {len(seen)} of the {len(ids)} {split} photos of {data_dir} ({shown}), so "
            f"measuring it there would score its fit, not how it answers new photos.{where} {remedy}"
        )


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
    ``start_val_metrics`` (its metrics on the same photos) are recorded. ``recipe``: the run's training options
    (:func:`recipe_of`), so that ``--recipe`` can run it again.
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
        "recipe": recipe_of(config) or None,
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
