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
from segserve.admission import PixelBudget
from segserve.architectures import ARCHITECTURES
from segserve.classes import CLASSES
from segserve.errors import DeadlineExceeded, InvalidInput, ModelFailed, NotReady, Overloaded, UnknownModel
from segserve.predictor import unpack
from segserve.settings import Settings
from segserve.telemetry import get_telemetry

# (model name or "ensemble", RGB uint8 batch (N, S, S, 3)) -> segserve.predictor.pack-ed class ids and confidences
PredictFn = Callable[[str, np.ndarray], Awaitable[np.ndarray]]

# The name of the ensemble of every served model: their probabilities averaged, their agreement reported.
ENSEMBLE = "ensemble"


def _description(name: str) -> str:
    arch = ARCHITECTURES.get(name)
    return arch.description if arch else name


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
        self.budget = PixelBudget(settings.max_pixels_in_flight, settings.admission_wait_seconds)
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
        info_gauge = self.telemetry.model_info
        for name, info in models.items():
            info_gauge.labels(model=name, version=info["version"], backend=info.get("backend", "")).set(1)

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
            raise NotReady("models are still loading; retry shortly", retry_after=2.0)
        name = model or self.settings.default_model
        if name not in self.served_names:
            raise UnknownModel(f"unknown model {model!r}; this server serves {', '.join(self.served_names)}")
        return name

    def metric_label(self, model: str | None) -> str:
        """A low-cardinality model label for metrics: the model's name, 'unknown', or 'none' (ListModels).

        Never raises: while the models load, a name is judged against the configured models.
        """
        if model is None:
            return "none"
        name = model or self.settings.default_model
        known = self.served_names if self.models else (*self.settings.model_names, ENSEMBLE)
        return name if name in known else "unknown"

    @contextmanager
    def admit(self, transport: str) -> Iterator[None]:
        """Count a request in flight on ``transport``; raise Overloaded past the configured limit."""
        if self._in_flight.get(transport, 0) >= self.settings.max_concurrent_requests:
            raise Overloaded(
                f"server is busy: {self.settings.max_concurrent_requests} {transport} requests in flight; retry later",
                retry_after=1.0,
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

    async def _segmentation(self, image: bytes, name: str, deadline: float | None) -> inference.Segmentation:
        prepared = await asyncio.to_thread(inference.prepare_image, image, self.settings, self.input_size(name))
        if deadline is not None and time.monotonic() >= deadline:  # nobody is waiting: spare the model
            raise DeadlineExceeded("the call's deadline passed before the model could run")
        started = time.perf_counter()
        try:
            packed = await self._predict(name, prepared.model_input[None])
        except Exception as exc:  # the model service's failure, never the caller's: retryable
            raise ModelFailed(f"model {name} did not answer: {exc}; retry shortly", retry_after=1.0) from exc
        seconds = time.perf_counter() - started
        seg = await asyncio.to_thread(
            inference.segmentation,
            prepared,
            unpack(packed),
            name,
            self.version(name),
            seconds,
            self.thresholds[name],
        )
        self.telemetry.corrosion_ratio.labels(model=name).observe(seg.corrosion_asset_ratio)
        self.telemetry.confidence.labels(model=name).observe(seg.confidence.mean)
        for reason in seg.review_reasons:
            self.telemetry.review_flags.labels(model=name, reason=reason).inc()
        return seg

    def _pixels(self, data: bytes) -> int:
        """Decoded pixels of an encoded image, from its header; raises InvalidInput or TooLarge."""
        width, height = imaging.image_size(data, self.settings.max_image_bytes, self.settings.max_image_pixels)
        return width * height

    async def segment(
        self, image: bytes, model: str = "", include_overlay: bool = False, deadline: float | None = None
    ) -> dict[str, Any]:
        """Answer a SegmentRequest. Raises the errors of segserve.errors for bad requests.

        deadline: ``time.monotonic()`` after which the caller no longer waits (None: no deadline).
        """
        name = self.resolve(model)
        async with self.budget.reserve(self._pixels(image), deadline):
            seg = await self._segmentation(image, name, deadline)
            return await asyncio.to_thread(inference.segment_answer, seg, include_overlay)

    async def evaluate(
        self, image: bytes, ground_truth: bytes, model: str = "", deadline: float | None = None
    ) -> dict[str, Any]:
        """Answer an EvaluateRequest: the ground truth is validated before the model runs."""
        name = self.resolve(model)
        if not ground_truth:
            raise InvalidInput("ground_truth is empty")
        async with self.budget.reserve(2 * self._pixels(image), deadline):
            prepared_truth = await asyncio.to_thread(self._check_pair, image, ground_truth)
            seg = await self._segmentation(image, name, deadline)
            return await asyncio.to_thread(inference.evaluate_answer, seg, prepared_truth)

    def _check_pair(self, image: bytes, ground_truth: bytes) -> np.ndarray:
        width, height = imaging.image_size(image, self.settings.max_image_bytes, self.settings.max_image_pixels)
        return inference.prepare_truth(ground_truth, width, height, self.settings)

    def list_models(self) -> dict[str, Any]:
        """Answer a ListModelsRequest."""
        if not self.models:
            raise NotReady("models are still loading; retry shortly", retry_after=2.0)
        return {"models": [self._model_info(name) for name in self.served_names]}

    def _model_info(self, name: str) -> dict[str, Any]:
        if name == ENSEMBLE:
            lead = self.models[self._lead_member].get("metadata", {})
            meta = {"val_metrics": lead.get("ensemble_val_metrics") or {}}
            architecture = "Ensemble: mean class probabilities of " + ", ".join(_description(m) for m in self.members)
        else:
            meta = self.models[name].get("metadata", {})
            architecture = _description(name)
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
            "backend": str(self.models[self._lead_member if name == ENSEMBLE else name].get("backend", "")),
        }
