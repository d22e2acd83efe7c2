"""The OpenAPI document of the HTTP API: BentoML's spec (its probes and /metrics), made to describe this service.

The routes are segserve's own (``segserve.http_api``), so ``describe`` writes them: their multipart forms, the
service's description and package version, and the error body and statuses the routes really answer with
(``segserve.errors.STATUSES``). ``OpenApiDescriber`` applies it to every ``/docs.json`` the server sends.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segserve.errors import STATUSES

SPEC_PATH = "/docs.json"
DESCRIPTION = """Segments photos of pipes into **corrosion**, **asset** and **background**, and says how much of each
asset is corroded (`corrosion_asset_ratio`, and the ASTM D610 `rust_grade`), how confident the model is, and
whether the answer needs a person's review.

The same service answers over gRPC (`segserve.v1.SegmentationService`, port 50051 by default); the JSON
answers here have the proto's field names, with PNG and JPEG bytes in base64. Errors are JSON
`{"error": "...", "code": "..."}`; 429 and 503 carry `Retry-After`. With tokens configured, every route
but the probes needs `Authorization: Bearer <token>`. A page for people is at [/ui](/ui), and the inspection
history (every answered `/segment` call, by `asset_id`) at [/ui/history](/ui/history) and `GET /inspections`."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "An error: a message a person can act on, and the error's class.",
    "properties": {
        "error": {"type": "string", "description": "What went wrong and what to do about it."},
        "code": {
            "type": "string",
            "enum": sorted(kind.__name__ for kind in STATUSES),
            "description": "The error's class (segserve.errors).",
        },
    },
    "required": ["error", "code"],
}


def package_version() -> str:
    try:
        return metadata.version("segserve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _error_responses(statuses: set[int]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for kind, status in STATUSES.items():
        if status.http in statuses:
            by_status.setdefault(status.http, []).append(kind.__name__)
    return {
        str(code): {
            "description": " or ".join(sorted(names)),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code, names in sorted(by_status.items())
    }


# What each route can answer besides 200 (the statuses of segserve.errors.STATUSES).
_ROUTE_ERRORS = {
    "/segment": {400, 401, 404, 413, 429, 500, 503, 504},
    "/evaluate": {400, 401, 404, 413, 429, 500, 503, 504},
    "/models": {401, 500, 503},
    "/inspections": {400, 401, 429, 500, 503},
    "/inspections/{inspection_id}": {400, 401, 404, 429, 500, 503},
}


_MODEL_FIELD = {"type": "string", "default": "", "description": "A served model or ensemble; empty for the default"}
# The POST routes' forms: (description, fields, what 200 answers).
_FORMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "/segment": (
        "Segment a photo into corrosion, asset and background (the SegmentResponse fields, bytes in base64).",
        {
            "image": {"type": "string", "format": "binary", "description": "The photo: PNG, JPEG, BMP, TIFF or WebP"},
            "model": _MODEL_FIELD,
            "include_overlay": {"type": "boolean", "default": False, "description": "Also return overlay_jpeg"},
            "asset_id": {
                "type": "string",
                "default": "",
                "maxLength": 200,
                "description": "The asset the photo shows, kept with the inspection (GET /inspections?asset_id=)",
            },
            "labels": {
                "type": "string",
                "default": "",
                "description": 'Labels kept with the inspection, as a JSON object of text: {"campaign": "2026-spring"}',
            },
        },
        "The SegmentResponse fields as JSON",
    ),
    "/evaluate": (
        "Segment a photo and score it against its ground truth (the EvaluateResponse fields).",
        {
            "image": {"type": "string", "format": "binary", "description": "The photo"},
            "ground_truth": {
                "type": "string",
                "format": "binary",
                "description": "RGB mask in the dataset colours or a single-channel class-id PNG, same size",
            },
            "model": _MODEL_FIELD,
        },
        "The EvaluateResponse fields as JSON",
    ),
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's spec (as JSON) made to describe segserve: info, every route, the real errors."""
    spec = json.loads(json.dumps(spec))  # a copy
    spec["info"] = {"title": "segserve", "version": package_version(), "description": DESCRIPTION}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for bentoml_error in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(bentoml_error, None)
    schemas["Error"] = ERROR_SCHEMA
    paths = spec.setdefault("paths", {})
    for route, (description, fields, answer) in _FORMS.items():
        paths[route] = {
            "post": {
                "tags": ["Service APIs"],
                "operationId": f"segserve_{route.strip('/')}",
                "description": description,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": fields,
                                "required": [k for k, v in fields.items() if v.get("format") == "binary"],
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": answer,
                        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                    },
                    **_error_responses(_ROUTE_ERRORS[route]),
                },
            }
        }
    paths["/models"] = {
        "get": {
            "tags": ["Service APIs"],
            "operationId": "segserve__models",
            "description": "The served models (the ensemble too): ListModelsResponse's fields as JSON, each with its "
            "review_calibration (what calibrating its review flag found).",
            "responses": {
                "200": {
                    "description": "The served models",
                    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                },
                **_error_responses(_ROUTE_ERRORS["/models"]),
            },
        }
    }
    paths["/inspections"] = {
        "get": {
            "tags": ["Service APIs"],
            "operationId": "segserve__inspections",
            "description": "Kept inspections, newest first, without images: ListInspectionsResponse's fields as JSON"
            " (times in RFC 3339, UTC). Pass next_page_token as page_token, with the same filters, for the next page.",
            "parameters": [
                _query("asset_id", {"type": "string"}, "Only inspections of this asset"),
                _query("start_time", {"type": "string", "format": "date-time"}, "Only at or after this time"),
                _query("end_time", {"type": "string", "format": "date-time"}, "Only before this time"),
                _query("needs_review", {"type": "boolean"}, "Only those whose needs_review is this (the review queue)"),
                _query("page_size", {"type": "integer", "minimum": 0, "maximum": 1000}, "1-1000; 0 or absent: 50"),
                _query("page_token", {"type": "string"}, "The previous page's next_page_token"),
            ],
            "responses": {
                "200": {
                    "description": "One page of inspections",
                    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                },
                **_error_responses(_ROUTE_ERRORS["/inspections"]),
            },
        }
    }
    paths["/inspections/{inspection_id}"] = {
        "get": {
            "tags": ["Service APIs"],
            "operationId": "segserve__inspection",
            "description": "One kept inspection with its class-id mask and overlay thumbnail (base64):"
            " GetInspectionResponse's fields as JSON.",
            "parameters": [
                {
                    "name": "inspection_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The inspection_id a /segment answer carried",
                }
            ],
            "responses": {
                "200": {
                    "description": "The inspection",
                    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                },
                **_error_responses(_ROUTE_ERRORS["/inspections/{inspection_id}"]),
            },
        }
    }
    paths["/ui/history"] = {
        "get": {
            "tags": ["Service APIs"],
            "operationId": "segserve__ui_history",
            "description": "The inspection history for people: by asset, the corroded share over time, the review"
            " queue, each inspection's overlay.",
            "responses": {"200": {"description": "The page", "content": {"text/html": {}}}},
        }
    }
    paths["/ui"] = {
        "get": {
            "tags": ["Service APIs"],
            "operationId": "segserve__ui",
            "description": "A page for people: upload a photo, pick a model, see the overlay and the numbers.",
            "responses": {"200": {"description": "The page", "content": {"text/html": {}}}},
        }
    }
    return spec


class OpenApiDescriber:
    """ASGI middleware: every /docs.json the server sends goes through ``describe``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != SPEC_PATH:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = b""

        async def capture(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    out = body
                    if start is not None and start["status"] == 200:
                        out = json.dumps(describe(json.loads(body))).encode()
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(out)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": out})

        await self.app(scope, receive, capture)
