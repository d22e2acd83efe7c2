"""The gRPC transport: SegmentationService on a grpc.aio server, with health checking and reflection.

The servicer only translates messages and status codes; ``segserve.edge`` does the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from segserve.edge import Edge
from segserve.errors import RETRY_PUSHBACK, SegServeError, status_of
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name
# The server gives up this much before the call's deadline, so that it answers DEADLINE_EXCEEDED (and counts
# it) itself rather than having the call torn down under it.
DEADLINE_MARGIN_SECONDS = 0.05


def status_code(exc: SegServeError) -> grpc.StatusCode:
    """The gRPC status code of a segserve error."""
    return grpc.StatusCode[status_of(exc).grpc]


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    """segserve.v1.SegmentationService over the shared Edge: messages and status codes, nothing else."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def _answer(
        self, context: grpc.aio.ServicerContext, call: Callable[[str | None, float | None], Awaitable[Any]]
    ) -> Any:
        """Run ``call(authorization, timeout)`` on the edge; a segserve error aborts with its status code."""
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        remaining = context.time_remaining()
        timeout = None if remaining is None else max(0.0, remaining - DEADLINE_MARGIN_SECONDS)
        try:
            return await call(authorization, timeout)
        except SegServeError as exc:
            if exc.retry_after is not None:
                context.set_trailing_metadata(((RETRY_PUSHBACK, str(round(exc.retry_after * 1000))),))
            await context.abort(status_code(exc), str(exc))

    async def Segment(self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext) -> pb.SegmentResponse:
        answer = await self._answer(
            context,
            lambda auth, timeout: self.edge.segment(
                "grpc",
                auth,
                request.image,
                request.model,
                request.include_overlay,
                timeout,
                asset_id=request.asset_id,
                labels=request.labels,
            ),
        )
        return pb.SegmentResponse(**answer)

    async def Evaluate(self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext) -> pb.EvaluateResponse:
        answer = await self._answer(
            context,
            lambda auth, timeout: self.edge.evaluate(
                "grpc", auth, request.image, request.ground_truth, request.model, timeout
            ),
        )
        return pb.EvaluateResponse(**answer)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        answer = await self._answer(context, lambda auth, timeout: self.edge.list_models("grpc", auth, timeout))
        return pb.ListModelsResponse(**answer)

    async def ListInspections(
        self, request: pb.ListInspectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInspectionsResponse:
        answer = await self._answer(
            context,
            lambda auth, timeout: self.edge.list_inspections(
                "grpc",
                auth,
                timeout,
                asset_id=request.asset_id,
                start_time=_time(request, "start_time"),
                end_time=_time(request, "end_time"),
                needs_review=request.needs_review if request.HasField("needs_review") else None,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return pb.ListInspectionsResponse(**answer)

    async def GetInspection(
        self, request: pb.GetInspectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInspectionResponse:
        answer = await self._answer(
            context, lambda auth, timeout: self.edge.get_inspection("grpc", auth, request.inspection_id, timeout)
        )
        return pb.GetInspectionResponse(**answer)


def _time(request: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime; None when unset."""
    return getattr(request, field).ToDatetime(tzinfo=UTC) if request.HasField(field) else None


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials:
    """TLS credentials from PEM files; with ``client_ca_file``, clients must present a certificate it signed."""
    chain = Path(cert_file).read_bytes()
    key = Path(key_file).read_bytes()
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=Path(client_ca_file).read_bytes(), require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key, chain)])


class GrpcServer:
    """A grpc.aio server with SegmentationService, standard health checking and reflection.

    Health is NOT_SERVING until ``set_serving(True)`` (the service calls it once every served model answers) and
    again while ``stop`` drains.
    """

    def __init__(
        self,
        edge: Edge,
        address: str,
        max_message_bytes: int,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),  # every entry worker (SEGSERVE_ENTRY_WORKERS) serves the one port
        ]
        self.server = grpc.aio.server(options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.servicer = SegmentationServicer(edge)
        pb_grpc.add_SegmentationServiceServicer_to_server(self.servicer, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpcio raises when the address cannot be bound
            raise OSError(f"gRPC server could not bind {address}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"gRPC server could not bind {address} (is the port in use?)")

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
    edge: Edge,
    address: str = "127.0.0.1:0",
    max_message_bytes: int = 64 * 1024 * 1024,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[GrpcServer, int]:
    """Start a gRPC server for ``edge`` on ``address`` (port 0 picks a free one); return it and its port."""
    server = GrpcServer(edge, address, max_message_bytes, credentials)
    await server.start()
    return server, server.port
