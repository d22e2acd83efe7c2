"""Pieces of bento/service.py that need no server: status mapping and the model-call retry."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bento.service import call_model, http_status
from segserve.errors import InvalidInput, ModelFailed, NotReady, Overloaded, TooLarge, UnknownModel


@pytest.mark.parametrize(
    ("error", "status"),
    [(InvalidInput, 400), (UnknownModel, 404), (TooLarge, 413), (Overloaded, 429), (NotReady, 503), (ModelFailed, 503)],
)
def test_http_status(error, status):
    assert http_status(error("x")) == status


def flaky(failures: list[BaseException]):
    calls = []

    async def call():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "probabilities"

    return call, calls


def test_a_dropped_connection_is_sent_again():
    call, calls = flaky([aiohttp.ServerDisconnectedError(), RuntimeError("Connector is closed.")])
    assert asyncio.run(call_model(call)) == "probabilities"
    assert len(calls) == 3


def test_retries_stop_after_the_last_attempt():
    call, calls = flaky([aiohttp.ServerDisconnectedError()] * 3)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(call_model(call))
    assert len(calls) == 3


def test_other_errors_are_not_retried():
    call, calls = flaky([ValueError("bad batch")])
    with pytest.raises(ValueError):
        asyncio.run(call_model(call))
    assert len(calls) == 1
