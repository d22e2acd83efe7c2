"""Admission: what the server takes on at once, by count and by cost, for every transport of the process.

A call is admitted when both hold:

- **requests**: fewer than ``max_requests`` calls of its transport are in flight; past that it is refused at
  once (Overloaded, with a retry hint), so excess load never queues;
- **pixels**: its decoded pixels fit in a budget shared by every transport. A photo's size is known from its
  header before it is decoded, and what serving it costs in memory grows with its pixels (decoded RGB, the
  mask, its colour PNG, the overlay: about 10-20 bytes a pixel at the peak). When the budget is short, the
  call waits (at most ``wait_seconds``, never past its deadline) while others finish, then gets Overloaded;
  small calls that fit keep flowing meanwhile. A call over the whole budget gets TooLarge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from segserve.errors import Overloaded, TooLarge


class InFlightGauge(Protocol):
    """What admission counts calls in flight on (a Prometheus gauge)."""

    def inc(self) -> None: ...
    def dec(self) -> None: ...


class Admission:
    """At most ``max_requests`` calls per transport and ``max_pixels`` decoded pixels in flight.

    gauge: called with a transport, returns the gauge that counts its calls in flight (telemetry), or None.
    """

    def __init__(
        self,
        max_requests: int,
        max_pixels: int,
        wait_seconds: float,
        gauge: Callable[[str], InFlightGauge] | None = None,
    ) -> None:
        self.max_requests = max_requests
        self.max_pixels = max_pixels
        self.wait_seconds = wait_seconds
        self.requests: dict[str, int] = {}
        self.pixels = 0
        self._gauge = gauge
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the event loop that serves
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def admit(self, transport: str, pixels: int = 0, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold a place for one ``transport`` call and its ``pixels`` for the body of the ``async with``.

        deadline: a ``time.monotonic()`` after which waiting is pointless (the call's deadline).
        Raises Overloaded (too many calls, or the pixels do not fit in time) or TooLarge (never fits).
        """
        if self.requests.get(transport, 0) >= self.max_requests:
            raise Overloaded(
                f"server is busy: {self.max_requests} {transport} requests in flight; retry later", retry_after=1.0
            )
        if pixels > self.max_pixels:
            raise TooLarge(
                f"the request needs {pixels} decoded pixels; this server admits at most {self.max_pixels} at once"
            )
        self.requests[transport] = self.requests.get(transport, 0) + 1
        gauge = self._gauge(transport) if self._gauge is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            if pixels:
                await self._take(pixels, deadline)
            try:
                yield
            finally:
                if pixels:
                    await self._give_back(pixels)
        finally:
            self.requests[transport] -= 1
            if gauge is not None:
                gauge.dec()

    async def _take(self, pixels: int, deadline: float | None) -> None:
        changed = self._condition()
        limit = time.monotonic() + self.wait_seconds
        if deadline is not None:
            limit = min(limit, deadline)
        async with changed:
            while self.pixels + pixels > self.max_pixels:
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    raise Overloaded(
                        f"server is busy: {self.pixels} of {self.max_pixels} decoded pixels in flight; retry shortly",
                        retry_after=1.0,
                    )
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    continue
            self.pixels += pixels

    async def _give_back(self, pixels: int) -> None:
        changed = self._condition()
        async with changed:
            self.pixels -= pixels
            changed.notify_all()
