"""segserve's BentoML service: one batching path for HTTP and gRPC.

``Models`` holds both Keras models behind batchable APIs, so BentoML's adaptive batching merges concurrent
requests. ``SegServe`` is the entry: the HTTP API (/segment, /evaluate, GET /models) and a grpc.aio server
started from its startup hook. Both transports call the same Segmenter, whose predictions go through
``Models``' batchable APIs.

    bentoml serve bento.service:SegServe          # HTTP on 3000, gRPC on SEGSERVE_GRPC_PORT (50051)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
import numpy as np
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from segserve.errors import (
    InvalidInput,
    ModelFailed,
    ModelNotInStore,
    NotReady,
    Overloaded,
    SegServeError,
    TooLarge,
    UnknownModel,
)
from segserve.settings import get_settings

logger = logging.getLogger("segserve")
settings = get_settings()

_HTTP_STATUS: dict[type[SegServeError], int] = {
    InvalidInput: 400,
    UnknownModel: 404,
    TooLarge: 413,
    Overloaded: 429,
    NotReady: 503,
    ModelFailed: 503,
    ModelNotInStore: 503,
}


# BentoML 1.4's service-to-service client replaces its aiohttp session every 100 requests and closes the
# old one under requests still using it (bentoml issues 5540, 5544): those calls fail with a dropped
# connection. Inference is idempotent, so such a call is sent again.
MODEL_CALL_ATTEMPTS = 3
_RETRYABLE = (aiohttp.ClientConnectionError, ConnectionError, RuntimeError)


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


def http_status(exc: SegServeError) -> int:
    """The HTTP status of a segserve error."""
    for kind, status in _HTTP_STATUS.items():
        if isinstance(exc, kind):
            return status
    return 400


@bentoml.service(name="segserve-models", workers=1, traffic={"timeout": 300})
class Models:
    """Both segmentation models, loaded from the BentoML store, behind batchable APIs."""

    def __init__(self) -> None:
        from segserve.predictor import Predictor
        from segserve.store import load_from_store

        self.models: dict[str, Any] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        for name in settings.model_names:
            try:
                model, info = load_from_store(name)
            except ModelNotInStore as exc:
                logger.error("%s", exc)
                raise SystemExit(f"segserve cannot start: {exc}") from exc
            size = info.input_size
            # Trace before serving, at two batch sizes, so Keras relaxes the batch dimension once here rather
            # than retracing for each new batch size under the first real load.
            predictor = Predictor(model)
            for batch in (1, max(2, settings.max_batch_size)):
                predictor.probabilities(np.zeros((batch, size, size, 3), np.uint8))
            self.models[name] = predictor
            self.infos[name] = {"version": info.version, "input_size": size, "metadata": info.metadata}
            logger.info("loaded %s version %s", name, info.version)

    def _predict(self, name: str, images: np.ndarray) -> np.ndarray:
        from segserve.telemetry import get_telemetry

        telemetry = get_telemetry()
        started = time.perf_counter()
        probs = self.models[name].probabilities(images)
        telemetry.compute.labels(model=name).observe(time.perf_counter() - started)
        telemetry.batch_size.labels(model=name).observe(len(images))
        return probs.astype(np.float16)

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def deeplabv3plus(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> class probabilities float16 (N, S, S, 3) from DeepLabV3+."""
        return self._predict("deeplabv3plus", images)

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def unet(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> class probabilities float16 (N, S, S, 3) from U-Net."""
        return self._predict("unet", images)

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """Version, input size and metadata of each loaded model."""
        return self.infos


async def _list_models(request: Request) -> Response:
    """GET /models: the ListModelsResponse fields as JSON."""
    segserve: SegServe = request.app.state.segserve

    async def work() -> dict[str, Any]:
        return segserve.segmenter.list_models()

    return await segserve.answer("http", "ListModels", None, work)


models_app = Starlette(routes=[Route("/models", _list_models, methods=["GET"])])


@bentoml.asgi_app(models_app, path="/")
@bentoml.service(name="segserve", workers=1, traffic={"timeout": 300})
class SegServe:
    """The entry service: HTTP API, gRPC server, and the shared Segmenter."""

    models = bentoml.depends(Models)

    def __init__(self) -> None:
        from segserve.segmenter import Segmenter

        self.settings = settings
        self.segmenter = Segmenter(self._predict, {}, settings)
        self.grpc = None
        self._ready_task: asyncio.Task | None = None
        models_app.state.segserve = self

    async def _predict(self, name: str, images: np.ndarray) -> np.ndarray:
        method = getattr(self.models.to_async, name)
        return await call_model(lambda: method(images))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        from segserve.servicer import GrpcServer

        address = f"{settings.grpc_host}:{settings.grpc_port}"
        self.grpc = GrpcServer(self.segmenter, address, settings.grpc_max_message_bytes)
        await self.grpc.start()
        logger.info("gRPC listening on %s (NOT_SERVING until the models answer)", address)
        self._ready_task = asyncio.create_task(self._wait_for_models())

    async def _wait_for_models(self) -> None:
        while True:
            try:
                infos = await self.models.to_async.describe()
                break
            except Exception as exc:  # the model service is still starting
                logger.debug("models not ready yet: %s", exc)
                await asyncio.sleep(1.0)
        self.segmenter.set_models(infos)
        await self.grpc.set_serving(True)
        logger.info("gRPC SERVING with models %s", ", ".join(sorted(infos)))

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self._ready_task is not None:
            self._ready_task.cancel()
        if self.grpc is not None:
            await self.grpc.stop(settings.grpc_grace_seconds)

    async def answer(self, transport: str, method: str, model: str | None, work) -> Response:
        """Run ``work`` for an HTTP request: admission, metrics, and a JSON answer or a JSON error."""
        from segserve.inference import to_json

        started = time.perf_counter()
        status = 200
        try:
            with self.segmenter.admit(transport):
                body = to_json(await work())
        except SegServeError as exc:
            status = http_status(exc)
            body = {"error": str(exc), "code": type(exc).__name__}
        finally:
            self.segmenter.record(transport, method, model, str(status), time.perf_counter() - started)
        return JSONResponse(body, status_code=status)

    @bentoml.api(route="/segment")
    async def segment(
        self,
        image: Annotated[Path, Field(description="The photo: PNG, JPEG, BMP, TIFF or WebP")],
        model: Annotated[str, Field(description="deeplabv3plus, unet or ensemble; empty for the default")] = "",
        include_overlay: Annotated[bool, Field(description="Also return overlay_jpeg")] = False,
    ) -> dict:  # the answer dict's schema for OpenAPI; returned as a JSONResponse to carry error statuses
        """Segment a photo into corrosion, asset and background (the SegmentResponse fields, bytes in base64)."""
        data = image.read_bytes()
        return await self.answer("http", "Segment", model, lambda: self.segmenter.segment(data, model, include_overlay))

    @bentoml.api(route="/evaluate")
    async def evaluate(
        self,
        image: Annotated[Path, Field(description="The photo")],
        ground_truth: Annotated[
            Path, Field(description="RGB mask in the dataset colours or a single-channel class-id PNG, same size")
        ],
        model: Annotated[str, Field(description="deeplabv3plus, unet or ensemble; empty for the default")] = "",
    ) -> dict:  # as in segment
        """Segment a photo and score it against its ground truth (the EvaluateResponse fields)."""
        data, truth = image.read_bytes(), ground_truth.read_bytes()
        return await self.answer("http", "Evaluate", model, lambda: self.segmenter.evaluate(data, truth, model))
