"""Errors a caller can act on, and the one table of what each transport answers for them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# The trailing metadata in which the gRPC server says when a retry may succeed (gRPC's retry pushback), in ms.
RETRY_PUSHBACK = "grpc-retry-pushback-ms"


class SegServeError(Exception):
    """Base class: the message is shown to the caller as is.

    retry_after: seconds after which a retry may succeed (HTTP ``Retry-After``, gRPC ``retry-after-ms``
    trailing metadata); None when retrying the same request cannot help.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidInput(SegServeError):
    """The request cannot be served as sent (not an image, empty, wrong size...)."""


class TooLarge(SegServeError):
    """The request is over a byte or pixel limit."""


class Overloaded(SegServeError):
    """Too many requests, or too many pixels, in flight; retry later."""


class UnknownModel(SegServeError):
    """The request names a model this server does not serve."""


class UnknownInspection(SegServeError):
    """The request names an inspection the history does not hold (never kept, or past its retention)."""


class Unauthenticated(SegServeError):
    """The request carries no token, or not one this server accepts."""


class NotReady(SegServeError):
    """The models are still loading or the server is draining."""


class ModelFailed(SegServeError):
    """The model service did not answer (crashed, restarting, timed out)."""


class ModelNotInStore(SegServeError):
    """A model the server needs is missing from the BentoML model store."""


class DeadlineExceeded(SegServeError):
    """The call's deadline passed before the answer was ready."""


class Internal(SegServeError):
    """A failure inside the server (a bug): the caller gets a request id, the log gets the stack trace."""

    @classmethod
    def logged_as(cls, request_id: str) -> Internal:
        """The caller's answer for a failure the server logged under ``request_id``."""
        return cls(f"internal error (request id {request_id}); the server logged it")


def new_request_id() -> str:
    """A short random id that ties a caller's error to the server's log line."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Status:
    """What the transports answer for an error: a gRPC status code name and an HTTP status."""

    grpc: str
    http: int


# The one table mapping errors to statuses, for both transports.
STATUSES: dict[type[SegServeError], Status] = {
    InvalidInput: Status("INVALID_ARGUMENT", 400),
    Unauthenticated: Status("UNAUTHENTICATED", 401),
    UnknownModel: Status("NOT_FOUND", 404),
    UnknownInspection: Status("NOT_FOUND", 404),
    TooLarge: Status("RESOURCE_EXHAUSTED", 413),
    Overloaded: Status("RESOURCE_EXHAUSTED", 429),
    Internal: Status("INTERNAL", 500),
    NotReady: Status("UNAVAILABLE", 503),
    ModelFailed: Status("UNAVAILABLE", 503),
    ModelNotInStore: Status("UNAVAILABLE", 503),
    DeadlineExceeded: Status("DEADLINE_EXCEEDED", 504),
}
OK = Status("OK", 200)


def status_of(exc: SegServeError) -> Status:
    """The statuses of a segserve error (INTERNAL / 500 for one missing from the table)."""
    for kind in type(exc).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return STATUSES[Internal]
