"""segserve.admission: calls per transport and decoded pixels in flight, waiting, refusing, the gauge."""

from __future__ import annotations

import asyncio
import time

import pytest

from segserve.admission import Admission
from segserve.errors import Overloaded, TooLarge


class Gauge:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


def test_calls_per_transport_are_limited_and_counted_on_the_gauge():
    gauges = {"grpc": Gauge(), "http": Gauge()}
    admission = Admission(max_requests=2, max_pixels=100, wait_seconds=1.0, gauge=gauges.__getitem__)

    async def run():
        async with admission.admit("grpc"), admission.admit("grpc"):
            assert gauges["grpc"].value == 2 and admission.requests == {"grpc": 2}
            with pytest.raises(Overloaded, match="2 grpc requests in flight") as refused:
                async with admission.admit("grpc"):
                    raise AssertionError("admitted over the limit")
            assert refused.value.retry_after == 1.0
            async with admission.admit("http"):  # each transport has its own count
                assert gauges["http"].value == 1
        assert gauges["grpc"].value == 0 and admission.requests == {"grpc": 0, "http": 0}

    asyncio.run(run())


def test_a_call_over_the_whole_budget_is_too_large_and_holds_nothing():
    admission = Admission(max_requests=4, max_pixels=100, wait_seconds=1.0)

    async def run():
        with pytest.raises(TooLarge, match="needs 101 decoded pixels; this server admits at most 100"):
            async with admission.admit("grpc", 101):
                pass
        assert admission.pixels == 0 and admission.requests.get("grpc", 0) == 0

    asyncio.run(run())


def test_pixels_wait_for_room_then_are_refused():
    admission = Admission(max_requests=4, max_pixels=100, wait_seconds=0.2)

    async def run():
        async with admission.admit("grpc", 60):
            started = time.monotonic()
            with pytest.raises(Overloaded, match="60 of 100 decoded pixels in flight"):
                async with admission.admit("http", 50):
                    pass
            assert time.monotonic() - started >= 0.19
            async with admission.admit("http", 40):  # what fits goes in at once
                assert admission.pixels == 100
        assert admission.pixels == 0

    asyncio.run(run())


def test_a_waiting_call_goes_in_when_pixels_come_back():
    admission = Admission(max_requests=4, max_pixels=100, wait_seconds=5.0)
    order = []

    async def big(name: str, hold: float):
        async with admission.admit("grpc", 70):
            order.append(name)
            await asyncio.sleep(hold)

    async def run():
        first = asyncio.create_task(big("first", 0.1))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await big("second", 0)
        assert 0.05 < time.monotonic() - started < 2.0
        await first

    asyncio.run(run())
    assert order == ["first", "second"]


def test_the_deadline_cuts_the_wait_short():
    admission = Admission(max_requests=4, max_pixels=100, wait_seconds=10.0)

    async def run():
        async with admission.admit("grpc", 100):
            started = time.monotonic()
            with pytest.raises(Overloaded):
                async with admission.admit("grpc", 1, deadline=time.monotonic() + 0.1):
                    pass
            assert time.monotonic() - started < 1.0

    asyncio.run(run())
