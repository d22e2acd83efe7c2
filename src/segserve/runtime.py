"""The model service's side of serving: the served models loaded from the store on the configured backend and
warmed up, a batch run through one of them (or the ensemble) and timed, and the description the entry
service builds its catalog from.

The entry service reaches it over BentoML's batchable APIs, one per served name (``bento/service.py``
declares them from the architecture table); ``ModelClient`` is that side, with the retry a dropped
connection needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np

from segserve.architectures import ENSEMBLE, method_name
from segserve.engines import EngineUnavailable, choose
from segserve.errors import ModelNotInStore
from segserve.predictor import Predictor, load_predictor, pack, predict_ensemble
from segserve.settings import Settings
from segserve.telemetry import get_telemetry

logger = logging.getLogger("segserve")


def load_served(name: str, settings: Settings) -> tuple[Predictor, dict[str, Any]]:
    """The served version of ``name`` on the engine this machine gets for it (``segserve.engines``), and what
    ListModels and the metrics say of it. Raises ModelNotInStore or EngineUnavailable."""
    from segserve import parity
    from segserve.store import openvino_cache_dir, served_model

    model_dir, info = served_model(name)
    engine = choose(settings.backend, settings.precision, parity.passed(model_dir, "openvino:bf16"))
    predictor = load_predictor(
        model_dir,
        engine.backend,
        info.input_size,
        settings.model_threads,
        settings.model_spinning,
        engine.precision,
        settings.openvino_cache_dir or str(openvino_cache_dir()),
    )
    described = {
        "version": info.version,
        "input_size": info.input_size,
        "metadata": info.metadata,
        "backend": engine.backend,
        "precision": engine.precision,
    }
    logger.info("loaded %s version %s on %s (%s)", name, info.version, engine.name, engine.reason)
    return predictor, described


class ModelRuntime:
    """Every model of ``settings.model_names``, loaded and warm; raises SystemExit naming a missing one or an
    engine the settings ask for that this machine cannot run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.predictors: dict[str, Predictor] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        for name in settings.model_names:
            try:
                predictor, described = load_served(name, settings)
            except (ModelNotInStore, EngineUnavailable) as exc:
                logger.error("%s", exc)
                raise SystemExit(f"segserve cannot start: {exc}") from exc
            size = described["input_size"]
            # Run before serving, at two batch sizes, so that the first requests pay no tracing (TensorFlow
            # relaxes the batch dimension once) or allocation cost.
            for batch in (1, max(2, settings.max_batch_size)):
                predictor.predict(np.zeros((batch, size, size, 3), np.uint8))
            self.predictors[name] = predictor
            self.infos[name] = described

    def predict(self, name: str, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> ``pack``-ed class ids and confidences from ``name`` (a model or the
        ensemble: the mean of its members' probabilities, with each member's ids), timed in the metrics."""
        telemetry = get_telemetry()
        started = time.perf_counter()
        if name == ENSEMBLE:
            members = [self.predictors[m] for m in self.settings.ensemble_members]
            prediction = predict_ensemble(members, images)
        else:
            prediction = self.predictors[name].predict(images)
        packed = pack(prediction)
        telemetry.compute.labels(model=name).observe(time.perf_counter() - started)
        telemetry.batch_size.labels(model=name).observe(len(images))
        return packed


# A call to the model service can fail with a dropped connection, or an answer cut short while it was read (any
# aiohttp.ClientError): a model worker restarting, or BentoML 1.4's client closing its session under calls
# still using it (bentoml issues 5540, 5544; bento/service.py turns its periodic replacement off). Inference
# is idempotent, so such a call is sent again.
MODEL_CALL_ATTEMPTS = 3
_RETRYABLE = (aiohttp.ClientError, ConnectionError, RuntimeError)


async def call_model(call: Callable[[], Awaitable[Any]], attempts: int = MODEL_CALL_ATTEMPTS) -> Any:
    """Await ``call()``, sending it again (up to ``attempts`` times) when the connection to the model service drops."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except _RETRYABLE as exc:
            if attempt == attempts:
                raise
            logger.warning("model call failed (%s), attempt %d of %d; retrying", exc, attempt, attempts)
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


class ModelClient:
    """The entry service's client of the model service: ``predict(name, images)`` calls the batchable API
    of ``name`` (see ``segserve.pipeline.PredictFn``)."""

    def __init__(self, models: Any) -> None:  # the entry's bentoml.depends(Models) handle
        self.models = models

    async def predict(self, name: str, images: np.ndarray) -> np.ndarray:
        method = getattr(self.models.to_async, method_name(name))
        return await call_model(lambda: method(images))

    async def describe(self) -> dict[str, dict[str, Any]]:
        return await self.models.to_async.describe()
