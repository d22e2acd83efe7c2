"""What both transports do around every call, written once: authentication, admission by count, the
deadline, the metrics of the call, and turning any failure into a segserve error with its status.

The gRPC servicer and the HTTP API each call ``Edge.call`` and only translate its result or error into
their own messages and status codes (``segserve.errors.STATUSES``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from segserve.auth import TokenAuth
from segserve.errors import OK, DeadlineExceeded, Internal, SegServeError, Status, status_of
from segserve.segmenter import Segmenter

logger = logging.getLogger("segserve")
T = TypeVar("T")
CANCELLED = {"grpc": "CANCELLED", "http": "499"}  # the client went away (499: nginx's "client closed request")


class Edge:
    """The edge of every transport, over one Segmenter (so admission and its budgets are shared)."""

    def __init__(self, segmenter: Segmenter, auth: TokenAuth | None = None) -> None:
        self.segmenter = segmenter
        self.auth = auth or TokenAuth([])

    async def call(
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
            with self.segmenter.admit(transport):
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
            request_id = uuid.uuid4().hex[:16]
            logger.exception("request %s: %s %s failed inside the server", request_id, transport, method)
            status = status_of(Internal(""))
            raise Internal(f"internal error (request id {request_id}); the server logged it") from exc
        finally:
            code = (
                CANCELLED[transport] if status is None else (status.grpc if transport == "grpc" else str(status.http))
            )
            self.segmenter.record(transport, method, model, code, time.perf_counter() - started)

    def metrics_authorized(self, authorization: str | None) -> None:
        """Raise Unauthenticated unless /metrics is public or the call carries a token."""
        if not self.segmenter.settings.metrics_public:
            self.auth.check(authorization)
