"""Soak: a steady load at about 70% of the server's measured capacity, over gRPC and HTTP at once, for a long time.

    python -m loadtests.soak --minutes 30                      # against `make serve` on the default ports
    python -m loadtests.soak --minutes 30 --rate 2.5 --pid PID --http http://127.0.0.1:3000 --grpc 127.0.0.1:50051

1. Capacity (unless --rate is given): Segment requests from --capacity-concurrency threads, alternating transports,
   for --capacity-seconds; capacity = answered requests per second. The soak rate is --load (0.7) times that.
2. Soak: requests arrive at a constant rate (open loop: one every 1/rate s, alternating gRPC and HTTP, cycling
   through --count real photos from --images), each timed from its scheduled start, so a slow server cannot slow
   the offered load down. Meanwhile the resident memory (RSS) of every serving process is sampled: the process
   tree of --pid (the `bentoml serve` or `segserve serve` parent), or, without it, of whatever listens on the HTTP
   and gRPC ports.
3. Report, in --out (default runs/soak/<UTC time>/): requests.csv (one row a request), memory.csv (one row a sample
   and process), windows.csv (per --window seconds: requests, errors, p50/p95 per transport, RSS), soak.png (p95
   and RSS over time) and summary.json, printed too: errors by code, p95 drift (last full window after warm-up
   against the first one) and memory growth after warm-up, against the goals of issue 8 (0 errors, p95 drift under
   10%, under 50 MB of growth). The exit status is 1 when a goal is missed or the server cannot be reached.

Run it on a quiet machine: other work on the same cores shows up as p95 drift.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

TRANSPORTS = ("grpc", "http")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
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
    code: str  # OK, a gRPC status name or an HTTP status

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass
class MemorySample:
    t: float
    pid: int
    role: str
    rss_mb: float


class Client:
    """Segment over both transports: one gRPC channel and one httpx.Client, shared by all threads."""

    def __init__(self, http_url: str, grpc_target: str, model: str, timeout: float, connections: int) -> None:
        self.model = model
        self.timeout = timeout
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.Client(base_url=http_url, timeout=timeout, limits=limits)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self.channel = grpc.insecure_channel(grpc_target, options=options)
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)

    def segment(self, transport: str, name: str, image: bytes) -> str:
        """One Segment call; returns "OK" or the error's code."""
        if transport == "grpc":
            try:
                self.stub.Segment(pb.SegmentRequest(image=image, model=self.model), timeout=self.timeout)
            except grpc.RpcError as exc:
                return exc.code().name
            return "OK"
        try:
            answer = self.http.post("/segment", files={"image": (name, image)}, data={"model": self.model})
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return "OK" if answer.status_code == 200 else f"HTTP {answer.status_code}"

    def close(self) -> None:
        self.http.close()
        self.channel.close()


def load_images(directory: Path, count: int) -> list[tuple[str, bytes]]:
    """The first `count` photos of directory (sorted by name), as (name, bytes)."""
    if not directory.is_dir():
        raise SoakError(f"no image folder {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise SoakError(f"no images in {directory}")
    return [(p.name, p.read_bytes()) for p in paths]


def _listening_pids(ports: set[int]) -> set[int]:
    pids = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid:
            pids.add(conn.pid)
    return pids


def _is_server(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "bentoml" in cmdline or "segserve" in cmdline or "_bentoml_impl" in cmdline


def find_server_root(pid: int | None, ports: set[int]) -> psutil.Process:
    """The serving process tree's root: --pid, or the topmost segserve/bentoml ancestor of a port's listener."""
    if pid is not None:
        try:
            return psutil.Process(pid)
        except psutil.NoSuchProcess as exc:
            raise SoakError(f"no process {pid}") from exc
    listeners = _listening_pids(ports)
    if not listeners:
        raise SoakError(f"no process listens on ports {sorted(ports)}; pass --pid of the `bentoml serve` process")
    root = psutil.Process(min(listeners))
    while (parent := root.parent()) is not None and _is_server(parent):
        root = parent
    return root


def role_of(proc: psutil.Process) -> str:
    """A short name for a serving process: the BentoML service it runs, or its program."""
    try:
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    for flag in ("--service-name", "--runner-name"):
        if flag in args and args.index(flag) + 1 < len(args):
            return args[args.index(flag) + 1]
    joined = " ".join(args)
    for word in ("bentoml serve", "segserve.cli", "prometheus", "circus"):
        if word in joined:
            return word.replace(" ", "-")
    return proc.name()


class MemoryMonitor(threading.Thread):
    """Samples the RSS of the root process and all its descendants every `period` seconds."""

    def __init__(self, root: psutil.Process, period: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.root, self.period, self.t0 = root, period, t0
        self.samples: list[MemorySample] = []
        self.stopped = threading.Event()

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                rss = proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.samples.append(MemorySample(round(now, 2), proc.pid, role_of(proc), round(rss, 1)))

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.period)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample()


def measure_capacity(client: Client, images: list[tuple[str, bytes]], concurrency: int, seconds: float) -> float:
    """Answered Segment requests per second with `concurrency` threads, transports alternating."""
    stop = time.monotonic() + seconds
    counts = Counter()
    lock = threading.Lock()

    def worker(i: int) -> None:
        n = i
        while time.monotonic() < stop:
            name, data = images[n % len(images)]
            code = client.segment(TRANSPORTS[n % 2], name, data)
            with lock:
                counts[code] += 1
            n += concurrency

    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    elapsed = time.monotonic() - start
    errors = sum(v for k, v in counts.items() if k != "OK")
    if errors:
        raise SoakError(f"{errors} requests failed while measuring capacity: {dict(counts)}")
    return counts["OK"] / elapsed


def run_soak(client: Client, images: list[tuple[str, bytes]], rate: float, seconds: float, t0: float) -> list[Result]:
    """Open loop: request k is due at t0 + k / rate; its latency counts from then, however late it leaves."""
    results: list[Result] = []
    lock = threading.Lock()

    def one(k: int, due: float) -> None:
        transport = TRANSPORTS[k % 2]
        name, data = images[(k // 2) % len(images)]
        sent = time.monotonic()
        code = client.segment(transport, name, data)
        done = time.monotonic()
        result = Result(
            start=round(due - t0, 4),
            transport=transport,
            image=name,
            latency_ms=round((done - due) * 1000, 2),
            service_ms=round((done - sent) * 1000, 2),
            code=code,
        )
        with lock:
            results.append(result)

    total = int(seconds * rate)
    workers = max(8, int(rate * client.timeout) + 1)  # enough that a slow answer never delays the next send
    with ThreadPoolExecutor(min(workers, 256)) as pool:
        for k in range(total):
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, k, due)
    return sorted(results, key=lambda r: r.start)


def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def windows(results: list[Result], memory: list[MemorySample], width: float, seconds: float, warmup: float):
    """Rows per window of `width` seconds: requests, errors, p50/p95 overall and per transport, mean total RSS."""
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
        totals = _total_rss(memory, lo, hi)
        row["rss_total_mb"] = round(float(np.mean(list(totals.values()))), 1) if totals else None
        rows.append(row)
    return rows


def _total_rss(memory: list[MemorySample], lo: float, hi: float) -> dict[float, float]:
    """Sum of RSS over the serving processes, per sample time in [lo, hi]."""
    totals: dict[float, float] = {}
    for s in memory:
        if lo <= s.t <= hi:
            totals[s.t] = totals.get(s.t, 0.0) + s.rss_mb
    return totals


def summarize(args, rate, capacity, results, memory, rows, seconds, warmup) -> dict:
    codes = Counter(r.code for r in results if not r.ok)
    soak_rows = [r for r in rows if r["phase"] == "soak" and r["full"] and r["p95_ms"] is not None]
    first, last = (soak_rows[0], soak_rows[-1]) if soak_rows else (None, None)
    drift = (last["p95_ms"] - first["p95_ms"]) / first["p95_ms"] if first and first["p95_ms"] else None
    after = _total_rss(memory, warmup, seconds + 3600)
    growth = None
    per_process = {}
    if after:
        times = sorted(after)
        growth = round(after[times[-1]] - after[times[0]], 1)
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


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, rows: list[dict], memory: list[MemorySample], warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    mids = [(r["start_s"] + r["end_s"]) / 120 for r in rows]
    for key, label in (("p95_ms", "both"), ("grpc_p95_ms", "gRPC"), ("http_p95_ms", "HTTP")):
        ax1.plot(mids, [r[key] if r[key] is not None else np.nan for r in rows], marker="o", ms=3, label=label)
    ax1.set_ylabel("p95 latency (ms)")
    ax1.legend(fontsize=8)
    for pid in sorted({s.pid for s in memory}):
        mine = [s for s in memory if s.pid == pid]
        ax2.plot([s.t / 60 for s in mine], [s.rss_mb for s in mine], label=f"{mine[0].role} ({pid})")
    ax2.set_ylabel("RSS (MB)")
    ax2.set_xlabel("minutes")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.axvline(warmup / 60, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
    ax1.set_title("soak: p95 per window and RSS per serving process (dotted: end of warm-up)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    http_port = os.environ.get("SEGSERVE_HTTP_PORT", "3000")
    grpc_port = os.environ.get("SEGSERVE_GRPC_PORT", "50051")
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length, warm-up included (30)")
    parser.add_argument("--rate", type=float, help="requests per second; default: --load x the measured capacity")
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity to offer (0.7)")
    parser.add_argument("--capacity-seconds", type=float, default=60.0, help="length of the capacity run (60)")
    parser.add_argument("--capacity-concurrency", type=int, default=8, help="threads of the capacity run (8)")
    parser.add_argument("--warmup-minutes", type=float, default=3.0, help="left out of drift and growth (3)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per p95 window (60)")
    parser.add_argument("--http", default=f"http://127.0.0.1:{http_port}", help="HTTP base URL")
    parser.add_argument("--grpc", default=f"127.0.0.1:{grpc_port}", help="gRPC target")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = args.out or Path("runs/soak") / args.started.replace(":", "")
    try:
        images = load_images(args.images, args.count)
        ports = {int(args.http.rsplit(":", 1)[1].split("/")[0]), int(args.grpc.rsplit(":", 1)[1])}
        root = find_server_root(args.pid, ports)
        client = Client(args.http, args.grpc, args.model, args.timeout, connections=64)
        for transport in TRANSPORTS:  # reachable and answering, before anything is measured
            code = client.segment(transport, *images[0])
            if code != "OK":
                raise SoakError(f"the server does not answer Segment over {transport}: {code}")
    except (SoakError, OSError, ValueError, psutil.Error) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    print(f"serving processes: {root.pid} ({role_of(root)}) and {len(root.children(recursive=True))} children")
    capacity = None
    if args.rate is None:
        print(f"measuring capacity: {args.capacity_concurrency} threads for {args.capacity_seconds:.0f} s ...")
        try:
            capacity = measure_capacity(client, images, args.capacity_concurrency, args.capacity_seconds)
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
    monitor = MemoryMonitor(root, args.sample_seconds, t0)
    monitor.start()
    try:
        results = run_soak(client, images, rate, seconds, t0)
    finally:
        monitor.stop()
        client.close()
    seconds = max(seconds, max((r.start for r in results), default=0.0))
    rows = windows(results, monitor.samples, args.window, seconds, warmup)
    summary = summarize(args, rate, capacity, results, monitor.samples, rows, seconds, warmup)
    write_csv(out / "requests.csv", [asdict(r) for r in results])
    write_csv(out / "memory.csv", [asdict(s) for s in monitor.samples])
    write_csv(out / "windows.csv", rows)
    plot(out / "soak.png", rows, monitor.samples, warmup)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
    return 0 if all(summary["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
