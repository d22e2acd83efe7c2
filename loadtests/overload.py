"""The overload curve of a running server: for each offered concurrency, closed-loop gRPC clients send Segment
back to back for a while; accepted throughput and p50/p95 latency, the share refused, and how fast refusals come.

    python -m loadtests.overload [--grpc TARGET] [--model NAME] [--concurrency 1,4,8,16,24] [--seconds 20]
        [--image PATH]

A refused call (RESOURCE_EXHAUSTED, or UNAVAILABLE with a retry hint) is counted, and its client waits the
server's retry hint before sending again, as a well-behaved client does; any other error is a failure. The
server's address, token and TLS come from its SEGSERVE_* settings; --grpc overrides the address.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadtests.harness.client import Outcome, SegmentClient
from loadtests.harness.drive import for_seconds
from loadtests.harness.images import image_or_synthetic
from loadtests.harness.stats import fmt, markdown_row, markdown_table, percentile
from loadtests.harness.target import add_target_arguments, target_from_args

REFUSAL_PAUSE_S = 0.1  # the pause after a refusal that gives no retry hint


def run_level(
    client: SegmentClient, image: bytes, concurrency: int, seconds: float, model: str = ""
) -> dict[str, float]:
    """Closed-loop clients at one concurrency, calling ``model`` (empty: the server's default); what they saw."""

    def call(_: int) -> Outcome:
        outcome = client.segment("grpc", image, model)
        if outcome.refused:
            time.sleep(outcome.retry_after if outcome.retry_after is not None else REFUSAL_PAUSE_S)
        return outcome

    outcomes, wall = for_seconds(call, concurrency, seconds)
    accepted = [1000 * o.seconds for o in outcomes if o.ok]
    refused = [1000 * o.seconds for o in outcomes if o.refused]
    total = len(accepted) + len(refused)
    return {
        "concurrency": concurrency,
        "accepted_per_s": len(accepted) / wall,
        "p50_ms": percentile(accepted, 50),
        "p95_ms": percentile(accepted, 95),
        "refused_share": len(refused) / total if total else 0.0,
        "refusal_p95_ms": percentile(refused, 95),
        "failures": len(outcomes) - total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.overload", description=__doc__.split("\n\n")[0])
    add_target_arguments(parser, ("grpc",))
    parser.add_argument("--concurrency", default="1,4,8,16,24")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--model", default="", help="model to call (default: the server's default)")
    args = parser.parse_args(argv)
    image, _ = image_or_synthetic(args.image)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    header = ["offered concurrency", "accepted/s", "accepted p50 (ms)", "accepted p95 (ms)", "refused"]
    header.append("refusal p95 (ms)")
    with SegmentClient(target_from_args(args), timeout=120) as client:
        warm_up = client.segment("grpc", image, args.model)
        if not warm_up.ok:
            print(f"error: Segment at {client.target.grpc_target}: {warm_up.code} {warm_up.detail}", file=sys.stderr)
            return 1
        print(f"`python -m loadtests.overload {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
        print(markdown_table(header, []), flush=True)
        failed = 0
        for level in levels:
            r = run_level(client, image, level, args.seconds, args.model)
            failed += r["failures"]
            cells = [level, fmt(r["accepted_per_s"], 2), fmt(r["p50_ms"], 0), fmt(r["p95_ms"], 0)]
            cells += [f"{100 * r['refused_share']:.0f}%", fmt(r["refusal_p95_ms"])]
            print(markdown_row(cells), flush=True)
    if failed:
        print(f"error: {failed} calls failed with something other than a refusal", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
