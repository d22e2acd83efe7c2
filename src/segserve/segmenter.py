"""The async request path both transports share: admission, decoding off the event loop, the model call,
answers, and the metrics of every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from segserve import imaging, inference
from segserve.classes import CLASSES
from segserve.errors import InvalidInput, ModelFailed, NotReady, Overloaded, UnknownModel
from segserve.settings import Settings
from segserve.telemetry import get_telemetry

# (model name, RGB uint8 batch (N, S, S, 3)) -> class probabilities (N, S, S, C)
PredictFn = Callable[[str, np.ndarray], Awaitable[np.ndarray]]

ARCHITECTURE_NAMES = {
    "deeplabv3plus": "DeepLabV3+ (ResNet50 encoder, output stride 16)",
    "unet": "U-Net (ResNet50 encoder)",
}


class Segmenter:
    """Serves Segment, Evaluate and ListModels for any transport.

    predict: runs a model on a batch (in the service, BentoML's batchable model APIs).
    models: what each served model reports, keyed by name: {"version", "input_size", "metadata"}; empty
        until the models are loaded, and requests meanwhile get NotReady.
    """

    def __init__(self, predict: PredictFn, models: dict[str, dict[str, Any]], settings: Settings) -> None:
        self._predict = predict
        self.settings = settings
        self._in_flight: dict[str, int] = {}
        self.telemetry = get_telemetry()
        self.set_models(models)

    def set_models(self, models: dict[str, dict[str, Any]]) -> None:
        """Serve these models (the service calls it once the model service answers)."""
        self.models = models
        for name, info in models.items():
            self.telemetry.model_info.labels(model=name, version=info["version"]).set(1)

    def resolve(self, model: str) -> str:
        """The served model a request names; empty means the default. Raises UnknownModel."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly")
        name = model or self.settings.default_model
        if name not in self.models:
            raise UnknownModel(f"unknown model {model!r}; this server serves {', '.join(sorted(self.models))}")
        return name

    def metric_label(self, model: str | None) -> str:
        """A low-cardinality model label for metrics: the resolved name, 'unknown', or 'none' (ListModels)."""
        if model is None:
            return "none"
        try:
            return self.resolve(model)
        except UnknownModel:
            return "unknown"

    @contextmanager
    def admit(self, transport: str) -> Iterator[None]:
        """Count a request in flight on ``transport``; raise Overloaded past the configured limit."""
        if self._in_flight.get(transport, 0) >= self.settings.max_concurrent_requests:
            raise Overloaded(
                f"server is busy: {self.settings.max_concurrent_requests} {transport} requests in flight; retry later"
            )
        self._in_flight[transport] = self._in_flight.get(transport, 0) + 1
        gauge = self.telemetry.in_flight.labels(transport=transport)
        gauge.inc()
        try:
            yield
        finally:
            self._in_flight[transport] -= 1
            gauge.dec()

    def record(self, transport: str, method: str, model: str | None, code: str, seconds: float) -> None:
        """Count one answered request and its latency."""
        label = self.metric_label(model)
        self.telemetry.requests.labels(transport=transport, method=method, model=label, code=code).inc()
        self.telemetry.latency.labels(transport=transport, method=method, model=label).observe(seconds)

    async def _segmentation(self, image: bytes, model: str) -> inference.Segmentation:
        name = self.resolve(model)
        info = self.models[name]
        prepared = await asyncio.to_thread(inference.prepare_image, image, self.settings, info["input_size"])
        started = time.perf_counter()
        try:
            probs = await self._predict(name, prepared.model_input[None])
        except Exception as exc:  # the model service's failure, never the caller's: retryable
            raise ModelFailed(f"model {name} did not answer: {exc}; retry shortly") from exc
        seconds = time.perf_counter() - started
        seg = await asyncio.to_thread(inference.segmentation, prepared, probs[0], name, info["version"], seconds)
        self.telemetry.corrosion_ratio.labels(model=name).observe(seg.corrosion_asset_ratio)
        return seg

    async def segment(self, image: bytes, model: str = "", include_overlay: bool = False) -> dict[str, Any]:
        """Answer a SegmentRequest. Raises the errors of segserve.errors for bad requests."""
        seg = await self._segmentation(image, model)
        return await asyncio.to_thread(inference.segment_answer, seg, include_overlay)

    async def evaluate(self, image: bytes, ground_truth: bytes, model: str = "") -> dict[str, Any]:
        """Answer an EvaluateRequest: the ground truth is validated before the model runs."""
        self.resolve(model)
        if not ground_truth:
            raise InvalidInput("ground_truth is empty")
        prepared_truth = await asyncio.to_thread(self._check_pair, image, ground_truth)
        seg = await self._segmentation(image, model)
        return await asyncio.to_thread(inference.evaluate_answer, seg, prepared_truth)

    def _check_pair(self, image: bytes, ground_truth: bytes) -> np.ndarray:
        width, height = imaging.image_size(image, self.settings.max_image_bytes, self.settings.max_image_pixels)
        return inference.prepare_truth(ground_truth, width, height, self.settings)

    def list_models(self) -> dict[str, Any]:
        """Answer a ListModelsRequest."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly")
        return {"models": [self._model_info(name) for name in sorted(self.models)]}

    def _model_info(self, name: str) -> dict[str, Any]:
        info = self.models[name]
        meta = info.get("metadata", {})
        val = meta.get("val_metrics") or {}
        return {
            "name": name,
            "version": info["version"],
            "architecture": ARCHITECTURE_NAMES.get(name, name),
            "input_size": int(info["input_size"]),
            "classes": [
                {"id": c.id, "name": c.name, "red": c.color[0], "green": c.color[1], "blue": c.color[2]}
                for c in CLASSES
            ],
            "is_default": name == self.settings.default_model,
            "validation": [
                {
                    "class_id": int(row["class_id"]),
                    "name": str(row["name"]),
                    "iou": float(row.get("iou", float("nan"))),
                    "dice": float(row.get("dice", float("nan"))),
                    "per_image_iou": float(row.get("per_image_iou", float("nan"))),
                    "per_image_dice": float(row.get("per_image_dice", float("nan"))),
                }
                for row in val.get("per_class", [])
            ],
            "validation_mean_iou": float(val.get("mean_iou", float("nan"))),
            "validation_pixel_accuracy": float(val.get("pixel_accuracy", float("nan"))),
            "encoder_weights": str(meta.get("encoder_weights", "")),
        }
