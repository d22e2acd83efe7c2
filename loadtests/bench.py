"""The benchmark: the served model raw in-process, the naive baseline, and the served system over gRPC and HTTP,
side by side in one run.

    python -m loadtests.bench [--http URL] [--grpc TARGET] [--requests N] [--concurrency 1,4,8,16] [--model M]
                              [--image PATH] [--out FILE] [--timeout S] [--raw-batches 1,4,8] [--raw-seconds S]

1. Raw (``loadtests.raw``): the served model's files from the BentoML store (run it with the server's
   BENTOML_HOME), run in this process on each backend at each batch size, with GFLOP/s; and the naive baseline,
   Keras ``model.predict`` on one image per call. The server is idle meanwhile.
2. Served: for each transport and concurrency level, exactly N Segment requests from that many threads (one shared
   gRPC channel, one shared httpx.Client): throughput, p50/p90/p99 latency and the mean batch size the model
   service saw (the change of segserve_batch_size_sum / _count on /metrics).
3. The ratios served / best raw, served / naive and p99 at concurrency 1 / raw single-image latency, against the
   targets.

It prints a markdown report (and writes it to --out); the exit status is 1 if the server is unreachable or any
request failed.
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
from loadtests.raw import RawRow, raw_rows
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

TRANSPORTS = ("grpc", "http")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The targets the served system is held to (gRPC; throughput at concurrency TARGET_CONCURRENCY).
TARGET_CONCURRENCY = 8
TARGET_VS_RAW = 0.9  # served / best raw float32 engine
TARGET_VS_NAIVE = 2.0  # served / naive one-predict-per-request
TARGET_P99_VS_RAW = 1.5  # p99 at concurrency 1 / raw single-image latency


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
        self.info = info
        return f"{self.model} (version {info['version']}, input {info['input_size']}, backend {info.get('backend')})"

    def raw(self, batches: tuple[int, ...], backends: tuple[str, ...], seconds: float) -> tuple[list[RawRow], float]:
        """The raw rows of the served model, from the store this process sees (it must be the server's)."""
        from segserve.errors import SegServeError
        from segserve.store import served_model

        if self.model == "ensemble":
            raise BenchError("raw rows compare one model; bench a single model or pass --raw-batches ''")
        try:
            version = served_model(self.model)[1].version
        except SegServeError as exc:
            raise BenchError(f"raw rows need the server's model store (BENTOML_HOME): {exc}") from exc
        if version != self.info["version"]:
            raise BenchError(
                f"the store here serves {self.model} version {version}, the server {self.info['version']}: "
                "run the bench with the server's BENTOML_HOME"
            )
        return raw_rows(self.model, batches, backends, seconds)

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


def report(
    args: argparse.Namespace,
    argv: list[str],
    model: str,
    image_desc: str,
    rows: list[Row],
    raw: list[RawRow],
    flops: float | None,
) -> str:
    levels = args.concurrency
    lines = [
        "# segserve benchmark: served against raw and naive, gRPC and HTTP side by side",
        "",
        f"- Command: `{shlex.join(['python', '-m', 'loadtests.bench', *argv])}`",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}; machine: {machine()}",
        f"- Server: HTTP {args.http}, gRPC {args.grpc}; model {model}",
        f"- Image: {image_desc}; {args.requests} Segment requests per row, timeout {args.timeout:g} s each",
        "- Mean batch size: change of segserve_batch_size_sum / _count over the row (any other traffic counts too)",
    ]
    if raw:
        lines += [
            "",
            f"## Raw, in this process ({_num(flops / 1e9 if flops else None, 1)} GFLOP per image)",
            "",
            "| engine | batch | images | images/s | ms per call (median) | GFLOP/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in raw:
            gflops = _num(r.throughput * flops / 1e9 if flops else None, 1)
            lines.append(
                f"| {r.engine} | {r.batch} | {r.images} | {r.throughput:.2f} | {r.latency_ms:.1f} | {gflops} |"
            )
    lines += [
        "",
        "## Served",
        "",
        "| transport | concurrency | requests | errors | seconds | images/s | p50 (ms) | p90 (ms) | p99 (ms) "
        "| mean batch size |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.transport} | {r.concurrency} | {r.requests} | {r.errors} | {r.seconds:.2f} | {r.throughput:.2f} "
            f"| {_num(r.percentile(50))} | {_num(r.percentile(90))} | {_num(r.percentile(99))} "
            f"| {_num(r.mean_batch, 2)} |"
        )
    by_key = {(r.transport, r.concurrency): r for r in rows}
    lowest = min(levels)
    lines += [
        "",
        f"Throughput side by side (x = ratio to the same transport at concurrency {lowest}):",
        "",
        "| concurrency | grpc (images/s) | http (images/s) | grpc / http |",
        "|---:|---:|---:|---:|",
    ]
    for level in levels:
        tp = {t: by_key[(t, level)].throughput for t in TRANSPORTS}
        low = {t: by_key[(t, lowest)].throughput for t in TRANSPORTS}
        cells = [f"{tp[t]:.2f} ({_ratio(tp[t], low[t])})" for t in TRANSPORTS]
        lines.append(f"| {level} | {' | '.join(cells)} | {_ratio(tp['grpc'], tp['http'])} |")
    lines += ratio_lines(by_key, raw)
    return "\n".join(lines) + "\n"


def ratio_lines(by_key: dict[tuple[str, int], Row], raw: list[RawRow]) -> list[str]:
    """The served system against the raw engines and the naive baseline, with the targets."""
    engines = [r for r in raw if "float32" in r.engine]
    naive = next((r for r in raw if r.engine.startswith("naive")), None)
    served = by_key.get(("grpc", TARGET_CONCURRENCY))
    single = by_key.get(("grpc", 1))
    if not engines or naive is None or served is None or single is None:
        return []
    best = max(engines, key=lambda r: r.throughput)
    fastest_single = min((r for r in engines if r.batch == 1), key=lambda r: r.latency_ms, default=None)
    lines = [
        "",
        "## Against the targets",
        "",
        "| ratio | value | target | met |",
        "|---|---:|---:|---|",
    ]

    def row(label: str, value: float, target: float, higher_is_better: bool) -> None:
        met = value >= target if higher_is_better else value <= target
        sign = ">=" if higher_is_better else "<="
        lines.append(f"| {label} | {value:.2f} | {sign} {target:g} | {'yes' if met else 'no'} |")

    row(
        f"served gRPC c={TARGET_CONCURRENCY} / best raw ({best.engine}, batch {best.batch}: {best.throughput:.2f}/s)",
        served.throughput / best.throughput,
        TARGET_VS_RAW,
        True,
    )
    row(
        f"served gRPC c={TARGET_CONCURRENCY} / naive ({naive.throughput:.2f}/s)",
        served.throughput / naive.throughput,
        TARGET_VS_NAIVE,
        True,
    )
    if fastest_single is not None and single.percentile(99) is not None:
        row(
            f"p99 gRPC c=1 ({single.percentile(99):.1f} ms) / raw single image ({fastest_single.engine}: "
            f"{fastest_single.latency_ms:.1f} ms)",
            single.percentile(99) / fastest_single.latency_ms,
            TARGET_P99_VS_RAW,
            False,
        )
    return lines


def machine() -> str:
    """The CPU and core count, for the report."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def parse_args(argv: list[str]) -> argparse.Namespace:
    grpc_port = os.environ.get("SEGSERVE_GRPC_PORT", "50051")
    grpc_default = os.environ.get("SEGSERVE_GRPC_TARGET") or f"127.0.0.1:{grpc_port}"
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--http", default=f"http://127.0.0.1:{os.environ.get('SEGSERVE_HTTP_PORT', '3000')}")
    parser.add_argument("--grpc", default=grpc_default, help="host:port of the gRPC server")
    parser.add_argument("--requests", type=int, default=32, help="Segment requests per transport and level")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--raw-batches", default="1,4,8", help="batch sizes of the raw rows; empty: no raw rows")
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="least time of each raw row")
    parser.add_argument("--backends", default="onnxruntime,tensorflow", help="backends of the raw rows")
    parser.add_argument("--model", default="", help="model name; empty for the server's default")
    parser.add_argument("--image", type=Path, help="image to send (default: a synthetic 640x480 PNG)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    args = parser.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
        args.raw_batches = tuple(sorted({int(c) for c in args.raw_batches.split(",") if c.strip()}))
    except ValueError:
        parser.error("--concurrency and --raw-batches must be comma-separated integers")
    args.backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
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
    raw, flops = [], None
    try:
        model = bench.check()
        if args.raw_batches:
            print("raw in-process rows (the server idles meanwhile)...", file=sys.stderr)
            raw, flops = bench.raw(args.raw_batches, args.backends, args.raw_seconds)
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
    text = report(args, argv, model, image_desc, rows, raw, flops)
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
