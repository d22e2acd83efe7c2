"""Throughput, latency and adaptive-batching benchmark of a running segserve server, gRPC and HTTP side by side.

    python -m loadtests.bench [--http URL] [--grpc TARGET] [--requests N] [--concurrency 1,8] [--model M]
                              [--image PATH] [--out FILE] [--timeout S]

For each transport and concurrency level it sends exactly N Segment requests from that many threads (one shared
gRPC channel, one shared httpx.Client) and reports throughput, p50/p95 latency and the mean batch size the model
service saw meanwhile: the change of segserve_batch_size_sum / segserve_batch_size_count on /metrics. It prints a
markdown report (and writes it to --out); the exit status is 1 if the server is unreachable or any request failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from loadtests.images import synthetic_png
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

TRANSPORTS = ("grpc", "http")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class BenchError(Exception):
    """The benchmark cannot run (server unreachable, not ready, bad arguments)."""


@dataclass
class Row:
    transport: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float | None

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


class Bench:
    def __init__(self, args: argparse.Namespace, image: bytes) -> None:
        self.args = args
        self.image = image
        self.http = httpx.Client(base_url=args.http, timeout=args.timeout)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self.channel = grpc.insecure_channel(args.grpc, options=options)
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)
        self.model = ""  # the served model name, resolved by check()

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    def check(self) -> str:
        """Fail clearly unless both transports answer; resolve the model; return a description of it."""
        try:
            models = self.http.get("/models", timeout=10).raise_for_status().json()["models"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise BenchError(f"the HTTP server at {self.args.http} is not reachable or not ready: {exc}") from exc
        try:
            grpc.channel_ready_future(self.channel).result(timeout=10)
        except grpc.FutureTimeoutError as exc:
            raise BenchError(f"the gRPC server at {self.args.grpc} is not reachable") from exc
        by_name = {m["name"]: m for m in models}
        default = next((m["name"] for m in models if m.get("is_default")), "")
        self.model = self.args.model or default
        if self.model not in by_name:
            raise BenchError(f"model {self.model!r} is not served; the server has {', '.join(sorted(by_name))}")
        for transport in TRANSPORTS:  # warm up, and make sure Segment works before measuring
            try:
                self.segment(transport)
            except Exception as exc:
                raise BenchError(f"a warm-up Segment over {transport} failed: {exc}") from exc
        info = by_name[self.model]
        return f"{self.model} (version {info['version']}, input {info['input_size']})"

    def segment(self, transport: str) -> float:
        """One Segment request; its latency in ms. Raises on any failure."""
        started = time.perf_counter()
        if transport == "grpc":
            request = pb.SegmentRequest(image=self.image, model=self.args.model)
            self.stub.Segment(request, timeout=self.args.timeout)
        else:
            files = {"image": ("image", self.image, "application/octet-stream")}
            data = {"model": self.args.model, "include_overlay": "false"}
            self.http.post("/segment", files=files, data=data).raise_for_status()
        return (time.perf_counter() - started) * 1000

    def batch_totals(self) -> tuple[float, float]:
        """(segserve_batch_size_sum, segserve_batch_size_count) of the benchmarked model, from /metrics."""
        text = self.http.get("/metrics", timeout=10).raise_for_status().text
        totals = {"segserve_batch_size_sum": 0.0, "segserve_batch_size_count": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in totals and sample.labels.get("model") == self.model:
                    totals[sample.name] += sample.value
        return totals["segserve_batch_size_sum"], totals["segserve_batch_size_count"]

    def run(self, transport: str, concurrency: int) -> Row:
        n = self.args.requests
        sum_before, count_before = self.batch_totals()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(self.segment, transport) for _ in range(n)]
        seconds = time.perf_counter() - started
        latencies, errors = [], 0
        for future in futures:
            if future.exception() is None:
                latencies.append(future.result())
            else:
                errors += 1
                if errors == 1:
                    print(f"warning: {transport} Segment failed: {future.exception()}", file=sys.stderr)
        sum_after, count_after = self.batch_totals()
        batches = count_after - count_before
        mean_batch = (sum_after - sum_before) / batches if batches > 0 else None
        return Row(transport, concurrency, n, errors, seconds, latencies, mean_batch)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "-"


def report(args: argparse.Namespace, argv: list[str], model: str, image_desc: str, rows: list[Row]) -> str:
    levels = args.concurrency
    lines = [
        "# segserve benchmark: gRPC and HTTP through one adaptive-batching path",
        "",
        f"- Command: `{shlex.join(['python', '-m', 'loadtests.bench', *argv])}`",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- Server: HTTP {args.http}, gRPC {args.grpc}; model {model}",
        f"- Image: {image_desc}; {args.requests} Segment requests per row, timeout {args.timeout:g} s each",
        "- Mean batch size: change of segserve_batch_size_sum / _count over the row (any other traffic counts too)",
        "",
        "| transport | concurrency | requests | errors | seconds | throughput (req/s) | p50 (ms) | p95 (ms) "
        "| mean batch size |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.transport} | {r.concurrency} | {r.requests} | {r.errors} | {r.seconds:.2f} | {r.throughput:.2f} "
            f"| {_num(r.percentile(50))} | {_num(r.percentile(95))} | {_num(r.mean_batch, 2)} |"
        )
    by_key = {(r.transport, r.concurrency): r.throughput for r in rows}
    lowest = min(levels)
    lines += [
        "",
        f"Throughput side by side (x = ratio to the same transport at concurrency {lowest}):",
        "",
        "| concurrency | grpc (req/s) | http (req/s) | grpc / http |",
        "|---:|---:|---:|---:|",
    ]
    for level in levels:
        cells = [f"{by_key[(t, level)]:.2f} ({_ratio(by_key[(t, level)], by_key[(t, lowest)])})" for t in TRANSPORTS]
        lines.append(f"| {level} | {' | '.join(cells)} | {_ratio(by_key[('grpc', level)], by_key[('http', level)])} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    grpc_port = os.environ.get("SEGSERVE_GRPC_PORT", "50051")
    grpc_default = os.environ.get("SEGSERVE_GRPC_TARGET") or f"127.0.0.1:{grpc_port}"
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--http", default=f"http://127.0.0.1:{os.environ.get('SEGSERVE_HTTP_PORT', '3000')}")
    parser.add_argument("--grpc", default=grpc_default, help="host:port of the gRPC server")
    parser.add_argument("--requests", type=int, default=32, help="Segment requests per transport and level")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated concurrency levels")
    parser.add_argument("--model", default="", help="model name; empty for the server's default")
    parser.add_argument("--image", type=Path, help="image to send (default: a synthetic 640x480 PNG)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    args = parser.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, not {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1 or args.requests < 1:
        parser.error("--requests and every --concurrency level must be at least 1")
    args.http = args.http.rstrip("/")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.image:
        image, image_desc = args.image.read_bytes(), f"{args.image} ({args.image.stat().st_size} bytes)"
    else:
        image = synthetic_png()
        image_desc = f"synthetic 640x480 PNG ({len(image)} bytes)"
    bench = Bench(args, image)
    try:
        model = bench.check()
        rows = []
        for transport in TRANSPORTS:
            for level in args.concurrency:
                rows.append(bench.run(transport, level))
                print(f"{transport} x{level}: {rows[-1].throughput:.2f} req/s", file=sys.stderr)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close()
    text = report(args, argv, model, image_desc, rows)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    failed = sum(r.errors for r in rows)
    if failed:
        print(f"error: {failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
