"""The HTTP transport: its routes, JSON answers and JSON errors over the shared Edge.

``build_app`` makes the Starlette app the BentoML entry service mounts (and the tests call): POST /segment and
/evaluate (multipart forms), GET /models, GET /inspections and /inspections/{id} (the inspection history), the
/ui and /ui/history pages and /docs. Each route only reads its request, calls the
edge and writes the answer or the error. ``MetricsGuard`` keeps /metrics behind a token when
``SEGSERVE_METRICS_PUBLIC`` is false; ``OpenApiDescriber`` (segserve.openapi) describes the routes at
/docs.json. ``ErrorAnswer`` answers an exception that escapes a route (BentoML's own probes included) at once,
as JSON. Probes (/livez, /readyz) are BentoML's and stay open.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from segserve.edge import Edge
from segserve.errors import Internal, InvalidInput, NotReady, SegServeError, new_request_id, status_of

logger = logging.getLogger("segserve")
TRANSPORT = "http"
# Form fields read as text: anything longer is not a model name, a flag, an asset id or labels (32 of at most
# 64 + 256 characters, as JSON).
MAX_FIELD_BYTES = 64 * 1024


def to_json(value: Any) -> Any:
    """An answer dict made JSON-safe: bytes as base64 strings, NaN and infinities as null."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def error_response(exc: SegServeError) -> JSONResponse:
    """An error as ``{"error", "code"}`` with its HTTP status, and Retry-After when a retry may succeed."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    body = {"error": str(exc), "code": type(exc).__name__}
    return JSONResponse(body, status_code=status_of(exc).http, headers=headers)


async def respond(call: Awaitable[dict[str, Any]]) -> JSONResponse:
    """The answer of an edge call as JSON (bytes in base64), or its error as JSON."""
    try:
        answer = await call
    except SegServeError as exc:
        return error_response(exc)
    return JSONResponse(to_json(answer))


async def _form(request: Request) -> dict[str, bytes | str]:
    """A multipart or urlencoded form: files as bytes, other fields as text. InvalidInput if it is none."""
    try:
        form = await request.form(max_part_size=MAX_FIELD_BYTES)
    except Exception as exc:  # Starlette raises its own errors for a malformed body
        raise InvalidInput(f"the request body is not a form: {exc}") from exc
    values: dict[str, bytes | str] = {}
    for key, value in form.multi_items():
        values[key] = await value.read() if isinstance(value, UploadFile) else str(value)
    await form.close()
    return values


def _file(form: dict[str, bytes | str], field: str) -> bytes:
    value = form.get(field)
    if not isinstance(value, bytes):
        raise InvalidInput(f"the form needs a file field {field!r}")
    return value


def _flag(form: dict[str, bytes | str], field: str) -> bool:
    value = str(form.get(field, "false")).strip().lower()
    if value not in ("true", "false", "1", "0", ""):
        raise InvalidInput(f"{field} must be true or false, not {value!r}")
    return value in ("true", "1")


def _labels(form: dict[str, bytes | str]) -> dict[str, str]:
    """The labels field: a JSON object of text values, e.g. {"campaign": "2026-spring"}; none: no labels."""
    raw = str(form.get("labels", "")).strip()
    if not raw:
        return {}
    try:
        labels = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"labels must be a JSON object of text values: {exc}") from exc
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidInput('labels must be a JSON object of text values, e.g. {"campaign": "2026-spring"}')
    return labels


def _time_param(request: Request, name: str) -> datetime | None:
    """An RFC 3339 time in the query string (a time without an offset is UTC); None when absent."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not {raw!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "").strip() or "0"
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a whole number, not {raw!r}") from exc


def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in ("", "any"):
        return None
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false, not {raw!r}")
    return raw in ("true", "1")


@lru_cache(maxsize=1)
def _history_page() -> str:
    return resources.files("segserve.ui").joinpath("history.html").read_text(encoding="utf-8")


def build_app(edge_of: Callable[[], Edge | None]) -> Starlette:
    """The HTTP routes over the edge ``edge_of()`` returns (None while the service starts: 503)."""

    def edge() -> Edge:
        current = edge_of()
        if current is None:
            raise NotReady("the service is starting; retry shortly", retry_after=2.0)
        return current

    def authorization(request: Request) -> str | None:
        return request.headers.get("authorization")

    async def segment(request: Request) -> Response:
        """POST /segment: image (file), model, include_overlay, asset_id, labels (JSON) -> the SegmentResponse
        fields."""
        try:
            form = await _form(request)
            call = edge().segment(
                TRANSPORT,
                authorization(request),
                _file(form, "image"),
                str(form.get("model", "")),
                _flag(form, "include_overlay"),
                asset_id=str(form.get("asset_id", "")),
                labels=_labels(form),
            )
        except SegServeError as exc:
            return error_response(exc)
        return await respond(call)

    async def evaluate(request: Request) -> Response:
        """POST /evaluate: image and ground_truth (files), model -> the EvaluateResponse fields."""
        try:
            form = await _form(request)
            call = edge().evaluate(
                TRANSPORT,
                authorization(request),
                _file(form, "image"),
                _file(form, "ground_truth"),
                str(form.get("model", "")),
            )
        except SegServeError as exc:
            return error_response(exc)
        return await respond(call)

    async def models(request: Request) -> Response:
        """GET /models: the ListModelsResponse fields, and each model's ``review_calibration``."""
        try:
            current = edge()
            answer = await current.list_models(TRANSPORT, authorization(request))
        except SegServeError as exc:
            return error_response(exc)
        for model in answer["models"]:
            model["review_calibration"] = current.catalog.review_calibration(model["name"])
        return JSONResponse(to_json(answer))

    async def inspections(request: Request) -> Response:
        """GET /inspections?asset_id&start_time&end_time&needs_review&page_size&page_token -> the
        ListInspectionsResponse fields."""
        try:
            call = edge().list_inspections(
                TRANSPORT,
                authorization(request),
                asset_id=request.query_params.get("asset_id", ""),
                start_time=_time_param(request, "start_time"),
                end_time=_time_param(request, "end_time"),
                needs_review=_bool_param(request, "needs_review"),
                page_size=_int_param(request, "page_size"),
                page_token=request.query_params.get("page_token", ""),
            )
        except SegServeError as exc:
            return error_response(exc)
        return await respond(call)

    async def inspection(request: Request) -> Response:
        """GET /inspections/{inspection_id} -> the GetInspectionResponse fields (images in base64)."""
        try:
            call = edge().get_inspection(TRANSPORT, authorization(request), request.path_params["inspection_id"])
        except SegServeError as exc:
            return error_response(exc)
        return await respond(call)

    async def history_ui(request: Request) -> Response:
        """GET /ui/history: the inspection history for people (one HTML file, no external assets)."""
        return HTMLResponse(_history_page())

    async def ui(request: Request) -> Response:
        """GET /ui: the page for people (one HTML file, no external assets)."""
        from segserve.ui import page

        return HTMLResponse(page())

    async def docs(request: Request) -> Response:
        """GET /docs: the OpenAPI page is at / (its spec at /docs.json)."""
        return RedirectResponse("/")

    return Starlette(
        routes=[
            Route("/segment", segment, methods=["POST"]),
            Route("/evaluate", evaluate, methods=["POST"]),
            Route("/models", models, methods=["GET"]),
            Route("/inspections", inspections, methods=["GET"]),
            Route("/inspections/{inspection_id}", inspection, methods=["GET"]),
            Route("/ui", ui, methods=["GET"]),
            Route("/ui/history", history_ui, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
        ]
    )


class ErrorAnswer:
    """ASGI middleware: an exception that escapes the app before it answered gets an answer now: on /readyz
    503 (not ready: the check itself failed), elsewhere 500 with a request id, the stack trace in the log.

    BentoML's request timeout (``traffic.timeout``) sits outside this middleware and waits for the app's first
    message, not for the app: without an answer here, such a request would hang until that timeout."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            request_id = new_request_id()
            path = scope.get("path", "")
            if path == "/readyz":
                logger.warning("request %s: /readyz failed (%r): not ready", request_id, exc)
                error: SegServeError = NotReady(f"not ready: the readiness check failed ({type(exc).__name__})")
            else:
                logger.exception("request %s: %s %s failed inside the server", request_id, scope.get("method"), path)
                error = Internal.logged_as(request_id)
            await error_response(error)(scope, receive, send)


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
