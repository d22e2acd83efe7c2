"""A burst of the largest photos the limits allow, over both transports at once, against a running server:
how much memory the serving processes take, what is answered and what is refused, and whether the next small
request is served at normal latency.

    python -m loadtests.burst --pid PID [--http URL] [--grpc TARGET] [--requests 16] [--side 6000]

PID is the `bentoml serve` process (make serve's); its children are the service workers. The photo is a
synthetic SIDE x SIDE JPEG (6000x6000 is 36 megapixels, under the default 40-megapixel limit), sent with
include_overlay, half of the requests over gRPC and half over HTTP, all at once. The server's addresses, token
and TLS come from its SEGSERVE_* settings; --http and --grpc override the addresses.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import psutil

from loadtests.harness.client import OK, SegmentClient
from loadtests.harness.drive import fixed_count
from loadtests.harness.images import big_jpeg
from loadtests.harness.processes import MemorySampler, tree_rss
from loadtests.harness.stats import percentile
from loadtests.harness.target import add_target_arguments, target_from_args

# What a burst may be answered with: the answer, or a refusal for now.
EXPECTED = (OK, "RESOURCE_EXHAUSTED", "HTTP 429")
SMALL_SIDE = 256


def small_latency_ms(client: SegmentClient, image: bytes, calls: int = 5) -> float:
    """The median latency (ms) of ``calls`` small gRPC Segment calls, one at a time."""
    return percentile([1000 * client.segment("grpc", image).check().seconds for _ in range(calls)], 50) or 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the `bentoml serve` process")
    add_target_arguments(parser)
    parser.add_argument("--requests", type=int, default=16, help="photos in the burst, half per transport")
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    photo = big_jpeg(args.side)
    small = big_jpeg(SMALL_SIDE)
    try:
        root = psutil.Process(args.pid)
    except psutil.NoSuchProcess:
        print(f"error: no process {args.pid}", file=sys.stderr)
        return 1
    with SegmentClient(target_from_args(args), timeout=args.timeout, connections=args.requests) as client:
        warm_up = client.segment("grpc", small)
        if not warm_up.ok:
            print(f"error: Segment at {client.target.grpc_target}: {warm_up.code} {warm_up.detail}", file=sys.stderr)
            return 1
        before_ms = small_latency_ms(client, small)
        baseline = tree_rss(root.pid)
        with MemorySampler(root, period=0.1) as sampler:

            def send(k: int):
                transport = "grpc" if k % 2 == 0 else "http"
                return client.segment(transport, photo, include_overlay=True, filename="p.jpg")

            outcomes, seconds = fixed_count(send, args.requests, args.requests)
        after_ms = small_latency_ms(client, small)
    peak = sampler.peak_mb * 2**20
    counts = dict(sorted(Counter(o.code for o in outcomes).items()))
    print(f"burst: {args.requests} x {args.side}x{args.side} JPEG ({len(photo)} bytes), half gRPC, half HTTP")
    print(f"answers: {counts} in {seconds:.1f} s")
    print(
        f"serving processes' RSS: {baseline / 1e9:.2f} GB before, {peak / 1e9:.2f} GB at the peak "
        f"(+{(peak - baseline) / 1e9:.2f} GB)"
    )
    print(f"a small request: {before_ms:.0f} ms before the burst, {after_ms:.0f} ms after")
    unexpected = [o for o in outcomes if o.code not in EXPECTED]
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
