"""segserve's BentoML service: one batching path for HTTP and gRPC.

``Models`` runs the models (ONNX Runtime or TensorFlow) behind batchable APIs, so BentoML's adaptive batching
merges concurrent requests. ``SegServe`` is the entry: the HTTP API (/segment, /evaluate, GET /models, /ui) and a
grpc.aio server started from its startup hook. Both transports call the same Segmenter, whose predictions go through
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
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from segserve.errors import ModelNotInStore
from segserve.settings import get_settings

logger = logging.getLogger("segserve")
settings = get_settings()


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


@bentoml.service(name="segserve-models", workers=settings.model_workers, traffic={"timeout": 300})
class Models:
    """The served models, loaded from the BentoML store on the configured backend, behind batchable APIs."""

    def __init__(self) -> None:
        from segserve.predictor import load_predictor
        from segserve.store import served_model

        self.models: dict[str, Any] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        for name in settings.model_names:
            try:
                model_dir, info = served_model(name)
            except ModelNotInStore as exc:
                logger.error("%s", exc)
                raise SystemExit(f"segserve cannot start: {exc}") from exc
            size = info.input_size
            predictor = load_predictor(
                model_dir, settings.backend, size, settings.model_threads, settings.model_spinning
            )
            # Run before serving, at two batch sizes, so that the first requests pay no tracing (TensorFlow
            # relaxes the batch dimension once) or allocation cost.
            for batch in (1, max(2, settings.max_batch_size)):
                predictor.predict(np.zeros((batch, size, size, 3), np.uint8))
            self.models[name] = predictor
            self.infos[name] = {
                "version": info.version,
                "input_size": size,
                "metadata": info.metadata,
                "backend": settings.backend,
            }
            logger.info("loaded %s version %s on %s", name, info.version, settings.backend)

    def _observe(self, name: str, images: np.ndarray, run: Callable[[], Any]) -> np.ndarray:
        from segserve.predictor import pack
        from segserve.telemetry import get_telemetry

        telemetry = get_telemetry()
        started = time.perf_counter()
        packed = pack(run())
        telemetry.compute.labels(model=name).observe(time.perf_counter() - started)
        telemetry.batch_size.labels(model=name).observe(len(images))
        return packed

    def _predict(self, name: str, images: np.ndarray) -> np.ndarray:
        return self._observe(name, images, lambda: self.models[name].predict(images))

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def deeplabv3plus(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> packed class ids and confidences uint8 (N, S, S, 2) from DeepLabV3+."""
        return self._predict("deeplabv3plus", images)

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def unet(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> packed class ids and confidences uint8 (N, S, S, 2) from U-Net."""
        return self._predict("unet", images)

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def ensemble(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> the mean of every model's probabilities, packed with each model's own class
        ids: uint8 (N, S, S, 2 + models)."""
        from segserve.predictor import predict_ensemble

        members = [self.models[name] for name in sorted(self.models)]
        return self._observe("ensemble", images, lambda: predict_ensemble(members, images))

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """Version, input size and metadata of each loaded model."""
        return self.infos


async def _list_models(request: Request) -> Response:
    """GET /models: the ListModelsResponse fields as JSON."""
    from segserve.http_api import respond

    segserve: SegServe = request.app.state.segserve

    async def work(deadline: float | None) -> dict[str, Any]:
        return segserve.segmenter.list_models()

    return await respond(segserve.edge, "ListModels", None, request.headers, work)


async def _ui(request: Request) -> Response:
    """GET /ui: the page for people (one HTML file, no external assets)."""
    from segserve.ui import page

    return HTMLResponse(page())


async def _docs(request: Request) -> Response:
    """GET /docs: BentoML serves the OpenAPI page at / (its spec at /docs.json)."""
    return RedirectResponse("/")


models_app = Starlette(
    routes=[
        Route("/models", _list_models, methods=["GET"]),
        Route("/ui", _ui, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
    ]
)
# TLS for HTTP from the settings (the gRPC server takes the same files in start_grpc).
_SSL = {"enabled": True, "certfile": settings.tls_cert_file, "keyfile": settings.tls_key_file} if settings.tls else {}


@bentoml.asgi_app(models_app, path="/")
@bentoml.service(name="segserve", workers=1, traffic={"timeout": 300}, **({"ssl": _SSL} if _SSL else {}))
class SegServe:
    """The entry service: HTTP API, gRPC server, and the shared Segmenter behind one Edge."""

    models = bentoml.depends(Models)

    def __init__(self) -> None:
        from segserve.auth import TokenAuth
        from segserve.edge import Edge
        from segserve.segmenter import Segmenter

        self.settings = settings
        self.segmenter = Segmenter(self._predict, {}, settings)
        self.edge = Edge(self.segmenter, TokenAuth.from_settings(settings))
        self.grpc = None
        self._ready_task: asyncio.Task | None = None
        models_app.state.segserve = self
        _edges.append(self.edge)

    async def _predict(self, name: str, images: np.ndarray) -> np.ndarray:
        method = getattr(self.models.to_async, name)
        return await call_model(lambda: method(images))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        from segserve.servicer import GrpcServer, server_credentials

        address = f"{settings.grpc_host}:{settings.grpc_port}"
        credentials = None
        if settings.tls:
            credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        self.grpc = GrpcServer(self.edge, address, settings.grpc_max_message_bytes, credentials)
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

    @bentoml.api(route="/segment")
    async def segment(
        self,
        image: Annotated[Path, Field(description="The photo: PNG, JPEG, BMP, TIFF or WebP")],
        ctx: bentoml.Context,
        model: Annotated[str, Field(description="deeplabv3plus, unet or ensemble; empty for the default")] = "",
        include_overlay: Annotated[bool, Field(description="Also return overlay_jpeg")] = False,
    ) -> dict:  # the answer dict's schema for OpenAPI; returned as a JSONResponse to carry error statuses
        """Segment a photo into corrosion, asset and background (the SegmentResponse fields, bytes in base64)."""
        from segserve.http_api import respond

        data = image.read_bytes()

        async def work(deadline: float | None) -> dict[str, Any]:
            return await self.segmenter.segment(data, model, include_overlay, deadline)

        return _in_context(ctx, await respond(self.edge, "Segment", model, ctx.request.headers, work))

    @bentoml.api(route="/evaluate")
    async def evaluate(
        self,
        image: Annotated[Path, Field(description="The photo")],
        ground_truth: Annotated[
            Path, Field(description="RGB mask in the dataset colours or a single-channel class-id PNG, same size")
        ],
        ctx: bentoml.Context,
        model: Annotated[str, Field(description="deeplabv3plus, unet or ensemble; empty for the default")] = "",
    ) -> dict:  # as in segment
        """Segment a photo and score it against its ground truth (the EvaluateResponse fields)."""
        from segserve.http_api import respond

        data, truth = image.read_bytes(), ground_truth.read_bytes()

        async def work(deadline: float | None) -> dict[str, Any]:
            return await self.segmenter.evaluate(data, truth, model, deadline)

        return _in_context(ctx, await respond(self.edge, "Evaluate", model, ctx.request.headers, work))


def _in_context(ctx: bentoml.Context, response: Response) -> Response:
    """A response whose status and headers BentoML keeps: with a Context in the signature it answers with the
    context's status, so the status and headers are copied there."""
    ctx.response.status_code = response.status_code
    for key, value in response.headers.items():
        if key.lower() not in ("content-length", "content-type"):
            ctx.response.headers[key] = value
    return response


# The Edge of this process, for the /metrics guard (the middleware is built before the service instance).
_edges: list[Any] = []


def _current_edge() -> Any:
    return _edges[-1] if _edges else None


def _install_middleware() -> None:
    from segserve.http_api import MetricsGuard
    from segserve.openapi import OpenApiDescriber

    SegServe.add_asgi_middleware(MetricsGuard, edge_of=_current_edge)
    SegServe.add_asgi_middleware(OpenApiDescriber)


_install_middleware()
