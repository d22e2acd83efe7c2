"""Overload and drain on the real served stack, over both transports at once: excess requests are refused at
once with a retry hint, accepted ones are answered, and SIGTERM lets the call in flight finish."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
import pytest

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import LiveServer, metric, start_server, stop_server, wait_until_serving

pytestmark = pytest.mark.slow
LIMIT = 2  # requests in flight per transport


def photo(side: int) -> bytes:
    image = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def small_server(tiny_store: Path, tmp_path_factory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("overload") / "serve.log"
    server = start_server(tiny_store, log, max_concurrent_requests=LIMIT, grpc_grace_seconds=20)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop_server(server)


def grpc_call(server: LiveServer, image: bytes) -> tuple[str, float, dict]:
    started = time.perf_counter()
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            pb_grpc.SegmentationServiceStub(channel).Segment(pb.SegmentRequest(image=image, include_overlay=True))
            return "OK", time.perf_counter() - started, {}
        except grpc.RpcError as exc:
            return exc.code().name, time.perf_counter() - started, dict(exc.trailing_metadata() or ())


def http_call(server: LiveServer, image: bytes) -> tuple[str, float, dict]:
    started = time.perf_counter()
    files = {"image": ("p.png", image, "image/png")}
    r = httpx.post(f"{server.http_url}/segment", files=files, data={"include_overlay": "true"}, timeout=120)
    return str(r.status_code), time.perf_counter() - started, dict(r.headers)


def test_excess_requests_are_refused_at_once_with_a_retry_hint(small_server):
    image = photo(1800)
    with cf.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(grpc_call, small_server, image) for _ in range(8)]
        futures += [pool.submit(http_call, small_server, image) for _ in range(8)]
        results = [f.result() for f in futures]
    grpc_results, http_results = results[:8], results[8:]
    grpc_codes = sorted(code for code, _, _ in grpc_results)
    http_codes = sorted(code for code, _, _ in http_results)
    assert set(grpc_codes) == {"OK", "RESOURCE_EXHAUSTED"} and grpc_codes.count("OK") >= LIMIT
    assert set(http_codes) == {"200", "429"} and http_codes.count("200") >= LIMIT
    slowest_accepted = max(s for code, s, _ in results if code in ("OK", "200"))
    for code, seconds, meta in results:
        if code == "RESOURCE_EXHAUSTED":
            assert meta["grpc-retry-pushback-ms"] == "1000"
        if code == "429":
            assert meta["retry-after"] == "1"
        if code in ("RESOURCE_EXHAUSTED", "429"):
            assert seconds < slowest_accepted  # refused without waiting for the work of others
    assert grpc_call(small_server, photo(64))[0] == "OK"
    assert http_call(small_server, photo(64))[0] == "200"


def wait_for_grpc_call_in_flight(server: LiveServer, timeout: float = 60.0) -> None:
    """Until the server counts a gRPC call in flight: the call has reached it (under load, a fixed sleep can
    signal before the call arrives, and a server that is draining rightly refuses it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
        if metric(text, "segserve_requests_in_flight", transport="grpc") >= 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"no gRPC call in flight after {timeout} s")


def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_ones(small_server):
    """Runs last in this module: it stops the server."""
    with cf.ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(grpc_call, small_server, photo(2400))
        wait_for_grpc_call_in_flight(small_server)
        os.killpg(small_server.process.pid, signal.SIGTERM)
        code, _, _ = in_flight.result(timeout=60)
    assert code == "OK"
    assert small_server.process.wait(timeout=60) == 0
    assert grpc_call(small_server, photo(64))[0] == "UNAVAILABLE"
