"""What both transports do around every call, written once: authentication, admission (by count and by
pixels), the deadline, telemetry, and turning any failure into a segserve error with its status.

The gRPC servicer and the HTTP API call ``Edge.segment``, ``Edge.evaluate``, ``Edge.list_models``,
``Edge.list_inspections`` and ``Edge.get_inspection`` and only translate their answers or errors into their own
messages and status codes (``segserve.errors.STATUSES``). Inside, the request path is ``segserve.pipeline``; the
served models are ``segserve.catalog``; each answered Segment call is queued for the inspection history
(``segserve.history``), whose writer works off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from segserve import imaging
from segserve.admission import Admission
from segserve.auth import TokenAuth
from segserve.catalog import Catalog
from segserve.errors import (
    OK,
    DeadlineExceeded,
    Internal,
    NotReady,
    SegServeError,
    Status,
    new_request_id,
    status_of,
)
from segserve.history import History, Query, check_tags
from segserve.pipeline import REVIEW_REASON_PREFIX, Pipeline, PredictFn, ServedModel
from segserve.settings import Settings
from segserve.telemetry import Telemetry, get_telemetry

logger = logging.getLogger("segserve")
T = TypeVar("T")
CANCELLED = {"grpc": "CANCELLED", "http": "499"}  # the client went away (499: nginx's "client closed request")
# Evaluate decodes a ground truth of the photo's size besides the photo: twice its pixels.
EVALUATE_PIXELS = 2


class Edge:
    """The edge of every transport, over one catalog, pipeline and admission (so budgets are shared)."""

    def __init__(
        self,
        settings: Settings,
        predict: PredictFn,
        auth: TokenAuth | None = None,
        catalog: Catalog | None = None,
        telemetry: Telemetry | None = None,
        history: History | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self.telemetry = telemetry or get_telemetry()
        self.catalog = catalog or Catalog(settings)
        self.pipeline = Pipeline(predict)
        self.auth = auth or TokenAuth([])
        self.admission = Admission(
            settings.max_concurrent_requests,
            settings.max_pixels_in_flight,
            settings.admission_wait_seconds,
            gauge=lambda transport: self.telemetry.in_flight.labels(transport=transport),
        )
        for name in settings.model_names:
            self.telemetry.model_configured.labels(model=name).set(1)

    def serve(self, models: dict[str, dict[str, Any]]) -> None:
        """Serve these models (the model service's ``describe``), and say so in ``segserve_model_info``."""
        self.catalog.serve(models)
        for name, info in models.items():
            labels = {"backend": info.get("backend", ""), "precision": info.get("precision", "")}
            self.telemetry.model_info.labels(model=name, version=info["version"], **labels).set(1)

    # ------------------------------------------------------------------------------------------ the calls

    async def segment(
        self,
        transport: str,
        authorization: str | None,
        image: bytes,
        model: str = "",
        include_overlay: bool = False,
        timeout: float | None = None,
        *,
        asset_id: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A SegmentRequest; raises SegServeError (or CancelledError). The answer is queued for the history."""

        async def work(deadline: float | None) -> dict[str, Any]:
            tags = check_tags(asset_id, labels)
            header = self._header(image)
            async with self.admission.admit(transport, header.pixels, deadline):
                served = self._served(model)
                answer = await self.pipeline.segment(image, header, served, include_overlay, deadline)
            self._observe(answer)
            answer["inspection_id"] = (
                self.history.keep(transport, image, answer, asset_id, tags) if self.history else ""
            )
            return answer

        return await self._call(transport, "Segment", model, authorization, work, timeout)

    async def evaluate(
        self,
        transport: str,
        authorization: str | None,
        image: bytes,
        ground_truth: bytes,
        model: str = "",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """An EvaluateRequest; raises SegServeError (or CancelledError)."""

        async def work(deadline: float | None) -> dict[str, Any]:
            header = self._header(image)
            async with self.admission.admit(transport, EVALUATE_PIXELS * header.pixels, deadline):
                served = self._served(model)
                answer = await self.pipeline.evaluate(
                    image, header, ground_truth, served, deadline, self.settings.max_image_bytes
                )
            self._observe(answer["prediction"])
            return answer

        return await self._call(transport, "Evaluate", model, authorization, work, timeout)

    async def list_models(
        self, transport: str, authorization: str | None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A ListModelsRequest."""

        async def work(deadline: float | None) -> dict[str, Any]:
            async with self.admission.admit(transport):
                return self.catalog.list_models()

        return await self._call(transport, "ListModels", None, authorization, work, timeout)

    async def list_inspections(
        self,
        transport: str,
        authorization: str | None,
        timeout: float | None = None,
        *,
        asset_id: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        needs_review: bool | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> dict[str, Any]:
        """A ListInspectionsRequest: kept inspections, newest first, filtered and paged."""

        async def work(deadline: float | None) -> dict[str, Any]:
            query = Query.parse(asset_id, start_time, end_time, needs_review, page_size, page_token)
            history = self._history()
            async with self.admission.admit(transport):
                return await asyncio.to_thread(history.list, query)

        return await self._call(transport, "ListInspections", None, authorization, work, timeout)

    async def get_inspection(
        self, transport: str, authorization: str | None, inspection_id: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """A GetInspectionRequest: one kept inspection with its mask and overlay thumbnail."""

        async def work(deadline: float | None) -> dict[str, Any]:
            history = self._history()
            async with self.admission.admit(transport):
                return await asyncio.to_thread(history.get, inspection_id)

        return await self._call(transport, "GetInspection", None, authorization, work, timeout)

    def metrics_authorized(self, authorization: str | None) -> None:
        """Raise Unauthenticated unless /metrics is public or the call carries a token."""
        if not self.settings.metrics_public:
            self.auth.check(authorization)

    # --------------------------------------------------------------------------------------------- inside

    def _header(self, image: bytes) -> imaging.ImageHeader:
        """The photo's header, read once for the call: its pixels for admission, its size for decoding."""
        return imaging.read_header(image, self.settings.max_image_bytes, self.settings.max_image_pixels)

    def _history(self) -> History:
        if self.history is None:
            raise NotReady("this server keeps no inspection history (SEGSERVE_HISTORY=off)")
        return self.history

    def _served(self, model: str) -> ServedModel:
        name = self.catalog.resolve(model)
        return ServedModel(
            name, self.catalog.version(name), self.catalog.input_size(name), self.catalog.thresholds[name]
        )

    def _observe(self, answer: dict[str, Any]) -> None:
        """What the answer says, for the drift and review metrics."""
        model = answer["model"]
        self.telemetry.corrosion_ratio.labels(model=model).observe(answer["corrosion_asset_ratio"])
        self.telemetry.confidence.labels(model=model).observe(answer["mean_confidence"])
        for reason in answer["review_reasons"]:
            self.telemetry.review_flags.labels(model=model, reason=reason.removeprefix(REVIEW_REASON_PREFIX)).inc()

    async def _call(
        self,
        transport: str,
        method: str,
        model: str | None,
        authorization: str | None,
        work: Callable[[float | None], Awaitable[T]],
        timeout: float | None = None,
    ) -> T:
        """Run ``work(deadline)`` for one call and count it; raise only SegServeError (or CancelledError).

        timeout: seconds the caller waits (gRPC's deadline); ``deadline`` is then that ``time.monotonic()``.
        An unexpected exception is logged with a request id and raised as Internal, whose message carries the
        id and nothing of the exception.
        """
        started = time.perf_counter()
        status: Status | None = OK
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            self.auth.check(authorization)
            if timeout is None:
                return await work(None)
            return await asyncio.wait_for(work(deadline), max(0.0, timeout))
        except SegServeError as exc:
            status = status_of(exc)
            raise
        except TimeoutError as exc:
            status = status_of(DeadlineExceeded(""))
            raise DeadlineExceeded(f"{method} did not finish within the call's deadline") from exc
        except asyncio.CancelledError:
            status = None
            raise
        except Exception as exc:
            request_id = new_request_id()
            logger.exception("request %s: %s %s failed inside the server", request_id, transport, method)
            status = status_of(Internal(""))
            raise Internal.logged_as(request_id) from exc
        finally:
            code = (
                CANCELLED[transport] if status is None else (status.grpc if transport == "grpc" else str(status.http))
            )
            label = self.catalog.metric_label(model)
            seconds = time.perf_counter() - started
            self.telemetry.requests.labels(transport=transport, method=method, model=label, code=code).inc()
            self.telemetry.latency.labels(transport=transport, method=method, model=label).observe(seconds)
