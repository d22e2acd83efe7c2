"""segserve.runtime without a server: the model-call retry, and a batch through the runtime."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from segserve.runtime import call_model


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


def test_an_answer_cut_short_is_sent_again():
    call, calls = flaky([aiohttp.ClientPayloadError("Response payload is not completed")])
    assert asyncio.run(call_model(call)) == "probabilities"
    assert len(calls) == 2


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
