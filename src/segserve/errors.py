"""Errors a caller can act on. Each transport maps them to its own status codes in one place."""

from __future__ import annotations


class SegServeError(Exception):
    """Base class: the message is shown to the caller as is."""


class InvalidInput(SegServeError):
    """The request cannot be served as sent (not an image, empty, wrong size...). gRPC INVALID_ARGUMENT, HTTP 400."""


class TooLarge(SegServeError):
    """The request is over a byte or pixel limit. gRPC RESOURCE_EXHAUSTED, HTTP 413."""


class Overloaded(SegServeError):
    """Too many requests in flight. gRPC RESOURCE_EXHAUSTED, HTTP 429."""


class UnknownModel(SegServeError):
    """The request names a model this server does not serve. gRPC NOT_FOUND, HTTP 404."""


class NotReady(SegServeError):
    """The models are still loading or the server is draining. gRPC UNAVAILABLE, HTTP 503."""


class ModelFailed(SegServeError):
    """The model service did not answer (crashed, restarting, timed out). gRPC UNAVAILABLE, HTTP 503."""


class ModelNotInStore(SegServeError):
    """A model the server needs is missing from the BentoML model store."""
