"""The gRPC transport: SegmentationService on a grpc.aio server, with health checking and reflection.

The servicer only translates messages and status codes; the work is done by segserve.segmenter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
from segserve.segmenter import Segmenter
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name

_CODES: dict[type[SegServeError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    ModelNotInStore: grpc.StatusCode.UNAVAILABLE,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    ModelFailed: grpc.StatusCode.UNAVAILABLE,
}


def status_code(exc: SegServeError) -> grpc.StatusCode:
    """The gRPC status code of a segserve error."""
    for kind, code in _CODES.items():
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    """segserve.v1.SegmentationService over a Segmenter."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    async def _serve(
        self, method: str, model: str | None, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Any]]
    ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            with self.segmenter.admit("grpc"):
                remaining = context.time_remaining()
                return await asyncio.wait_for(work(), timeout=remaining)
        except SegServeError as exc:
            code = status_code(exc)
            await context.abort(code, str(exc))
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, f"{method} did not finish within the call's deadline")
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.segmenter.record("grpc", method, model, code.name, time.perf_counter() - started)

    async def Segment(self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext) -> pb.SegmentResponse:
        async def work() -> pb.SegmentResponse:
            answer = await self.segmenter.segment(request.image, request.model, request.include_overlay)
            return pb.SegmentResponse(**answer)

        return await self._serve("Segment", request.model, context, work)

    async def Evaluate(self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext) -> pb.EvaluateResponse:
        async def work() -> pb.EvaluateResponse:
            answer = await self.segmenter.evaluate(request.image, request.ground_truth, request.model)
            return pb.EvaluateResponse(**answer)

        return await self._serve("Evaluate", request.model, context, work)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        async def work() -> pb.ListModelsResponse:
            return pb.ListModelsResponse(**self.segmenter.list_models())

        return await self._serve("ListModels", None, context, work)


class GrpcServer:
    """A grpc.aio server with SegmentationService, standard health checking and reflection.

    Health is NOT_SERVING until ``set_serving(True)`` (the service calls it once both models answer) and
    again while ``stop`` drains.
    """

    def __init__(self, segmenter: Segmenter | None, address: str, max_message_bytes: int) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.server = grpc.aio.server(options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.servicer: SegmentationServicer | None = None
        if segmenter is not None:
            self.attach(segmenter)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"gRPC server could not bind {address}")

    def attach(self, segmenter: Segmenter) -> None:
        """Register SegmentationService (before start)."""
        self.servicer = SegmentationServicer(segmenter)
        pb_grpc.add_SegmentationServiceServicer_to_server(self.servicer, self.server)

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(False)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let calls in flight finish for up to ``grace`` seconds, then stop."""
        await self.set_serving(False)
        await self.server.stop(grace)


async def create_server(
    segmenter: Segmenter, address: str = "127.0.0.1:0", max_message_bytes: int = 64 * 1024 * 1024
) -> tuple[GrpcServer, int]:
    """Start a gRPC server for ``segmenter`` on ``address`` (port 0 picks a free one); return it and its port."""
    server = GrpcServer(segmenter, address, max_message_bytes)
    await server.start()
    return server, server.port
