"""The HTTP transport: JSON answers and JSON errors over the shared Edge, testable without BentoML.

The BentoML service's routes (/segment, /evaluate, GET /models) call ``respond``; ``MetricsGuard`` keeps
/metrics behind a token when ``SEGSERVE_METRICS_PUBLIC`` is false. Probes (/livez, /readyz) stay open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from segserve.edge import Edge
from segserve.errors import SegServeError, status_of
from segserve.inference import to_json


def error_response(exc: SegServeError) -> JSONResponse:
    """An error as ``{"error", "code"}`` with its HTTP status, and Retry-After when a retry may succeed."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    body = {"error": str(exc), "code": type(exc).__name__}
    return JSONResponse(body, status_code=status_of(exc).http, headers=headers)


async def respond(
    edge: Edge,
    method: str,
    model: str | None,
    headers: Mapping[str, str],
    work: Callable[[float | None], Awaitable[dict[str, Any]]],
) -> JSONResponse:
    """Run one HTTP call through the edge: the answer dict as JSON (bytes in base64), or the error as JSON."""
    try:
        answer = await edge.call("http", method, model, headers.get("authorization"), work)
    except SegServeError as exc:
        return error_response(exc)
    return JSONResponse(to_json(answer))


class MetricsGuard:
    """ASGI middleware: /metrics needs a token unless the settings make it public."""

    def __init__(self, app: ASGIApp, edge_of: Callable[[], Edge | None]) -> None:
        self.app = app
        self.edge_of = edge_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge_of()
        if scope["type"] == "http" and scope.get("path") == "/metrics" and edge is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                edge.metrics_authorized(headers.get("authorization"))
            except SegServeError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
