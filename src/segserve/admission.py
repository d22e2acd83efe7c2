"""Admission by cost: a budget of decoded pixels in flight, shared by every transport of the process.

A photo's size is known from its header before it is decoded, and what serving it costs in memory grows
with its pixels (decoded RGB, the mask, its colour PNG, the overlay: about 10-20 bytes a pixel at the peak).
A request reserves its pixels before decoding and returns them when its answer is built. When the budget
is short, the request waits (at most ``wait_seconds``, and never past its deadline) while others finish,
then gets Overloaded with a retry hint; small requests that fit keep flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from segserve.errors import Overloaded, TooLarge


class PixelBudget:
    """At most ``capacity`` decoded pixels in flight."""

    def __init__(self, capacity: int, wait_seconds: float) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the event loop that serves
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def reserve(self, pixels: int, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget for the body of the ``async with``.

        deadline: a ``time.monotonic()`` after which waiting is pointless (the call's deadline).
        Raises TooLarge if ``pixels`` alone exceeds the budget, Overloaded if it does not fit in time.
        """
        if pixels > self.capacity:
            raise TooLarge(
                f"the request needs {pixels} decoded pixels; this server admits at most {self.capacity} at once"
            )
        changed = self._condition()
        limit = time.monotonic() + self.wait_seconds
        if deadline is not None:
            limit = min(limit, deadline)
        async with changed:
            while self.in_use + pixels > self.capacity:
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    raise Overloaded(
                        f"server is busy: {self.in_use} of {self.capacity} decoded pixels in flight; retry shortly",
                        retry_after=1.0,
                    )
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    continue
            self.in_use += pixels
        try:
            yield
        finally:
            async with changed:
                self.in_use -= pixels
                changed.notify_all()
