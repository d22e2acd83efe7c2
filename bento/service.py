"""segserve's BentoML services: one batching path for HTTP and gRPC.

``Models`` runs the served models behind one batchable API per name (each architecture of the table, and the
ensemble), so BentoML's adaptive batching merges concurrent requests. ``SegServe`` is the entry: the HTTP
routes of ``segserve.http_api`` and a gRPC server (``segserve.entry``), both over one Edge whose predictions go
through ``Models``' batchable APIs. Everything else lives in ``segserve``.

    bentoml serve bento.service:SegServe          # HTTP on 3000, gRPC on SEGSERVE_GRPC_PORT (50051)
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np

from segserve import dispatch
from segserve.architectures import ENSEMBLE, NAMES, method_name
from segserve.http_api import ErrorAnswer, MetricsGuard, build_app
from segserve.openapi import OpenApiDescriber
from segserve.settings import get_settings

settings = get_settings()
# Batchable APIs dispatch at once when their model is idle (segserve.dispatch): before BentoML builds the app.
dispatch.install()


class Models:
    """The served models (``segserve.runtime.ModelRuntime``) behind batchable APIs."""

    def __init__(self) -> None:
        from segserve.runtime import ModelRuntime

        self.runtime = ModelRuntime(settings)

    @bentoml.on_startup
    async def stop_after_the_entries(self) -> None:
        """On SIGTERM, keep serving until the entries' calls in flight are done (``segserve.drain``)."""
        from segserve.drain import defer_stop_until_drained

        defer_stop_until_drained()

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """Version, input size, metadata and backend of each loaded model."""
        return self.runtime.infos


def _batch_api(name: str):
    def predict(self: Models, images: np.ndarray) -> np.ndarray:
        return self.runtime.predict(name, images)

    predict.__name__ = predict.__qualname__ = method_name(name)
    predict.__doc__ = f"RGB uint8 (N, S, S, 3) -> packed class ids and confidences uint8 (N, S, S, 2+) of {name}."
    return bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)(
        predict
    )


for _name in (*NAMES, ENSEMBLE):
    setattr(Models, method_name(_name), _batch_api(_name))
# The entries' client of Models never replaces its connection pool: BentoML 1.4 replaces it every 100 requests
# (runner_connection's default) and closes the old one under calls still using it, which then fail, or hang
# until traffic.timeout (bentoml issues 5540, 5544). Over a local socket nothing goes stale.
NEVER = {"max_requests": 2**31 - 1, "max_age": 1e9}
Models = bentoml.service(
    name="segserve-models", workers=settings.model_workers, traffic={"timeout": 300}, runner_connection=NEVER
)(Models)


def _current_edge():
    from segserve.entry import current_edge

    return current_edge()


@bentoml.asgi_app(build_app(_current_edge), path="/")
@bentoml.service(
    name="segserve",
    workers=settings.entry_workers,
    traffic={"timeout": 300},
    **({"ssl": settings.http_ssl} if settings.tls else {}),
)
class SegServe:
    """The entry service: the HTTP routes and the gRPC server over one Edge (``segserve.entry.Entry``)."""

    models = bentoml.depends(Models)

    def __init__(self) -> None:
        from segserve.entry import Entry

        self.entry = Entry(settings, self.models)

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        await self.entry.start()

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        await self.entry.stop()

    async def __is_ready__(self) -> bool:
        """/readyz: 503 until the model service has described its models (when gRPC health says SERVING)."""
        return self.entry.edge.catalog.ready


SegServe.add_asgi_middleware(ErrorAnswer)  # the outermost of ours: an escaped exception is answered at once
SegServe.add_asgi_middleware(MetricsGuard, edge_of=_current_edge)
SegServe.add_asgi_middleware(OpenApiDescriber)
