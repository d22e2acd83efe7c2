"""A burst of the largest photos the limits allow, over both transports at once, against a running server:
how much memory the serving processes take, what is answered and what is refused, and whether the next small
request is served at normal latency.

    python -m loadtests.burst --pid PID [--http URL] [--grpc TARGET] [--requests 16] [--side 6000]

PID is the `bentoml serve` process (make serve's); its children are the service workers. The photo is a
synthetic SIDE x SIDE JPEG (6000x6000 is 36 megapixels, under the default 40-megapixel limit), sent with
include_overlay, half of the requests over gRPC and half over HTTP, all at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import httpx
import numpy as np
import psutil

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def big_jpeg(side: int) -> bytes:
    """A photo-like SIDE x SIDE JPEG: smooth gradients and a band, which compresses to about 1 MB at 6000."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    image = np.dstack([180 * x + 40, 120 + 60 * np.sin(9 * y), 200 * (1 - y) + 30]).astype(np.uint8)
    image[side // 3 : side // 2] = (110, 115, 125)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler(threading.Thread):
    """Samples the process tree's RSS every ``interval`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(self.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.burst", description=__doc__.split("\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the `bentoml serve` process")
    parser.add_argument("--http", default=f"http://127.0.0.1:{os.environ.get('SEGSERVE_HTTP_PORT', '3000')}")
    parser.add_argument("--grpc", default=f"127.0.0.1:{os.environ.get('SEGSERVE_GRPC_PORT', '50051')}")
    parser.add_argument("--requests", type=int, default=16, help="photos in the burst, half per transport")
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    photo = big_jpeg(args.side)
    small = big_jpeg(256)
    channel = grpc.insecure_channel(args.grpc, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    stub = pb_grpc.SegmentationServiceStub(channel)
    http = httpx.Client(base_url=args.http, timeout=args.timeout)

    def via_grpc(image: bytes) -> str:
        try:
            stub.Segment(pb.SegmentRequest(image=image, include_overlay=True), timeout=args.timeout)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    def via_http(image: bytes) -> str:
        files = {"image": ("p.jpg", image, "image/jpeg")}
        return str(http.post("/segment", files=files, data={"include_overlay": "true"}).status_code)

    def small_latency() -> float:
        started = time.perf_counter()
        assert via_grpc(small) == "OK"
        return time.perf_counter() - started

    small_latency()
    before_ms = 1000 * np.median([small_latency() for _ in range(5)])
    baseline = tree_rss(args.pid)
    sampler = Sampler(args.pid)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.requests) as pool:
        futures = [pool.submit(via_grpc if i % 2 == 0 else via_http, photo) for i in range(args.requests)]
        outcomes = [f.result() for f in futures]
    seconds = time.perf_counter() - started
    after_ms = 1000 * np.median([small_latency() for _ in range(5)])
    sampler.stopped.set()
    sampler.join()
    counts = {code: outcomes.count(code) for code in sorted(set(outcomes))}
    print(f"burst: {args.requests} x {args.side}x{args.side} JPEG ({len(photo)} bytes), half gRPC, half HTTP")
    print(f"answers: {counts} in {seconds:.1f} s")
    print(
        f"serving processes' RSS: {baseline / 1e9:.2f} GB before, {sampler.peak / 1e9:.2f} GB at the peak "
        f"(+{(sampler.peak - baseline) / 1e9:.2f} GB)"
    )
    print(f"a small request: {before_ms:.0f} ms before the burst, {after_ms:.0f} ms after")
    http.close()
    channel.close()
    unexpected = [o for o in outcomes if o not in ("OK", "200", "RESOURCE_EXHAUSTED", "429")]
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
