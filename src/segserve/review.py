"""How far an answer can be trusted: confidence, image quality, agreement of two models, the review decision.

Pure NumPy/OpenCV, shared by serving (every answer carries these signals) and by training's calibration
(``training.calibrate`` chooses the thresholds on the validation split and records them with the model's
metadata under ``review``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from segserve.classes import ASSET, CORROSION, NUM_CLASSES

# Why an answer needs a person's look. The names are the proto's ReviewReason values without the prefix.
LOW_CONFIDENCE = "LOW_CONFIDENCE"
NO_ASSET = "NO_ASSET"
IMAGE_TOO_SMALL = "IMAGE_TOO_SMALL"
IMAGE_TOO_DARK = "IMAGE_TOO_DARK"
IMAGE_TOO_BLURRED = "IMAGE_TOO_BLURRED"
MODELS_DISAGREE = "MODELS_DISAGREE"
REASONS = (LOW_CONFIDENCE, NO_ASSET, IMAGE_TOO_SMALL, IMAGE_TOO_DARK, IMAGE_TOO_BLURRED, MODELS_DISAGREE)

# Side the sharpness is measured at, so that it does not depend on the photo's resolution.
SHARPNESS_SIZE = 256


@dataclass(frozen=True)
class Confidence:
    """Softmax confidence of one prediction.

    per_class: mean top probability of the pixels predicted as each class, float64 (C,); NaN for a class
        predicted nowhere.
    mean: mean top probability over all pixels.
    low_fraction: share of pixels whose top probability is below the threshold it was computed with.
    """

    per_class: np.ndarray
    mean: float
    low_fraction: float


def confidence(probs: np.ndarray, threshold: float) -> Confidence:
    """Confidence of class probabilities (H, W, C) whose argmax is the prediction."""
    probs = np.asarray(probs, dtype=np.float32)
    return confidence_of(probs.argmax(axis=-1), probs.max(axis=-1), threshold)


def confidence_of(mask: np.ndarray, top: np.ndarray, threshold: float) -> Confidence:
    """Confidence of a prediction given as class ids (H, W) and their top class probability (H, W)."""
    top = np.asarray(top, dtype=np.float32)
    mask = np.asarray(mask)
    counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    sums = np.bincount(mask.ravel(), weights=top.ravel().astype(np.float64), minlength=NUM_CLASSES)[:NUM_CLASSES]
    per_class = np.full(NUM_CLASSES, np.nan)
    np.divide(sums, counts, out=per_class, where=counts > 0)
    return Confidence(per_class=per_class, mean=float(top.mean()), low_fraction=float((top < threshold).mean()))


def agreement(mask_a: np.ndarray, mask_b: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """How far two class masks of the same shape agree: mean IoU over the classes present in either (1 = equal)."""
    from segserve import metrics

    return metrics.nanmean(metrics.iou(metrics.confusion_matrix(mask_a, mask_b, num_classes)))


@dataclass(frozen=True)
class ImageQuality:
    """What can be told about a photo before any model looks at it.

    min_side: the shorter side in pixels. brightness: mean luminance, 0-255. sharpness: variance of the
    Laplacian of the luminance at SHARPNESS_SIZE (0 for a blank or featureless photo).
    """

    min_side: int
    brightness: float
    sharpness: float


def image_quality(image: np.ndarray, min_side: int | None = None) -> ImageQuality:
    """Size, brightness and sharpness of an RGB uint8 photo (H, W, 3).

    min_side: the original photo's shorter side, when ``image`` is a resized copy of it (the model input).
    """
    h, w = image.shape[:2]
    small = image
    if max(h, w) > SHARPNESS_SIZE:
        scale = SHARPNESS_SIZE / max(h, w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var()) if min(gray.shape) >= 3 else 0.0
    side = int(min(h, w)) if min_side is None else int(min_side)
    return ImageQuality(min_side=side, brightness=float(gray.mean()), sharpness=sharpness)


@dataclass(frozen=True)
class ReviewThresholds:
    """The limits past which an answer is flagged for review (stored as the model metadata's ``review``).

    confidence_threshold: a pixel whose top probability is below this is low-confidence.
    max_low_confidence_fraction: LOW_CONFIDENCE when more of the image than this is low-confidence.
    min_asset_fraction: NO_ASSET when corrosion + asset cover less of the image than this.
    min_side: IMAGE_TOO_SMALL below this many pixels on the shorter side.
    min_brightness: IMAGE_TOO_DARK below this mean luminance (0-255).
    min_sharpness: IMAGE_TOO_BLURRED below this Laplacian variance (blank and featureless photos too).
    min_agreement: MODELS_DISAGREE when the ensemble's two masks agree less than this (mean IoU).
    """

    confidence_threshold: float = 0.6
    max_low_confidence_fraction: float = 0.3
    min_asset_fraction: float = 0.005
    min_side: int = 64
    min_brightness: float = 25.0
    min_sharpness: float = 20.0
    min_agreement: float = 0.5

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> ReviewThresholds:
        """The thresholds recorded in a model's metadata (its ``review`` entry); defaults for what is missing."""
        recorded = (metadata or {}).get("review") or {}
        known = {f.name: type(f.default)(recorded[f.name]) for f in fields(cls) if f.name in recorded}
        return cls(**known)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def review_reasons(
    conf: Confidence,
    quality: ImageQuality,
    pixels: np.ndarray,
    thresholds: ReviewThresholds,
    models_agreement: float | None = None,
) -> list[str]:
    """The reasons (in REASONS order) an answer needs review; empty when it can be trusted as it is.

    pixels: class pixel counts of the prediction; models_agreement: the ensemble's agreement, if any.
    """
    reasons = []
    if conf.low_fraction > thresholds.max_low_confidence_fraction:
        reasons.append(LOW_CONFIDENCE)
    total = max(1, int(np.sum(pixels)))
    if (int(pixels[CORROSION]) + int(pixels[ASSET])) / total < thresholds.min_asset_fraction:
        reasons.append(NO_ASSET)
    if quality.min_side < thresholds.min_side:
        reasons.append(IMAGE_TOO_SMALL)
    if quality.brightness < thresholds.min_brightness:
        reasons.append(IMAGE_TOO_DARK)
    if quality.sharpness < thresholds.min_sharpness:
        reasons.append(IMAGE_TOO_BLURRED)
    if models_agreement is not None and models_agreement < thresholds.min_agreement:
        reasons.append(MODELS_DISAGREE)
    return reasons
