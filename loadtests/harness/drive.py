"""How the scenarios offer load: a fixed number of calls from N threads, closed-loop workers for a while, or an
open loop at a constant rate; and ``measure_level``, one measured row of Segment calls at one concurrency."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from loadtests.harness import stats
from loadtests.harness.client import SegmentClient

T = TypeVar("T")


def fixed_count(call: Callable[[int], T], requests: int, concurrency: int) -> tuple[list[T], float]:
    """Exactly ``requests`` calls, ``call(k)`` for k = 0, 1, ..., from ``concurrency`` threads; the results in k
    order and the seconds all of them took."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(call, range(requests)))
    return results, time.perf_counter() - started


def for_seconds(call: Callable[[int], T], concurrency: int, seconds: float) -> tuple[list[T], float]:
    """Closed loop: ``concurrency`` workers call back to back until ``seconds`` have passed, worker w making calls
    w, w + concurrency, w + 2 * concurrency, ...; every result (in no particular order) and the seconds taken."""
    results: list[T] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(w: int) -> None:
        k = w
        while time.monotonic() < stop_at:
            result = call(k)
            with lock:
                results.append(result)
            k += concurrency

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - started


def open_loop(call: Callable[[int, float], T], rate: float, seconds: float, t0: float, workers: int) -> list[T]:
    """Open loop: call k is due at ``t0 + k / rate`` (``time.monotonic()`` time) and ``call(k, due)`` is handed to a
    pool of ``workers`` threads then, however slowly earlier calls are answered; the results in k order."""
    total = int(seconds * rate)
    futures = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for k in range(total):
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(call, k, due))
    return [f.result() for f in futures]


@dataclass
class Level:
    """Segment calls at one concurrency over one transport: what they took and the batches the model saw."""

    transport: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float | None
    label: str = ""  # what sets the row apart from another at the same concurrency ("after load")

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The q-th percentile of the answered requests' latency (ms)."""
        return stats.percentile(self.latencies_ms, q)


def measure_level(
    client: SegmentClient,
    transport: str,
    image: bytes,
    requests: int,
    concurrency: int,
    model: str = "",
    metrics_model: str = "",
) -> Level:
    """Exactly ``requests`` Segment calls from ``concurrency`` threads. With ``metrics_model``, the mean batch
    size is the change of its segserve_batch_size_sum / _count on /metrics over the row."""
    before = client.batch_size_totals(metrics_model) if metrics_model else None
    outcomes, seconds = fixed_count(lambda _: client.segment(transport, image, model), requests, concurrency)
    mean_batch = None
    if before is not None:
        after = client.batch_size_totals(metrics_model)
        batches = after[1] - before[1]
        mean_batch = (after[0] - before[0]) / batches if batches > 0 else None
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"warning: {transport} Segment failed: {failed[0].code} {failed[0].detail}", file=sys.stderr)
    latencies = [1000 * o.seconds for o in outcomes if o.ok]
    return Level(transport, concurrency, requests, len(failed), seconds, latencies, mean_batch)
