"""Stopping in order: a model worker outlives the entry workers' calls in flight.

On SIGTERM, BentoML's arbiter signals every worker at once. An entry worker then drains (its calls in flight
finish, up to the grace period), but a call still decoding its photo has not reached the model service yet, and a
model worker that stopped at once would refuse it. So a model worker defers its own stop until no entry worker
counts a call in flight (the ``segserve_requests_in_flight`` gauge, which every worker writes to the shared
Prometheus directory). The entries bound their calls (gRPC by SEGSERVE_GRPC_GRACE_SECONDS, HTTP by the request
timeout); the model worker waits at most ``LONGEST_WAIT_SECONDS``: BentoML's arbiter itself would wait for it
without limit, and a pod's stop must fit its ``terminationGracePeriodSeconds`` (45 s in deploy/kubernetes).
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from segserve.telemetry import IN_FLIGHT

logger = logging.getLogger("segserve")

POLL_SECONDS = 0.05
LONGEST_WAIT_SECONDS = 25.0


def entry_calls_in_flight(directory: str | None = None) -> float:
    """Calls in flight over the live workers, read from the Prometheus multiprocess ``directory``
    (default: ``PROMETHEUS_MULTIPROC_DIR``; 0 where there is none)."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return 0.0
    from prometheus_client.multiprocess import MultiProcessCollector

    files = [f for f in glob.glob(os.path.join(directory, "gauge_livesum_*.db")) if _alive(f)]
    metrics = MultiProcessCollector.merge(files, accumulate=False)
    return sum(s.value for m in metrics if m.name == IN_FLIGHT for s in m.samples)


def _alive(gauge_file: str) -> bool:
    """Whether the worker that wrote ``gauge_livesum_<pid>.db`` still runs (one killed mid-call leaves its count)."""
    try:
        os.kill(int(gauge_file.rsplit("_", 1)[1].removesuffix(".db")), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


def wait_until_drained(
    calls_in_flight: Callable[[], float],
    grace: float,
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until ``calls_in_flight()`` is 0 (True) or ``grace`` seconds have passed (False)."""
    deadline = clock() + grace
    while calls_in_flight() > 0:
        if clock() >= deadline:
            return False
        sleep(poll)
    return True


def defer_stop_until_drained(
    grace: float = LONGEST_WAIT_SECONDS,
    calls_in_flight: Callable[[], float] = entry_calls_in_flight,
    signum: int = signal.SIGTERM,
) -> bool:
    """Wrap this process's handler of ``signum`` (the server's stop) so that it runs once the entries' calls in
    flight are done, at most ``grace`` seconds after the signal; the process serves meanwhile. Call from the main
    thread once the server has installed its handler; returns False (nothing changed) where there is none."""
    stop = signal.getsignal(signum)
    if not callable(stop):
        return False

    def deferred(sig: int, frame: FrameType | None) -> None:
        def stop_when_drained() -> None:
            started = time.monotonic()
            drained = wait_until_drained(calls_in_flight, grace)
            logger.info(
                "%s: stopping after %.2f s (%s)",
                signal.Signals(sig).name,
                time.monotonic() - started,
                "the entries' calls in flight are done" if drained else f"grace period of {grace:g} s over",
            )
            stop(sig, None)

        threading.Thread(target=stop_when_drained, name="segserve-drain", daemon=True).start()

    signal.signal(signum, deferred)
    return True
