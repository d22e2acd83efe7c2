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

from segserve import imaging, inference, review
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
# The name of the ensemble of every served model: their probabilities averaged, their agreement reported.
ENSEMBLE = "ensemble"


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
        self.thresholds = {
            name: review.ReviewThresholds.from_metadata(info.get("metadata")) for name, info in models.items()
        }
        if self.members:
            self.thresholds[ENSEMBLE] = self.thresholds[self._lead_member]
        for name, info in models.items():
            self.telemetry.model_info.labels(model=name, version=info["version"]).set(1)

    @property
    def members(self) -> tuple[str, ...]:
        """The models the ensemble averages: every served model, when there are at least two."""
        names = tuple(sorted(self.models))
        return names if len(names) >= 2 else ()

    @property
    def _lead_member(self) -> str:
        """The member whose metadata speaks for the ensemble (its review thresholds): the default model if a member."""
        return self.settings.default_model if self.settings.default_model in self.members else self.members[0]

    @property
    def served_names(self) -> tuple[str, ...]:
        """Every name a request may use: the models, and the ensemble when there are two or more."""
        return tuple(sorted(self.models)) + ((ENSEMBLE,) if self.members else ())

    def resolve(self, model: str) -> str:
        """The served model a request names; empty means the default. Raises UnknownModel."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly")
        name = model or self.settings.default_model
        if name not in self.served_names:
            raise UnknownModel(f"unknown model {model!r}; this server serves {', '.join(self.served_names)}")
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

    def version(self, name: str) -> str:
        """The version a resolved name answers with; the ensemble's names its members' versions."""
        if name == ENSEMBLE:
            return "+".join(f"{m}:{self.models[m]['version']}" for m in self.members)
        return self.models[name]["version"]

    def input_size(self, name: str) -> int:
        return int(self.models[self._lead_member if name == ENSEMBLE else name]["input_size"])

    async def _call(self, name: str, images: np.ndarray) -> np.ndarray:
        try:
            return await self._predict(name, images)
        except Exception as exc:  # the model service's failure, never the caller's: retryable
            raise ModelFailed(f"model {name} did not answer: {exc}; retry shortly") from exc

    async def _probabilities(self, name: str, images: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Class probabilities (S, S, C) of one image, and for the ensemble its members' agreement."""
        if name != ENSEMBLE:
            return (await self._call(name, images))[0], None
        # Each member goes through its own batchable API, so ensemble requests batch with single-model ones.
        probs = [p[0] for p in await asyncio.gather(*(self._call(m, images) for m in self.members))]
        masks = [np.argmax(p, axis=-1) for p in probs]
        pairs = [review.agreement(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :]]
        mean = np.mean([p.astype(np.float32) for p in probs], axis=0)
        return mean, float(np.mean(pairs))

    async def _segmentation(self, image: bytes, model: str) -> inference.Segmentation:
        name = self.resolve(model)
        prepared = await asyncio.to_thread(inference.prepare_image, image, self.settings, self.input_size(name))
        started = time.perf_counter()
        probs, agreement = await self._probabilities(name, prepared.model_input[None])
        seconds = time.perf_counter() - started
        seg = await asyncio.to_thread(
            inference.segmentation,
            prepared,
            probs,
            name,
            self.version(name),
            seconds,
            self.thresholds[name],
            agreement,
        )
        self.telemetry.corrosion_ratio.labels(model=name).observe(seg.corrosion_asset_ratio)
        self.telemetry.confidence.labels(model=name).observe(seg.confidence.mean)
        for reason in seg.review_reasons:
            self.telemetry.review_flags.labels(model=name, reason=reason).inc()
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
        return {"models": [self._model_info(name) for name in self.served_names]}

    def _model_info(self, name: str) -> dict[str, Any]:
        if name == ENSEMBLE:
            lead = self.models[self._lead_member].get("metadata", {})
            meta = {"val_metrics": lead.get("ensemble_val_metrics") or {}}
            architecture = "Ensemble: mean class probabilities of " + ", ".join(
                ARCHITECTURE_NAMES.get(m, m) for m in self.members
            )
        else:
            meta = self.models[name].get("metadata", {})
            architecture = ARCHITECTURE_NAMES.get(name, name)
        val = meta.get("val_metrics") or {}
        return {
            "name": name,
            "version": self.version(name),
            "architecture": architecture,
            "input_size": self.input_size(name),
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
            "trained_from": str(meta.get("trained_from", "")),
            "trained_on": str(meta.get("trained_on", "")),
            "validation_ratio_mae": float(val.get("ratio_mae", float("nan"))),
            "validation_grade_exact": float(val.get("grade_exact", float("nan"))),
            "validation_grade_within_one": float(val.get("grade_within_one", float("nan"))),
            "review": self.thresholds[name].as_dict(),
            "members": list(self.members) if name == ENSEMBLE else [],
        }
