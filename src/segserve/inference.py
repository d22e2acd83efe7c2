"""The inference core shared by both transports: request bytes in, answers shaped like the proto out.

Answers are plain dicts whose keys are the proto's field names: the gRPC servicer builds messages from
them and the HTTP API serialises them to JSON, so both transports answer the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from segserve import imaging, metrics, review
from segserve.classes import CLASSES, NUM_CLASSES
from segserve.errors import InvalidInput
from segserve.predictor import Prediction
from segserve.settings import Settings

REVIEW_REASON_PREFIX = "REVIEW_REASON_"


@dataclass(frozen=True)
class Prepared:
    """A decoded request image and the model input made from it."""

    image: np.ndarray  # RGB uint8 (H, W, 3), the input's own size
    model_input: np.ndarray  # RGB uint8 (S, S, 3), resized for the model

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class Segmentation:
    """A prediction at the input's own size with its coverage figures."""

    model: str
    model_version: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    mask: np.ndarray  # class ids uint8 (H, W)
    pixels: np.ndarray  # int64 (C,)
    corrosion_asset_ratio: float
    rust_grade: int
    model_seconds: float
    confidence: review.Confidence
    confidence_threshold: float
    review_reasons: tuple[str, ...]
    models_agreement: float | None = None


def prepare_image(data: bytes, settings: Settings, size: int = imaging.MODEL_INPUT_SIZE) -> Prepared:
    """Validate and decode request image bytes; raises InvalidInput or TooLarge."""
    image = imaging.decode_image(data, settings.max_image_bytes, settings.max_image_pixels)
    return Prepared(image=image, model_input=imaging.resize_image(image, size))


def prepare_truth(data: bytes, width: int, height: int, settings: Settings) -> np.ndarray:
    """Validate and decode a ground truth for an image of (width, height); returns class ids uint8 (H, W)."""
    if not data:
        raise InvalidInput("ground_truth is empty")
    truth = imaging.decode_mask(data, settings.max_image_bytes, settings.max_image_pixels)
    if truth.shape != (height, width):
        raise InvalidInput(
            f"ground_truth is {truth.shape[1]}x{truth.shape[0]} but the image is {width}x{height}; they must match"
        )
    return truth


def segmentation(
    prepared: Prepared,
    prediction: Prediction,
    model: str,
    version: str,
    model_seconds: float,
    thresholds: review.ReviewThresholds,
) -> Segmentation:
    """Turn the model's prediction for one prepared image (a batch of one) into a Segmentation with its review
    signals; for an ensemble, the agreement of its members too.

    Confidence and image quality are measured at the model's input size; the mask is at the input's own size.
    """
    mask = imaging.upsample_mask(prediction.mask[0], prepared.width, prepared.height)
    pixels = metrics.class_pixels(mask)
    ratio = metrics.corrosion_asset_ratio(pixels)
    conf = review.confidence_of(prediction.mask[0], prediction.top[0], thresholds.confidence_threshold)
    models_agreement = None
    if prediction.members is not None:
        ids = prediction.members[:, 0]
        models_agreement = float(np.mean([review.agreement(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]))
    quality = review.image_quality(prepared.model_input, min_side=min(prepared.width, prepared.height))
    reasons = review.review_reasons(conf, quality, pixels, thresholds, models_agreement)
    return Segmentation(
        model=model,
        model_version=version,
        image=prepared.image,
        mask=mask,
        pixels=pixels,
        corrosion_asset_ratio=ratio,
        rust_grade=metrics.rust_grade(ratio),
        model_seconds=model_seconds,
        confidence=conf,
        confidence_threshold=thresholds.confidence_threshold,
        review_reasons=tuple(reasons),
        models_agreement=models_agreement,
    )


def segment_answer(seg: Segmentation, include_overlay: bool) -> dict[str, Any]:
    """The SegmentResponse fields of a Segmentation, masks encoded as PNG (and the overlay as JPEG)."""
    total = int(seg.pixels.sum())
    return {
        "model": seg.model,
        "model_version": seg.model_version,
        "width": int(seg.mask.shape[1]),
        "height": int(seg.mask.shape[0]),
        "mask_png": imaging.encode_png(seg.mask),
        "color_mask_png": imaging.encode_png(imaging.colorize(seg.mask)),
        "overlay_jpeg": imaging.encode_jpeg(imaging.overlay(seg.image, seg.mask)) if include_overlay else b"",
        "coverage": [
            {
                "class_id": c.id,
                "name": c.name,
                "pixels": int(seg.pixels[c.id]),
                "fraction": seg.pixels[c.id] / total,
                "mean_confidence": float(seg.confidence.per_class[c.id]),
            }
            for c in CLASSES
        ],
        "corrosion_asset_ratio": seg.corrosion_asset_ratio,
        "rust_grade": seg.rust_grade,
        "model_seconds": seg.model_seconds,
        "mean_confidence": seg.confidence.mean,
        "low_confidence_fraction": seg.confidence.low_fraction,
        "confidence_threshold": seg.confidence_threshold,
        "needs_review": bool(seg.review_reasons),
        "review_reasons": [REVIEW_REASON_PREFIX + r for r in seg.review_reasons],
        "models_agreement": seg.models_agreement,
    }


def evaluate_answer(seg: Segmentation, truth: np.ndarray) -> dict[str, Any]:
    """The EvaluateResponse fields: the Segmentation scored against a ground truth of the same size."""
    rep = metrics.report(metrics.confusion_matrix(truth, seg.mask))
    return {
        "model": seg.model,
        "model_version": seg.model_version,
        "per_class": [
            {
                "class_id": c.id,
                "name": c.name,
                "iou": float(rep.iou[c.id]),
                "dice": float(rep.dice[c.id]),
                "precision": float(rep.precision[c.id]),
                "recall": float(rep.recall[c.id]),
                "true_pixels": int(rep.true_pixels[c.id]),
                "predicted_pixels": int(rep.predicted_pixels[c.id]),
            }
            for c in CLASSES
        ],
        "mean_iou": rep.mean_iou,
        "mean_dice": rep.mean_dice,
        "pixel_accuracy": rep.pixel_accuracy,
        "num_classes": NUM_CLASSES,
        "confusion_matrix": [int(v) for v in rep.confusion.ravel()],
        "prediction": segment_answer(seg, include_overlay=False),
    }


def to_json(value: Any) -> Any:
    """An answer dict made JSON-safe: bytes as base64 strings, NaN and infinities as null."""
    import base64

    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
