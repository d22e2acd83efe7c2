"""The one table of statuses both transports answer with."""

from __future__ import annotations

import grpc
import pytest

from segserve import errors
from segserve.servicer import status_code


@pytest.mark.parametrize(
    ("error", "grpc_code", "http"),
    [
        (errors.InvalidInput, "INVALID_ARGUMENT", 400),
        (errors.Unauthenticated, "UNAUTHENTICATED", 401),
        (errors.UnknownModel, "NOT_FOUND", 404),
        (errors.UnknownInspection, "NOT_FOUND", 404),
        (errors.TooLarge, "RESOURCE_EXHAUSTED", 413),
        (errors.Overloaded, "RESOURCE_EXHAUSTED", 429),
        (errors.Internal, "INTERNAL", 500),
        (errors.NotReady, "UNAVAILABLE", 503),
        (errors.ModelFailed, "UNAVAILABLE", 503),
        (errors.ModelNotInStore, "UNAVAILABLE", 503),
        (errors.DeadlineExceeded, "DEADLINE_EXCEEDED", 504),
    ],
)
def test_each_error_has_one_status_per_transport(error, grpc_code, http):
    assert errors.status_of(error("x")) == errors.Status(grpc_code, http)
    assert status_code(error("x")) == grpc.StatusCode[grpc_code]


def test_every_error_class_is_in_the_table():
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SegServeError)}
    assert classes - {errors.SegServeError} == set(errors.STATUSES)


def test_an_error_outside_the_table_is_internal():
    class Surprise(errors.SegServeError):
        pass

    assert errors.status_of(Surprise("x")) == errors.Status("INTERNAL", 500)
