"""The benchmark: the served model raw in-process, the naive baseline, and the served system over gRPC and HTTP,
side by side in one run.

    python -m loadtests.bench [--http URL] [--grpc TARGET] [--requests N] [--concurrency 1,4,8,16] [--model M]
                              [--image PATH] [--out FILE] [--timeout S] [--raw-batches 1,4,8] [--raw-seconds S]

1. Raw (``benchmarks.raw``): the served model's files from the BentoML store (run it with the server's
   BENTOML_HOME), run in this process on every engine this machine has (backend and precision) at each batch
   size, with GFLOP/s and, on the val photos of --data, each engine's parity with ONNX Runtime float32; and the
   naive baseline, Keras ``model.predict`` on one image per call. The server is idle meanwhile.
2. Served: for each transport and concurrency level, exactly N Segment requests from that many threads (one shared
   gRPC channel, one shared httpx.Client): throughput, p50/p90/p99 latency and the mean batch size the model
   service saw (the change of segserve_batch_size_sum / _count on /metrics); then concurrency 1 again, after
   the load.
3. The ratios against the targets: served gRPC at concurrency 8 / the fastest raw engine that passes parity,
   p99 at concurrency 1 (fresh and after load) / that engine's single-image latency, served / naive, and on a
   CPU with AMX served / ONNX Runtime float32.

The server's addresses, token and TLS come from its SEGSERVE_* settings (``loadtests.harness.target``); --http
and --grpc override the addresses. It prints a markdown report (and writes it to --out); the exit status is 1 if
the server is unreachable or any request failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx

from benchmarks.raw import RawRow, raw_rows
from loadtests.harness.client import TRANSPORTS, SegmentClient
from loadtests.harness.drive import Level, measure_level
from loadtests.harness.images import image_or_synthetic
from loadtests.harness.stats import fmt, markdown_table
from loadtests.harness.target import Target, add_target_arguments, target_from_args
from segserve import engines

# The targets the served system is held to (gRPC; throughput at concurrency TARGET_CONCURRENCY).
TARGET_CONCURRENCY = 8
TARGET_VS_RAW = 0.9  # served / the fastest raw engine that passes parity
TARGET_VS_NAIVE = 2.0  # served / naive one-predict-per-request
TARGET_P99_VS_RAW = 1.5  # p99 at concurrency 1 / that engine's single-image latency
TARGET_VS_ONNXRUNTIME_ON_AMX = 3.0  # served / ONNX Runtime float32, on a CPU with AMX
AFTER_LOAD = "after load"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "corrosion-pipes"


class BenchError(Exception):
    """The benchmark cannot run (server unreachable, not ready, bad arguments)."""


def check(client: SegmentClient, model: str, image: bytes) -> dict:
    """Fail clearly unless both transports answer Segment; the served model's description (GET /models)."""
    target = client.target
    try:
        info = client.model_info(model)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise BenchError(f"the HTTP server at {target.http_url} is not reachable or not ready: {exc}") from exc
    except LookupError as exc:
        raise BenchError(str(exc)) from exc
    try:
        client.wait_for_grpc(timeout=10)
    except grpc.FutureTimeoutError as exc:
        raise BenchError(f"the gRPC server at {target.grpc_target} is not reachable") from exc
    for transport in TRANSPORTS:  # warm up, and make sure Segment works before measuring
        outcome = client.segment(transport, image, model)
        if not outcome.ok:
            raise BenchError(f"a warm-up Segment over {transport} failed: {outcome.code} {outcome.detail}")
    return info


def raw(
    info: dict, batches: tuple[int, ...], backends: tuple[str, ...], seconds: float, data: Path | None
) -> tuple[list[RawRow], float]:
    """The raw rows of the served model, from the store this process sees (it must be the server's), with each
    engine's parity on the val photos of ``data`` (None: not checked)."""
    from segserve.errors import SegServeError
    from segserve.store import served_model

    name = info["name"]
    if name == "ensemble":
        raise BenchError("raw rows compare one model; bench a single model or pass --raw-batches ''")
    try:
        version = served_model(name)[1].version
    except SegServeError as exc:
        raise BenchError(f"raw rows need the server's model store (BENTOML_HOME): {exc}") from exc
    if version != info["version"]:
        raise BenchError(
            f"the store here serves {name} version {version}, the server {info['version']}: "
            "run the bench with the server's BENTOML_HOME"
        )
    labelled = None
    if data is not None:
        from training.data import load_split

        labelled = load_split(data, "val", size=int(info["input_size"]))
    return raw_rows(name, batches, backends, seconds, labelled=labelled)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "-"


def report(
    args: argparse.Namespace,
    argv: list[str],
    target: Target,
    model: str,
    image_desc: str,
    rows: list[Level],
    raw: list[RawRow],
    flops: float | None,
) -> str:
    """The markdown report: the raw rows, the served rows, throughput side by side, and the targets."""
    levels = args.concurrency
    lines = [
        "# segserve benchmark: served against raw and naive, gRPC and HTTP side by side",
        "",
        f"- Command: `{shlex.join(['python', '-m', 'loadtests.bench', *argv])}`",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}; machine: {machine()}",
        f"- Server: HTTP {target.http_url}, gRPC {target.grpc_target}; model {model}",
        f"- Image: {image_desc}; {args.requests} Segment requests per row, timeout {args.timeout:g} s each",
        "- Mean batch size: change of segserve_batch_size_sum / _count over the row (any other traffic counts too)",
    ]
    if raw:
        gflop = flops / 1e9 if flops else None
        lines += ["", f"## Raw, in this process ({fmt(gflop)} GFLOP per image)", ""]
        header = ["engine", "batch", "images", "images/s", "ms per call (median)", "GFLOP/s"]
        header += ["pixels agreeing with onnxruntime f32", "mean IoU (points) vs it", "parity"]
        cells = [
            [
                r.engine,
                r.batch,
                r.images,
                fmt(r.throughput, 2),
                fmt(r.latency_ms),
                fmt(r.throughput * gflop if gflop else None),
                f"{100 * r.parity['agreement']:.2f}%" if r.parity else "-",
                f"{100 * (r.parity['mean_iou'] - r.parity['reference_mean_iou']):+.2f}" if r.parity else "-",
                ("passes" if r.passes_parity else "fails") if r.parity or r.passes_parity else "unchecked",
            ]
            for r in raw
        ]
        lines.append(markdown_table(header, cells))
    lines += ["", "## Served", ""]
    header = ["transport", "concurrency", "requests", "errors", "seconds", "images/s", "p50 (ms)", "p90 (ms)"]
    header += ["p99 (ms)", "mean batch size"]
    cells = [
        [r.transport, f"{r.concurrency} ({r.label})" if r.label else r.concurrency, r.requests, r.errors]
        + [fmt(r.seconds, 2), fmt(r.throughput, 2)]
        + [fmt(r.percentile(q)) for q in (50, 90, 99)]
        + [fmt(r.mean_batch, 2)]
        for r in rows
    ]
    lines.append(markdown_table(header, cells))
    by_key = {(r.transport, r.concurrency): r for r in rows if r.label != AFTER_LOAD}
    after_load = {r.transport: r for r in rows if r.label == AFTER_LOAD}
    lowest = min(levels)
    lines += ["", f"Throughput side by side (x = ratio to the same transport at concurrency {lowest}):", ""]
    cells = []
    for level in levels:
        tp = {t: by_key[(t, level)].throughput for t in TRANSPORTS}
        low = {t: by_key[(t, lowest)].throughput for t in TRANSPORTS}
        cells.append([level, *(f"{tp[t]:.2f} ({_ratio(tp[t], low[t])})" for t in TRANSPORTS)])
        cells[-1].append(_ratio(tp["grpc"], tp["http"]))
    header = ["concurrency", "grpc (images/s)", "http (images/s)", "grpc / http"]
    lines.append(markdown_table(header, cells, align="rrrr"))
    lines += ratio_lines(by_key, raw, after_load.get("grpc"))
    return "\n".join(lines) + "\n"


def ratio_lines(by_key: dict[tuple[str, int], Level], raw: list[RawRow], after_load: Level | None = None) -> list[str]:
    """The served system against the raw engines and the naive baseline, with the targets."""
    from segserve.engines import cpu_flags

    engines = [r for r in raw if not r.engine.startswith("naive") and r.passes_parity]
    naive = next((r for r in raw if r.engine.startswith("naive")), None)
    served = by_key.get(("grpc", TARGET_CONCURRENCY))
    single = by_key.get(("grpc", 1))
    if not engines or naive is None or served is None or single is None:
        return []
    best = max(engines, key=lambda r: r.throughput)
    # that engine's single-image latency
    fastest_single = next((r for r in engines if r.engine == best.engine and r.batch == 1), None)
    cells = []

    def row(label: str, value: float, target: float, higher_is_better: bool) -> None:
        met = value >= target if higher_is_better else value <= target
        sign = ">=" if higher_is_better else "<="
        cells.append([label, f"{value:.2f}", f"{sign} {target:g}", "yes" if met else "no"])

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
    for label, level in (("fresh", single), (AFTER_LOAD, after_load)):
        p99 = level.percentile(99) if level is not None else None
        if fastest_single is not None and p99 is not None:
            row(
                f"p99 gRPC c=1, {label} ({p99:.1f} ms) / raw single image ({fastest_single.engine}: "
                f"{fastest_single.latency_ms:.1f} ms)",
                p99 / fastest_single.latency_ms,
                TARGET_P99_VS_RAW,
                False,
            )
    onnxruntime = [r for r in raw if r.engine == "onnxruntime f32"]
    if onnxruntime and "amx_bf16" in cpu_flags():
        ort = max(onnxruntime, key=lambda r: r.throughput)
        row(
            f"served gRPC c={TARGET_CONCURRENCY} / onnxruntime f32 (batch {ort.batch}: {ort.throughput:.2f}/s), AMX",
            served.throughput / ort.throughput,
            TARGET_VS_ONNXRUNTIME_ON_AMX,
            True,
        )
    elif onnxruntime:
        cells.append([f"served / onnxruntime f32 >= {TARGET_VS_ONNXRUNTIME_ON_AMX:g}", "-", "AMX only", "no AMX here"])
    return ["", "## Against the targets", "", markdown_table(["ratio", "value", "target", "met"], cells, "lrrl")]


def machine() -> str:
    """The CPU, its core count and the CPUs this process may use (fewer under a container's CPU limit)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {engines.usable_cpus()} usable"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0])
    add_target_arguments(parser)
    # A p99 and a throughput need enough calls: 64 requests a level and 15 s a raw row (about 40 calls of a
    # model that takes 0.4 s); shorter rows moved the ratios against the targets by 0.1 from run to run.
    parser.add_argument("--requests", type=int, default=64, help="Segment requests per transport and level")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--raw-batches", default="1,4,8", help="batch sizes of the raw rows; empty: no raw rows")
    parser.add_argument("--raw-seconds", type=float, default=15.0, help="least time of each raw row")
    parser.add_argument(
        "--backends", default="onnxruntime,openvino,tensorflow", help="backends of the raw rows (each precision)"
    )
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="dataset folder whose val photos check each engine's parity (empty: no parity columns)",
    )
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
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    image, image_desc = image_or_synthetic(args.image)
    try:
        target = target_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    client = SegmentClient(target, timeout=args.timeout)
    raw_found, flops = [], None
    try:
        info = check(client, args.model, image)
        model = (
            f"{info['name']} (version {info['version']}, input {info['input_size']}, served on "
            f"{info.get('backend')} {info.get('precision')})"
        )
        if args.raw_batches:
            print("raw in-process rows (the server idles meanwhile)...", file=sys.stderr)
            data = Path(args.data) if args.data and Path(args.data).is_dir() else None
            raw_found, flops = raw(info, args.raw_batches, args.backends, args.raw_seconds, data)
        rows = []
        for transport in TRANSPORTS:
            for level in args.concurrency:
                rows.append(measure_level(client, transport, image, args.requests, level, args.model, info["name"]))
                print(f"{transport} x{level}: {rows[-1].throughput:.2f} req/s", file=sys.stderr)
            # concurrency 1 again, after the load: a lone request must not wait for company
            again = measure_level(client, transport, image, args.requests, 1, args.model, info["name"])
            again.label = AFTER_LOAD
            rows.append(again)
            print(f"{transport} x1 after load: p99 {again.percentile(99):.1f} ms", file=sys.stderr)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    text = report(args, argv, target, model, image_desc, rows, raw_found, flops)
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
