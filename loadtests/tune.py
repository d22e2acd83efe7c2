"""Try serving configurations side by side: for each, start `segserve serve` with its settings on free ports,
measure gRPC Segment throughput and latency at concurrency 1 and 8, stop it; one table at the end.

    BENTOML_HOME=... python -m loadtests.tune [--requests 64] [--image PATH] \\
        --config "default:" --config "batch 4:SEGSERVE_MAX_BATCH_SIZE=4" \\
        --config "2 workers x 1 thread:SEGSERVE_MODEL_WORKERS=2,SEGSERVE_MODEL_THREADS=1"

A config is "label:VAR=VALUE,VAR=VALUE" (SEGSERVE_* settings). Run it on a quiet machine: every row shares it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtests.bench import Bench
from loadtests.images import synthetic_png

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(settings: dict[str, str], log: Path) -> tuple[subprocess.Popen, int, int]:
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        **settings,
        "SEGSERVE_HTTP_PORT": str(http_port),
        "SEGSERVE_GRPC_PORT": str(grpc_port),
        "SEGSERVE_GRPC_HOST": "127.0.0.1",
    }
    cmd = [sys.executable, "-m", "segserve.cli", "serve"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if health.status == health_pb2.HealthCheckResponse.SERVING:
                return proc, http_port, grpc_port
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not come up: {log.read_text()[-2000:]}")


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    label, _, pairs = text.partition(":")
    settings = {}
    for pair in filter(None, (p.strip() for p in pairs.split(","))):
        key, _, value = pair.partition("=")
        if not key.startswith("SEGSERVE_"):
            raise SystemExit(f"{key!r} is not a SEGSERVE_ setting")
        settings[key] = value
    return label, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", required=True, help='"label:VAR=VALUE,VAR=VALUE"')
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--model", default="deeplabv3plus")
    args = parser.parse_args(argv)
    rows = []
    for label, settings in map(parse_config, args.config):
        log = Path(f"/tmp/segserve-tune-{os.getpid()}.log")
        proc, http_port, grpc_port = start(settings, log)
        try:
            bench_args = argparse.Namespace(
                http=f"http://127.0.0.1:{http_port}",
                grpc=f"127.0.0.1:{grpc_port}",
                model=args.model,
                timeout=120.0,
                requests=args.requests,
            )
            image = args.image.read_bytes() if args.image else synthetic_png()
            bench = Bench(bench_args, image)
            try:
                bench.check()
                for _ in range(8):  # warm the path at the batch sizes concurrency 8 makes
                    bench.segment("grpc")
                one, eight = bench.run("grpc", 1), bench.run("grpc", 8)
            finally:
                bench.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        rows.append((label, settings, one, eight))
        print(f"{label}: c=1 {one.throughput:.2f}/s, c=8 {eight.throughput:.2f}/s", file=sys.stderr, flush=True)
    print(
        "| configuration | settings | c=1 images/s | c=1 p50 / p99 (ms) | c=8 images/s | c=8 p50 / p99 (ms) "
        "| c=8 mean batch | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, settings, one, eight in rows:
        described = ", ".join(f"{k}={v}" for k, v in settings.items()) or "(defaults)"
        print(
            f"| {label} | {described} | {one.throughput:.2f} | {one.percentile(50):.0f} / {one.percentile(99):.0f} "
            f"| {eight.throughput:.2f} | {eight.percentile(50):.0f} / {eight.percentile(99):.0f} "
            f"| {eight.mean_batch or 0:.2f} | {one.errors + eight.errors} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
