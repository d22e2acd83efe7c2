"""Adaptive batching without an idle wait: BentoML's batch dispatcher, made to dispatch at once when the model
is free.

BentoML 1.4's ``CorkDispatcher`` holds a request while ``n * (wn + dt + a) <= optimizer.wait * decay``, where
``optimizer.wait`` is the mean queueing wait of the last 50 batches and is refreshed only when a batch goes
out: after a period of load, a lone request on an idle model waits for company that never comes, and no
setting changes it. ``IdleFirstDispatcher`` keeps everything else of it (its queue, its batch splitting, its
outbound call, the semaphore that lets one batch run at a time, and the cancellation past ``max_latency_ms``)
and replaces the decision: when the model is free, whatever has queued goes out now, up to the largest
batch; while it is busy, requests queue and go out together in the next batch (Triton's default).

``install`` puts it in place of BentoML's in the process's service app factory. It depends on BentoML's
internals, so it is pinned to the version audited here: ``install`` leaves BentoML's own dispatcher, with a
warning, when the upstream code differs, and a test fails then (tests/test_dispatch.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time

from bentoml._internal.marshal import dispatcher as upstream

logger = logging.getLogger("segserve")

# The BentoML code this module was written against: the dispatcher module and the factory that makes one
# per batchable API (its source's SHA-256).
AUDITED_BENTOML = "1.4.40"
DISPATCHER_SOURCE = "bentoml._internal.marshal.dispatcher"
FACTORY_SOURCE = "_bentoml_impl.server.app.ServiceAppFactory.__init__"
AUDITED_SOURCES = {
    DISPATCHER_SOURCE: "1ae10835e7cb877cd9dafb7500e7d2e17befc1ed6d1ccf9cc0bd9bb7ad216a51",
    FACTORY_SOURCE: "f10563632a0b32cdae9d943802ce3a553be473f21979ea4b3b92f43c94ab5ba1",
}


class IdleFirstDispatcher(upstream.CorkDispatcher):
    """A CorkDispatcher that never waits for company while the model is idle."""

    async def controller(self) -> None:
        while True:
            try:
                async with self._wake_event:  # until a request is queued
                    await self._wake_event.wait_for(self._queue.__len__)
                if time.time() - self._queue[0].enqueue_time >= self.max_latency:
                    self._queue.popleft().future.cancel()  # past max_latency_ms: the caller gets the fallback
                    continue
                if self._sema.is_locked():  # the model is busy: what queues meanwhile goes in the next batch
                    await asyncio.sleep(self.TICKET_INTERVAL)
                    continue
                self._sema.acquire()
                jobs = tuple(self._get_inputs())
                self._loop.create_task(self.outbound_call(jobs))
            except Exception:  # never let one bad batch stop the dispatcher
                logger.exception("error dispatching a batch")


def source_digests() -> dict[str, str]:
    """SHA-256 of the upstream code ``IdleFirstDispatcher`` and ``install`` rely on, as installed."""
    from _bentoml_impl.server import app

    return {
        "bentoml._internal.marshal.dispatcher": _digest(inspect.getsource(upstream)),
        "_bentoml_impl.server.app.ServiceAppFactory.__init__": _digest(
            inspect.getsource(app.ServiceAppFactory.__init__)
        ),
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def matches_audited() -> bool:
    """Whether the installed BentoML is the version and code this module was audited against."""
    import bentoml

    return bentoml.__version__ == AUDITED_BENTOML and source_digests() == AUDITED_SOURCES


def install() -> bool:
    """Make the service app factory of this process build IdleFirstDispatchers; False (and a warning) when the
    installed BentoML is not the audited one."""
    from _bentoml_impl.server import app

    if not matches_audited():
        logger.warning(
            "BentoML is not %s as audited (segserve.dispatch): keeping its own dispatcher, which may hold a lone "
            "request after load",
            AUDITED_BENTOML,
        )
        return False
    app.CorkDispatcher = IdleFirstDispatcher
    return True
