"""Soak: a steady load at about 70% of the server's measured capacity, over gRPC and HTTP at once, for a long time.

    python -m loadtests.soak --minutes 30                      # against `make serve` on the default ports
    python -m loadtests.soak --minutes 30 --rate 1.5 --pid PID --http http://127.0.0.1:3000 --grpc 127.0.0.1:50051

1. Capacity (unless --rate is given): Segment requests from --capacity-concurrency threads, alternating transports,
   for --capacity-seconds; capacity = answered requests per second. The soak rate is --load (0.7) times that.
2. Soak: requests arrive at a constant rate (open loop: one every 1/rate s, alternating gRPC and HTTP, cycling
   through --count real photos from --images), each timed from its scheduled start, so a slow server cannot slow
   the offered load down. Meanwhile the resident memory (RSS) of every serving process is sampled: the process
   tree of --pid (the `bentoml serve` or `segserve serve` parent), or, without it, of whatever listens on the HTTP
   and gRPC ports.
3. Report, in --out (default runs/soak/<UTC time>/): requests.csv (one row a request), memory.csv (one row a sample
   and process), windows.csv (per --window seconds: requests, errors, p50/p95 per transport, RSS), soak.png (p95
   per transport; the total RSS on an axis scaled to its range after warm-up; each process's RSS change since
   warm-up) and summary.json, printed too: errors by code, p95 drift (last full window after warm-up
   against the first one) and memory growth after warm-up, against the goals of issue 8 (0 errors, p95 drift under
   10%, under 50 MB of growth). The exit status is 1 when a goal is missed or the server cannot be reached.

The server's addresses, token and TLS come from its SEGSERVE_* settings (``loadtests.harness.target``); --http
and --grpc override the addresses. Run it on a quiet machine: other work on the same cores shows up as p95 drift.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import psutil

from loadtests.harness.client import TRANSPORTS, SegmentClient
from loadtests.harness.drive import for_seconds, open_loop
from loadtests.harness.images import load_images
from loadtests.harness.processes import MemorySample, MemorySampler, find_server_root, role_of, total_rss
from loadtests.harness.stats import percentile, write_csv
from loadtests.harness.target import Target, add_target_arguments, target_from_args

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Goals of issue 8 for a 30-minute soak.
GOAL_ERRORS = 0
GOAL_P95_DRIFT = 0.10
GOAL_MEMORY_GROWTH_MB = 50.0


class SoakError(Exception):
    """The soak cannot run (server unreachable, no images, no serving process found)."""


@dataclass
class Result:
    """One request. start: scheduled start, seconds from the soak's start. latency_ms from the scheduled start."""

    start: float
    transport: str
    image: str
    latency_ms: float
    service_ms: float
    code: str  # OK, a gRPC status name, "HTTP <status>", or the exception's name when no answer came

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def measure_capacity(
    client: SegmentClient, images: list[tuple[str, bytes]], concurrency: int, seconds: float, model: str = ""
) -> float:
    """Answered Segment requests per second with ``concurrency`` threads, transports alternating."""

    def call(k: int) -> str:
        name, data = images[k % len(images)]
        return client.segment(TRANSPORTS[k % 2], data, model, filename=name).code

    codes, elapsed = for_seconds(call, concurrency, seconds)
    counts = Counter(codes)
    errors = sum(v for k, v in counts.items() if k != "OK")
    if errors:
        raise SoakError(f"{errors} requests failed while measuring capacity: {dict(counts)}")
    return counts["OK"] / elapsed


def run_soak(
    client: SegmentClient, images: list[tuple[str, bytes]], rate: float, seconds: float, t0: float, model: str = ""
) -> list[Result]:
    """Open loop: request k is due at t0 + k / rate; its latency counts from then, however late it leaves."""

    def one(k: int, due: float) -> Result:
        transport = TRANSPORTS[k % 2]
        name, data = images[(k // 2) % len(images)]
        sent = time.monotonic()
        code = client.segment(transport, data, model, filename=name).code
        done = time.monotonic()
        return Result(
            start=round(due - t0, 4),
            transport=transport,
            image=name,
            latency_ms=round((done - due) * 1000, 2),
            service_ms=round((done - sent) * 1000, 2),
            code=code,
        )

    workers = max(8, int(rate * client.timeout) + 1)  # enough that a slow answer never delays the next send
    return sorted(open_loop(one, rate, seconds, t0, min(workers, 256)), key=lambda r: r.start)


def _p(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return round(value, 1) if value is not None else None


def windows(results: list[Result], memory: list[MemorySample], width: float, seconds: float, warmup: float):
    """Rows per window of ``width`` seconds: requests, errors, p50/p95 overall and per transport, mean total RSS."""
    rows = []
    for i in range(int(np.ceil(seconds / width))):
        lo, hi = i * width, min((i + 1) * width, seconds)
        inside = [r for r in results if lo <= r.start < hi]
        row = {
            "window": i,
            "start_s": lo,
            "end_s": hi,
            "phase": "warm-up" if lo < warmup else "soak",
            "full": hi - lo >= width - 1e-6,
            "requests": len(inside),
            "errors": sum(not r.ok for r in inside),
            "p50_ms": _p([r.latency_ms for r in inside if r.ok], 50),
            "p95_ms": _p([r.latency_ms for r in inside if r.ok], 95),
        }
        for transport in TRANSPORTS:
            row[f"{transport}_p95_ms"] = _p([r.latency_ms for r in inside if r.ok and r.transport == transport], 95)
        totals = total_rss(memory, lo, hi)
        row["rss_total_mb"] = round(float(np.mean(list(totals.values()))), 1) if totals else None
        rows.append(row)
    return rows


def drift_windows(rows: list[dict]) -> tuple[dict | None, dict | None]:
    """The first and the last full window after warm-up with a p95: the two that p95 drift compares."""
    soak_rows = [r for r in rows if r["phase"] == "soak" and r["full"] and r["p95_ms"] is not None]
    return (soak_rows[0], soak_rows[-1]) if soak_rows else (None, None)


def memory_growth(memory: list[MemorySample], warmup: float) -> float | None:
    """The total RSS of the serving processes at the last sample less that at the first sample after warm-up
    (MB); None without samples after warm-up."""
    after = total_rss(memory, warmup)
    if not after:
        return None
    times = sorted(after)
    return round(after[times[-1]] - after[times[0]], 1)


def summarize(args, rate, capacity, results, memory, rows, seconds, warmup) -> dict:
    """summary.json: the run's settings, the counts, p95 drift and memory growth, and the goals met."""
    codes = Counter(r.code for r in results if not r.ok)
    first, last = drift_windows(rows)
    drift = (last["p95_ms"] - first["p95_ms"]) / first["p95_ms"] if first and first["p95_ms"] else None
    growth = memory_growth(memory, warmup)
    per_process = {}
    for pid in sorted({s.pid for s in memory}):
        mine = [s for s in memory if s.pid == pid and s.t >= warmup]
        if mine:
            per_process[f"{pid} {mine[0].role}"] = {
                "rss_mb_after_warmup": mine[0].rss_mb,
                "rss_mb_end": mine[-1].rss_mb,
                "growth_mb": round(mine[-1].rss_mb - mine[0].rss_mb, 1),
            }
    ok = [r.latency_ms for r in results if r.ok]
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "-m", "loadtests.soak", *sys.argv[1:]]),
        "started_utc": args.started,
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "window_seconds": args.window,
        "capacity_rps": round(capacity, 3) if capacity else None,
        "rate_rps": round(rate, 3),
        "load": round(rate / capacity, 3) if capacity else None,
        "requests": len(results),
        "errors": sum(codes.values()),
        "errors_by_code": dict(codes),
        "p50_ms": _p(ok, 50),
        "p95_ms": _p(ok, 95),
        "p95_first_window_ms": first["p95_ms"] if first else None,
        "p95_last_window_ms": last["p95_ms"] if last else None,
        "p95_drift": round(drift, 4) if drift is not None else None,
        "rss_growth_after_warmup_mb": growth,
        "rss_by_process": per_process,
    }
    summary["goals"] = {
        "errors == 0": summary["errors"] == GOAL_ERRORS,
        "p95 drift < 10%": drift is not None and drift < GOAL_P95_DRIFT,
        "memory growth < 50 MB": growth is not None and growth < GOAL_MEMORY_GROWTH_MB,
    }
    return summary


# How each p95 line is drawn: distinct colours, line styles and markers (HTTP's hollow), so that lines lying on
# top of each other all stay visible; the overall p95 (the one drift is measured on) as a wide pale band beneath.
P95_LINES = (
    ("p95_ms", {"label": "both transports", "color": "0.6", "lw": 5, "alpha": 0.45, "solid_capstyle": "round"}),
    ("grpc_p95_ms", {"label": "gRPC", "color": "C0", "ls": "-", "lw": 1.3, "marker": "o", "ms": 4}),
    ("http_p95_ms", {"label": "HTTP", "color": "C3", "ls": "--", "lw": 1.3, "marker": "s", "ms": 6, "mfc": "none"}),
)

PROCESS_STYLES = ("-", "--", ":", "-.")


def draw(rows: list[dict], memory: list[MemorySample], warmup: float) -> Figure:
    """The soak figure: p95 per window by transport (and overall, with the two windows drift compares); the serving
    processes' total RSS on an axis scaled to its range after warm-up, with the growth the summary reports; and
    each process's RSS change since the end of warm-up. Close it with ``matplotlib.pyplot.close``."""
    import matplotlib.pyplot as plt

    fig, (latency, total, change) = plt.subplots(3, 1, figsize=(7.5, 8.5), sharex=True, height_ratios=(1.3, 1, 1))
    mids = [(r["start_s"] + r["end_s"]) / 120 for r in rows]
    for key, style in P95_LINES:
        latency.plot(mids, [r[key] if r[key] is not None else np.nan for r in rows], **style)
    first, last = drift_windows(rows)
    if first and last:
        drift = (last["p95_ms"] - first["p95_ms"]) / first["p95_ms"] if first["p95_ms"] else 0.0
        marks = [(r["start_s"] + r["end_s"]) / 120 for r in (first, last)]
        drift_style = {"ls": "none", "marker": "D", "ms": 8, "mfc": "none", "mec": "k"}
        latency.plot(marks, [first["p95_ms"], last["p95_ms"]], label=f"drift windows ({drift:+.1%})", **drift_style)
    latency.set_ylabel("p95 latency (ms)")
    latency.legend(fontsize=7, ncols=2)

    totals = total_rss(memory)
    times = sorted(totals)
    total.plot([t / 60 for t in times], [totals[t] for t in times], color="C2", lw=1.5, label="total RSS")
    after = [totals[t] for t in times if t >= warmup]
    if after:
        low, high = min(after), max(after)
        pad = max(0.15 * (high - low), 1.0)
        total.set_ylim(low - pad, high + pad)
        growth = memory_growth(memory, warmup)
        label = f"growth after warm-up: {growth:+.1f} MB"
        total.text(0.99, 0.05, label, transform=total.transAxes, ha="right", fontsize=8)
    total.set_ylabel("total RSS (MB)\n(scaled after warm-up)")

    for i, pid in enumerate(sorted({s.pid for s in memory})):
        mine = [s for s in memory if s.pid == pid and s.t >= warmup]
        if mine:  # the growth in the label too: flat processes' lines lie on each other at 0
            base, style = mine[0].rss_mb, PROCESS_STYLES[i % len(PROCESS_STYLES)]
            label = f"{mine[0].role} ({pid}): {mine[-1].rss_mb - base:+.1f} MB"
            change.plot([s.t / 60 for s in mine], [s.rss_mb - base for s in mine], ls=style, label=label)
    change.axhline(0, color="0.5", lw=0.8)
    change.set_ylabel("RSS change since\nwarm-up (MB)")
    change.set_xlabel("minutes")
    if change.get_legend_handles_labels()[0]:
        change.legend(fontsize=7)

    for ax in (latency, total, change):
        ax.axvspan(0, warmup / 60, color="0.5", alpha=0.12, lw=0)
        ax.grid(alpha=0.3)
    latency.set_title("soak: p95 per window, and the serving processes' memory (shaded: warm-up)", fontsize=9)
    fig.tight_layout()
    return fig


def plot(path: Path, rows: list[dict], memory: list[MemorySample], warmup: float) -> None:
    """Draw the soak figure (``draw``) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(rows, memory, warmup)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length, warm-up included (30)")
    parser.add_argument("--rate", type=float, help="requests per second; default: --load x the measured capacity")
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity to offer (0.7)")
    parser.add_argument("--capacity-seconds", type=float, default=60.0, help="length of the capacity run (60)")
    parser.add_argument("--capacity-concurrency", type=int, default=8, help="threads of the capacity run (8)")
    parser.add_argument("--warmup-minutes", type=float, default=3.0, help="left out of drift and growth (3)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per p95 window (60)")
    add_target_arguments(parser)
    parser.add_argument("--pid", type=int, help="the serving parent process (default: found by the ports)")
    parser.add_argument("--images", type=Path, default=Path("../shared/datasets/corrosion-pipes/original"))
    parser.add_argument("--count", type=int, default=4, help="how many photos of --images to cycle through (4)")
    parser.add_argument("--model", default="", help="model to call (default: the server's default)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds (60)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period (5)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/soak/<UTC time>)")
    args = parser.parse_args(argv)
    if args.warmup_minutes >= args.minutes:
        parser.error("--warmup-minutes must be shorter than --minutes")
    return args


def ports_of(target: Target) -> set[int]:
    """The HTTP and gRPC ports of the target."""
    return {urlsplit(target.http_url).port or 0, int(target.grpc_target.rsplit(":", 1)[1])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = args.out or Path("runs/soak") / args.started.replace(":", "")
    try:
        images = load_images(args.images, args.count)
        target = target_from_args(args)
        root = find_server_root(args.pid, ports_of(target))
        client = SegmentClient(target, args.timeout, connections=64)
        for transport in TRANSPORTS:  # reachable and answering, before anything is measured
            name, data = images[0]
            code = client.segment(transport, data, args.model, filename=name).code
            if code != "OK":
                raise SoakError(f"the server does not answer Segment over {transport}: {code}")
    except (SoakError, LookupError, OSError, ValueError, psutil.Error) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    print(f"serving processes: {root.pid} ({role_of(root)}) and {len(root.children(recursive=True))} children")
    capacity = None
    if args.rate is None:
        print(f"measuring capacity: {args.capacity_concurrency} threads for {args.capacity_seconds:.0f} s ...")
        try:
            capacity = measure_capacity(client, images, args.capacity_concurrency, args.capacity_seconds, args.model)
        except SoakError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 1
        rate = args.load * capacity
        print(f"capacity {capacity:.2f} requests/s; soaking at {rate:.2f} requests/s ({args.load:.0%})")
    else:
        rate = args.rate
    out.mkdir(parents=True, exist_ok=True)
    seconds, warmup = args.minutes * 60, args.warmup_minutes * 60
    print(f"soak: {args.minutes:g} min at {rate:.2f} requests/s over gRPC and HTTP, {len(images)} photos -> {out}")
    t0 = time.monotonic()
    sampler = MemorySampler(root, args.sample_seconds, t0)
    sampler.start()
    try:
        results = run_soak(client, images, rate, seconds, t0, args.model)
    finally:
        sampler.stop()
        client.close()
    seconds = max(seconds, max((r.start for r in results), default=0.0))
    rows = windows(results, sampler.samples, args.window, seconds, warmup)
    summary = summarize(args, rate, capacity, results, sampler.samples, rows, seconds, warmup)
    write_csv(out / "requests.csv", [asdict(r) for r in results])
    write_csv(out / "memory.csv", [asdict(s) for s in sampler.samples])
    write_csv(out / "windows.csv", rows)
    plot(out / "soak.png", rows, sampler.samples, warmup)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
    return 0 if all(summary["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
