"""The request path: a photo's bytes in, an answer shaped like the proto out, read top to bottom.

    decode (header read once, by the edge) -> resize to the model's input -> predict (normalise and forward
    pass in the model service, batched with other requests) -> postprocess (mask at the photo's size,
    coverage, confidence, review signals) -> answer

``Pipeline.segment`` and ``Pipeline.evaluate`` run it for one request; the functions below them are the
pure steps, which training's evaluation calls too (``training.prediction``), so what training measures is
what serving answers. Answers are plain dicts keyed by the proto's field names: the gRPC servicer builds
messages from them and the HTTP API serialises them to JSON, so both transports answer the same thing.
Around the pipeline, the edge (``segserve.edge``) authenticates, admits, keeps the deadline and counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from segserve import imaging, metrics, review
from segserve.classes import CLASSES, NUM_CLASSES
from segserve.errors import DeadlineExceeded, InvalidInput, ModelFailed
from segserve.imaging import ImageHeader
from segserve.predictor import Prediction, unpack

# (served name, RGB uint8 batch (N, S, S, 3)) -> segserve.predictor.pack-ed class ids and confidences: the
# model service's batchable API for that name.
PredictFn = Callable[[str, np.ndarray], Awaitable[np.ndarray]]

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
    """A prediction at the input's own size with its coverage figures and review signals."""

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


@dataclass(frozen=True)
class ServedModel:
    """What the pipeline needs of the model a request resolved to."""

    name: str
    version: str
    input_size: int
    thresholds: review.ReviewThresholds


class Pipeline:
    """One request at a time through decode, resize, the model service, postprocessing and the answer.

    predict: the model service's batchable API (see PredictFn). CPU work runs off the event loop.
    """

    def __init__(self, predict: PredictFn) -> None:
        self._predict = predict

    async def segment(
        self,
        data: bytes,
        header: ImageHeader,
        model: ServedModel,
        include_overlay: bool = False,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """The SegmentResponse fields for a photo whose header the caller read (and admitted)."""
        prepared = await asyncio.to_thread(prepare_image, data, header, model.input_size)
        prediction, seconds = await self._run_model(model.name, prepared, deadline)
        return await asyncio.to_thread(_segment_answer, prepared, prediction, model, seconds, include_overlay)

    async def evaluate(
        self,
        data: bytes,
        header: ImageHeader,
        ground_truth: bytes,
        model: ServedModel,
        deadline: float | None = None,
        max_bytes: int = 1 << 62,
    ) -> dict[str, Any]:
        """The EvaluateResponse fields: the ground truth is checked before the model runs."""
        truth = await asyncio.to_thread(prepare_truth, ground_truth, header, max_bytes)
        prepared = await asyncio.to_thread(prepare_image, data, header, model.input_size)
        prediction, seconds = await self._run_model(model.name, prepared, deadline)
        seg = await asyncio.to_thread(postprocess, prepared, prediction, model, seconds)
        return await asyncio.to_thread(evaluate_answer, seg, truth)

    async def _run_model(self, name: str, prepared: Prepared, deadline: float | None) -> tuple[Prediction, float]:
        if deadline is not None and time.monotonic() >= deadline:  # nobody is waiting: spare the model
            raise DeadlineExceeded("the call's deadline passed before the model could run")
        started = time.perf_counter()
        try:
            packed = await self._predict(name, prepared.model_input[None])
        except Exception as exc:  # the model service's failure, never the caller's: retryable
            reason = str(exc) or type(exc).__name__  # some errors have no message: name them
            raise ModelFailed(f"model {name} did not answer: {reason}; retry shortly", retry_after=1.0) from exc
        return unpack(packed), time.perf_counter() - started


# --------------------------------------------------------------------------------------------- the steps


def prepare_image(data: bytes, header: ImageHeader, size: int = imaging.MODEL_INPUT_SIZE) -> Prepared:
    """Decode request image bytes (their header already read and checked) and resize them for the model."""
    image = imaging.decode_image(data, header=header)
    return Prepared(image=image, model_input=imaging.resize_image(image, size))


def prepare_truth(data: bytes, image: ImageHeader, max_bytes: int = 1 << 62) -> np.ndarray:
    """Validate and decode a ground truth for an image with header ``image``; returns class ids uint8 (H, W).

    The truth must have the image's size, which also bounds its pixels.
    """
    if not data:
        raise InvalidInput("ground_truth is empty")
    header = imaging.read_header(data, max_bytes, max(image.pixels, 1))
    if (header.width, header.height) != (image.width, image.height):
        raise InvalidInput(
            f"ground_truth is {header.width}x{header.height} but the image is {image.width}x{image.height}; "
            "they must match"
        )
    return imaging.decode_mask(data, header=header)


def postprocess(prepared: Prepared, prediction: Prediction, model: ServedModel, model_seconds: float) -> Segmentation:
    """Turn the model's prediction for one prepared image (a batch of one) into a Segmentation with its review
    signals; for an ensemble, the agreement of its members too.

    Confidence and image quality are measured at the model's input size; the mask is at the input's own size.
    """
    thresholds = model.thresholds
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
        model=model.name,
        model_version=model.version,
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
        "color_mask_png": imaging.encode_color_mask_png(seg.mask),
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


def _segment_answer(
    prepared: Prepared, prediction: Prediction, model: ServedModel, seconds: float, include_overlay: bool
) -> dict[str, Any]:
    return segment_answer(postprocess(prepared, prediction, model, seconds), include_overlay)


# The rows of segserve.metrics.table that EvaluateResponse's ClassMetrics carry.
CLASS_METRICS = ("class_id", "name", "iou", "dice", "precision", "recall", "true_pixels", "predicted_pixels")


def evaluate_answer(seg: Segmentation, truth: np.ndarray) -> dict[str, Any]:
    """The EvaluateResponse fields: the Segmentation scored against a ground truth of the same size, by the
    metrics table training's reports use (``segserve.metrics.table``)."""
    scores = metrics.table([truth], [seg.mask])
    return {
        "model": seg.model,
        "model_version": seg.model_version,
        "per_class": [{k: row[k] for k in CLASS_METRICS} for row in scores["per_class"]],
        "mean_iou": scores["mean_iou"],
        "mean_dice": scores["mean_dice"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "num_classes": NUM_CLASSES,
        "confusion_matrix": [int(v) for row in scores["confusion_matrix"] for v in row],
        "prediction": segment_answer(seg, include_overlay=False),
    }
