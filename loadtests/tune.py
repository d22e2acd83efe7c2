"""Try serving configurations side by side: for each, start `bentoml serve` of the service with its settings on
free ports, measure gRPC Segment throughput and latency at concurrency 1 and 8, stop it; one table at the end.

    BENTOML_HOME=... python -m loadtests.tune [--requests 64] [--image PATH] [--model NAME] \\
        --config "default:" --config "batch 4:SEGSERVE_MAX_BATCH_SIZE=4" \\
        --config "2 workers x 1 thread:SEGSERVE_MODEL_WORKERS=2,SEGSERVE_MODEL_THREADS=1"

A config is "label:VAR=VALUE,VAR=VALUE" (SEGSERVE_* settings). Each server's output is kept in --logs (default: a
temporary folder, removed at the end). Run it on a quiet machine: every row shares it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from loadtests.harness.drive import Level, measure_level
from loadtests.harness.images import image_or_synthetic
from loadtests.harness.launcher import start_server, stop_server, wait_until_serving
from loadtests.harness.stats import fmt, markdown_table

LEVELS = (1, 8)
WARM_UP_CALLS = 8  # warm the path at the batch sizes concurrency 8 makes


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """("label", {"SEGSERVE_X": "value", ...}) of "label:SEGSERVE_X=value,..."."""
    label, _, pairs = text.partition(":")
    settings = {}
    for pair in filter(None, (p.strip() for p in pairs.split(","))):
        key, _, value = pair.partition("=")
        if not key.startswith("SEGSERVE_"):
            raise SystemExit(f"{key!r} is not a SEGSERVE_ setting")
        settings[key] = value
    return label, settings


def measure(settings: dict[str, str], log: Path, image: bytes, model: str, requests: int) -> dict[int, Level]:
    """Start a server with ``settings``, measure gRPC Segment at each of LEVELS, stop it."""
    server = start_server(log, settings)
    try:
        wait_until_serving(server, timeout=240)
        with server.client(timeout=120) as client:
            name = client.model_info(model)["name"]
            for _ in range(WARM_UP_CALLS):
                client.segment("grpc", image, model).check()
            return {c: measure_level(client, "grpc", image, requests, c, model, name) for c in LEVELS}
    finally:
        stop_server(server, timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help='"label:VAR=VALUE,VAR=VALUE"')
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--model", default="", help="model name; empty for the server's default")
    parser.add_argument("--logs", type=Path, help="folder for the servers' output (default: a temporary one)")
    args = parser.parse_args(argv)
    image, _ = image_or_synthetic(args.image)
    configs = [parse_config(c) for c in args.config]
    rows = []
    with tempfile.TemporaryDirectory(prefix="segserve-tune-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for i, (label, settings) in enumerate(configs):
            levels = measure(settings, logs / f"serve-{i}.log", image, args.model, args.requests)
            rows.append((label, settings, levels))
            one, eight = levels[1], levels[8]
            print(f"{label}: c=1 {one.throughput:.2f}/s, c=8 {eight.throughput:.2f}/s", file=sys.stderr, flush=True)
    header = ["configuration", "settings", "c=1 images/s", "c=1 p50 / p99 (ms)", "c=8 images/s"]
    header += ["c=8 p50 / p99 (ms)", "c=8 mean batch", "errors"]
    cells = []
    for label, settings, levels in rows:
        one, eight = levels[1], levels[8]
        described = ", ".join(f"{k}={v}" for k, v in settings.items()) or "(defaults)"
        cells.append(
            [
                label,
                described,
                fmt(one.throughput, 2),
                f"{fmt(one.percentile(50), 0)} / {fmt(one.percentile(99), 0)}",
                fmt(eight.throughput, 2),
                f"{fmt(eight.percentile(50), 0)} / {fmt(eight.percentile(99), 0)}",
                fmt(eight.mean_batch or 0, 2),
                one.errors + eight.errors,
            ]
        )
    print(markdown_table(header, cells, align="llrrrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
