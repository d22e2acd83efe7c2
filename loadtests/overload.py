"""The overload curve of a running server: for each offered concurrency, closed-loop gRPC clients send Segment
back to back for a while; accepted throughput and p50/p95 latency, the share refused, and how fast refusals come.

    python -m loadtests.overload [--grpc TARGET] [--concurrency 1,4,8,16,24] [--seconds 20] [--image PATH]

A refused call (RESOURCE_EXHAUSTED, or UNAVAILABLE with a retry hint) is counted, and its client waits the
server's retry hint before sending again, as a well-behaved client does; any other error is a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from loadtests.images import synthetic_png
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

REFUSALS = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")


def run_level(stub, image: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """Closed-loop clients at one concurrency; what they saw."""
    accepted: list[float] = []
    refused: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                stub.Segment(pb.SegmentRequest(image=image), timeout=120)
                with lock:
                    accepted.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                elapsed = time.perf_counter() - started
                if exc.code().name not in REFUSALS:
                    with lock:
                        failures.append(exc.code().name)
                    continue
                with lock:
                    refused.append(elapsed)
                hint = dict(exc.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                time.sleep(int(hint) / 1000 if hint else 0.1)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    total = len(accepted) + len(refused)
    pct = lambda xs, q: 1000 * float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    return {
        "concurrency": concurrency,
        "accepted_per_s": len(accepted) / wall,
        "p50_ms": pct(accepted, 50),
        "p95_ms": pct(accepted, 95),
        "refused_share": len(refused) / total if total else 0.0,
        "refusal_p95_ms": pct(refused, 95),
        "failures": len(failures),
    }


def main(argv: list[str] | None = None) -> int:
    grpc_default = f"127.0.0.1:{os.environ.get('SEGSERVE_GRPC_PORT', '50051')}"
    parser = argparse.ArgumentParser(prog="python -m loadtests.overload", description=__doc__.split("\n")[0])
    parser.add_argument("--grpc", default=grpc_default)
    parser.add_argument("--concurrency", default="1,4,8,16,24")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--image", type=Path)
    args = parser.parse_args(argv)
    image = args.image.read_bytes() if args.image else synthetic_png()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with grpc.insecure_channel(args.grpc) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        stub.Segment(pb.SegmentRequest(image=image), timeout=120)  # warm-up
        print(f"`python -m loadtests.overload {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
        print(
            "| offered concurrency | accepted/s | accepted p50 (ms) | accepted p95 (ms) | refused | refusal p95 (ms) |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        failed = 0
        for level in levels:
            r = run_level(stub, image, level, args.seconds)
            failed += r["failures"]
            print(
                f"| {level} | {r['accepted_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
                f"| {100 * r['refused_share']:.0f}% | {r['refusal_p95_ms']:.1f} |",
                flush=True,
            )
    if failed:
        print(f"error: {failed} calls failed with something other than a refusal", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
