"""The entry service's wiring: one Edge over the model service's client, the gRPC server beside BentoML's HTTP
server, readiness (gRPC health SERVING once the model service answers), and the inspection history's writer.

``bento/service.py`` creates one ``Entry`` per entry worker and calls ``start`` and ``stop`` from its
lifecycle hooks; the HTTP app finds the worker's edge through ``current_edge``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from segserve.auth import TokenAuth
from segserve.edge import Edge
from segserve.history import History
from segserve.runtime import ModelClient
from segserve.servicer import GrpcServer, server_credentials
from segserve.settings import Settings
from segserve.telemetry import get_telemetry

logger = logging.getLogger("segserve")
_current: list[Edge] = []


def current_edge() -> Edge | None:
    """The edge of this process's entry service (None before it is created)."""
    return _current[-1] if _current else None


class Entry:
    """The edge, the gRPC server, readiness and the inspection history of one entry worker."""

    def __init__(self, settings: Settings, models: Any) -> None:  # models: the bentoml.depends(Models) handle
        self.settings = settings
        self.client = ModelClient(models)
        telemetry = get_telemetry()
        self.history = History.from_settings(settings, telemetry)
        self.edge = Edge(
            settings, self.client.predict, TokenAuth.from_settings(settings), telemetry=telemetry, history=self.history
        )
        self.grpc: GrpcServer | None = None
        self._ready: asyncio.Task | None = None
        _current.append(self.edge)

    async def start(self) -> None:
        """Start the history's writer and the gRPC server (NOT_SERVING); serve once the model service describes its
        models."""
        settings = self.settings
        if self.history is not None:
            self.history.start()
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        credentials = None
        if settings.tls:
            credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        self.grpc = GrpcServer(self.edge, address, settings.grpc_max_message_bytes, credentials)
        await self.grpc.start()
        logger.info("gRPC listening on %s (NOT_SERVING until the models answer)", address)
        self._ready = asyncio.create_task(self._serve_when_ready())

    async def _serve_when_ready(self) -> None:
        while True:
            try:
                infos = await self.client.describe()
                break
            except Exception as exc:  # the model service is still starting
                logger.debug("models not ready yet: %s", exc)
                await asyncio.sleep(1.0)
        self.edge.serve(infos)
        await self.grpc.set_serving(True)
        logger.info("gRPC SERVING with models %s", ", ".join(sorted(infos)))

    async def stop(self) -> None:
        """Drain: NOT_SERVING, calls in flight finish for up to the grace period, then the server stops; then the
        history writes what is queued (up to segserve.history.FLUSH_SECONDS) and closes its database."""
        if self._ready is not None:
            self._ready.cancel()
        if self.grpc is not None:
            await self.grpc.stop(self.settings.grpc_grace_seconds)
        if self.history is not None:
            await asyncio.to_thread(self.history.stop)
