"""Segmentation metrics in two stages, pure NumPy: counts first (confusion matrices), then reductions.

Zero-division rule: a ratio whose denominator is zero (a class absent from both truth and prediction
for IoU and Dice, never predicted for precision, never true for recall) is NaN, "undefined", and the
means skip it. The per-image "smoothed" metrics of the original project add 1e-7 to numerator and
denominator instead, so an absent class scores 1 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segserve.classes import ASSET, CLASS_NAMES, CORROSION, NUM_CLASSES

SMOOTH = 1e-7

# ASTM D610 rust grades: grade g applies while the rusted share is at most _D610_LIMITS[10 - g].
_D610_LIMITS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.10, 0.16, 0.33, 0.50)


def _check_ids(mask: np.ndarray, num_classes: int, what: str) -> None:
    """Raise ValueError when a class mask holds an id outside 0..num_classes-1 (the class table)."""
    if not mask.size:
        return
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{what} has class id {bad}; class ids must be 0..{num_classes - 1} (a table of {num_classes} classes)"
        )


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count pixels by (true class, predicted class).

    truth, pred: integer class masks of the same shape, ids in 0..num_classes-1 (ValueError otherwise:
    an id outside the class table would be counted in another cell). Returns int64
    (num_classes, num_classes), rows = truth, columns = prediction.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    _check_ids(truth, num_classes, "truth")
    _check_ids(pred, num_classes, "prediction")
    idx = truth.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.int64)
    fp = cm.sum(axis=-2) - tp  # predicted as the class, truly another
    fn = cm.sum(axis=-1) - tp  # truly the class, predicted as another
    return tp, fp, fn


def iou(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix (..., C, C); float64 (..., C), NaN if undefined."""
    tp, fp, fn = _counts(cm)
    return _ratio(tp, tp + fp + fn)


def dice(cm: np.ndarray) -> np.ndarray:
    """Per-class Dice = 2TP / (2TP + FP + FN); float64 (..., C), NaN if undefined."""
    tp, fp, fn = _counts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def precision(cm: np.ndarray) -> np.ndarray:
    """Per-class precision = TP / (TP + FP); float64 (..., C), NaN for a class never predicted."""
    tp, fp, _ = _counts(cm)
    return _ratio(tp, tp + fp)


def recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall = TP / (TP + FN); float64 (..., C), NaN for a class absent from the truth."""
    tp, _, fn = _counts(cm)
    return _ratio(tp, tp + fn)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Share of pixels whose predicted class is the true class; NaN for an empty matrix."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def nanmean(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def smoothed_iou(cm: np.ndarray) -> np.ndarray:
    """The original project's per-image IoU = (I + 1e-7) / (U + 1e-7), float64 (..., C)."""
    tp, fp, fn = _counts(cm)
    return (tp + SMOOTH) / (tp + fp + fn + SMOOTH)


def smoothed_dice(cm: np.ndarray) -> np.ndarray:
    """The original project's per-image Dice = (2I + 1e-7) / (|T| + |P| + 1e-7), float64 (..., C)."""
    tp, fp, fn = _counts(cm)
    return (2 * tp + SMOOTH) / (2 * tp + fp + fn + SMOOTH)


@dataclass(frozen=True)
class Report:
    """Metrics of one image or one split. Arrays are per class, float64 (C,)."""

    confusion: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    mean_iou: float
    mean_dice: float
    pixel_accuracy: float

    @property
    def true_pixels(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def predicted_pixels(self) -> np.ndarray:
        return self.confusion.sum(axis=0)


def report(cm: np.ndarray) -> Report:
    """All standard metrics of a confusion matrix (C, C), e.g. one accumulated over a whole split."""
    per_iou, per_dice = iou(cm), dice(cm)
    return Report(
        confusion=cm,
        iou=per_iou,
        dice=per_dice,
        precision=precision(cm),
        recall=recall(cm),
        mean_iou=nanmean(per_iou),
        mean_dice=nanmean(per_dice),
        pixel_accuracy=pixel_accuracy(cm),
    )


def per_image_means(cms: np.ndarray) -> dict[str, np.ndarray]:
    """The original project's per-image averages from per-image confusion matrices (N, C, C).

    Returns {"iou": (C,), "dice": (C,)}: the smoothed per-image metrics averaged over the N images.
    """
    cms = np.asarray(cms)
    return {"iou": smoothed_iou(cms).mean(axis=0), "dice": smoothed_dice(cms).mean(axis=0)}


def class_pixels(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Pixel count of each class in a class mask; int64 (num_classes,).

    Raises ValueError for an id outside 0..num_classes-1.
    """
    mask = np.asarray(mask)
    _check_ids(mask, num_classes, "mask")
    return np.bincount(mask.ravel(), minlength=num_classes).astype(np.int64)


def corrosion_asset_ratio(pixels: np.ndarray) -> float:
    """Corroded share of the asset: corrosion / (corrosion + asset) pixels; 0 when neither is present."""
    rusted, sound = int(pixels[CORROSION]), int(pixels[ASSET])
    return rusted / (rusted + sound) if rusted + sound else 0.0


def rust_grade(ratio: float) -> int:
    """ASTM D610 rust grade (10 = at most 0.01% rusted ... 0 = more than 50%) of a rusted share in [0, 1]."""
    for i, limit in enumerate(_D610_LIMITS):
        if ratio <= limit:
            return 10 - i
    return 0


def _check_pairs(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> None:
    if len(truth) != len(pred) or not len(truth):
        raise ValueError(f"need the same non-zero number of truths and predictions, got {len(truth)} and {len(pred)}")


def _agreement(true_ratio: Sequence[float], pred_ratio: Sequence[float]) -> dict[str, float]:
    """ratio_mae, grade_exact and grade_within_one of per-image corroded shares (see :func:`ratio_agreement`)."""
    true_ratio, pred_ratio = np.asarray(true_ratio, dtype=np.float64), np.asarray(pred_ratio, dtype=np.float64)
    grade_gap = np.abs(np.array([rust_grade(r) for r in true_ratio]) - np.array([rust_grade(r) for r in pred_ratio]))
    return {
        "ratio_mae": float(np.abs(true_ratio - pred_ratio).mean()),
        "grade_exact": float((grade_gap == 0).mean()),
        "grade_within_one": float((grade_gap <= 1).mean()),
    }


def ratio_agreement(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, float]:
    """How well predicted class masks (N, H, W) tell what an inspector reads, against their truths (N, H, W).

    Returns ``ratio_mae``: mean absolute error of the corroded share of the asset (corrosion_asset_ratio),
    ``grade_exact`` and ``grade_within_one``: shares of images whose ASTM D610 rust grade is the truth's,
    exactly and within one grade.
    """
    _check_pairs(truth, pred)
    true_ratio = [corrosion_asset_ratio(class_pixels(t)) for t in truth]
    pred_ratio = [corrosion_asset_ratio(class_pixels(p)) for p in pred]
    return _agreement(true_ratio, pred_ratio)


RATIO_KEYS = ("ratio_mae", "grade_exact", "grade_within_one")


def table(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, Any]:
    """The metrics table of predicted class masks against their truths, one pair per image.

    truth, pred: sequences of class masks (H, W); a pair shares its shape, images may differ in size. Counts
    first (one confusion matrix per image), then every reduction from them; plain Python values, NaN where a
    ratio is undefined (the module's zero-division rule). Keys:

    - ``num_images``;
    - ``per_class``: one row per class of the class table, with ``class_id``, ``name``; ``iou``, ``dice``,
      ``precision``, ``recall`` of the confusion matrix summed over the images; ``true_pixels``,
      ``predicted_pixels``; ``per_image_iou``, ``per_image_dice``: the original project's smoothed per-image
      metrics averaged over the images;
    - ``mean_iou``, ``mean_dice`` (over the defined classes), ``pixel_accuracy``: of the summed matrix;
    - ``per_image_mean_iou``, ``per_image_mean_dice``: the means of ``per_image_iou`` / ``per_image_dice``;
    - ``ratio_mae``, ``grade_exact``, ``grade_within_one``: what an inspector reads (:func:`ratio_agreement`);
    - ``confusion_matrix``: the summed matrix, C lists of C ints (rows truth, columns prediction);
    - ``images``: per image, in order: ``iou`` (C values each, unsmoothed), ``mean_iou`` (over the image's
      defined classes, as the Evaluate RPC reports it), ``truth_ratio`` / ``predicted_ratio`` (the corroded
      share of the asset) and ``truth_grade`` / ``predicted_grade`` (its ASTM D610 rust grade).
    """
    _check_pairs(truth, pred)
    cms = np.stack([confusion_matrix(t, p) for t, p in zip(truth, pred, strict=True)])
    rep = report(cms.sum(axis=0))
    per_image = per_image_means(cms)
    image_iou = iou(cms)
    # class pixels of each truth (rows of its matrix) and prediction (columns)
    true_ratio = [corrosion_asset_ratio(pixels) for pixels in cms.sum(axis=2)]
    pred_ratio = [corrosion_asset_ratio(pixels) for pixels in cms.sum(axis=1)]
    return {
        "num_images": len(cms),
        "per_class": [
            {
                "class_id": c,
                "name": name,
                "iou": float(rep.iou[c]),
                "dice": float(rep.dice[c]),
                "precision": float(rep.precision[c]),
                "recall": float(rep.recall[c]),
                "true_pixels": int(rep.true_pixels[c]),
                "predicted_pixels": int(rep.predicted_pixels[c]),
                "per_image_iou": float(per_image["iou"][c]),
                "per_image_dice": float(per_image["dice"][c]),
            }
            for c, name in enumerate(CLASS_NAMES)
        ],
        "mean_iou": rep.mean_iou,
        "mean_dice": rep.mean_dice,
        "pixel_accuracy": rep.pixel_accuracy,
        "per_image_mean_iou": float(per_image["iou"].mean()),
        "per_image_mean_dice": float(per_image["dice"].mean()),
        **_agreement(true_ratio, pred_ratio),
        "confusion_matrix": rep.confusion.tolist(),
        "images": {
            "iou": image_iou.tolist(),
            "mean_iou": [nanmean(row) for row in image_iou],
            "truth_ratio": true_ratio,
            "predicted_ratio": pred_ratio,
            "truth_grade": [rust_grade(r) for r in true_ratio],
            "predicted_grade": [rust_grade(r) for r in pred_ratio],
        },
    }
