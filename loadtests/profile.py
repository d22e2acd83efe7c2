"""Where a request's time goes in the running server: py-spy samples both service workers while Segment
requests run at each concurrency, and the samples are summed by stage of the hot path.

    python -m loadtests.profile --pid PID [--concurrency 1,8] [--seconds 20] [--image PATH] [--grpc TARGET]

PID is the `bentoml serve` process (make serve's); its children are the entry worker (transports, decoding,
answers) and the model worker (the forward pass). Idle samples (threads waiting on a socket, a lock or the
event loop) are left out: the shares are of the time a worker spent working, and "seconds working" says how
much that was (samples / RATE_HZ; a worker's threads are summed). Each client thread has a channel
of its own. The server's address, token and TLS come from its SEGSERVE_* settings; --grpc overrides the address.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.harness.client import Outcome, SegmentClient
from loadtests.harness.drive import for_seconds
from loadtests.harness.images import image_or_synthetic
from loadtests.harness.processes import service_workers
from loadtests.harness.stats import markdown_table
from loadtests.harness.target import Target, add_target_arguments, target_from_args

# Stage -> substrings of frames ("function (file:line)") that mark it; the first stage that matches a sample
# (from the innermost frame outwards) takes it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("forward pass (the engine)", ("Session.run", "predict_on_batch")),
    ("normalisation", ("normalize (segserve/imaging",)),
    ("probabilities to ids and confidences, packing", ("from_probabilities", "pack (segserve", "unpack (segserve")),
    ("decode photo", ("decode_image", "image_size (segserve")),
    ("resize to the model", ("resize_image",)),
    ("upsample mask", ("upsample_mask",)),
    ("confidence and review signals", ("confidence_of", "image_quality", "review_reasons", "agreement (segserve")),
    ("PNG/JPEG encoding, colours, overlay", ("encode_png", "encode_jpeg", "colorize", "overlay (segserve")),
    ("answer to JSON / protobuf", ("to_json", "SegmentResponse")),
    ("service-to-service call and its serialisation", ("_bentoml_impl/client", "serde", "_bentoml_sdk/io")),
    ("HTTP/gRPC transport, event loop", ("aiohttp", "h11", "starlette", "uvicorn", "grpc", "asyncio")),
    ("metrics", ("prometheus_client",)),
)
# Work done for the inspection history (thumbnails, database writes) goes to its own stage, whatever it calls.
HISTORY = ("inspection history (thumbnail, database write)", ("segserve/history/",))
IDLE = ("select (selectors", "Condition.wait", "_worker (concurrent", "Thread.run", "wait (threading", "sleep")


def stage_of(stack: str) -> str | None:
    """The stage of one sampled stack ("frame;frame;..." outermost first); None for an idle one."""
    frames = stack.split(";")
    if frames and any(k in frames[-1] for k in IDLE):
        return None
    if any(k in frame for frame in frames for k in HISTORY[1]):
        return HISTORY[0]
    for frame in reversed(frames):
        for stage, keys in STAGES:
            if any(k in frame for k in keys):
                return stage
    return "other Python"


def summarise(raw_file: Path) -> collections.Counter:
    """Working samples per stage in a py-spy raw file (one "stack count" a line)."""
    counts: collections.Counter = collections.Counter()
    for line in raw_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        stage = stage_of(stack)
        if stage is not None and n.isdigit():
            counts[stage] += int(n)
    return counts


def load(target: Target, image: bytes, concurrency: int, seconds: float) -> list[Outcome]:
    """Closed-loop gRPC Segment calls from ``concurrency`` threads, each with a channel of its own, for ``seconds``."""
    clients = [SegmentClient(target, timeout=120) for _ in range(concurrency)]
    try:
        outcomes, _ = for_seconds(lambda k: clients[k % concurrency].segment("grpc", image), concurrency, seconds)
    finally:
        for client in clients:
            client.close()
    return outcomes


RATE_HZ = 200  # py-spy samples a second


def record(pid: int, out: Path, seconds: float) -> subprocess.Popen:
    """py-spy recording ``pid`` at RATE_HZ for ``seconds``, raw stacks to ``out``."""
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    cmd = [py_spy, "record", "-p", str(pid), "-f", "raw", "-r", str(RATE_HZ), "-d", str(int(seconds)), "-o", str(out)]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True)
    add_target_arguments(parser, ("grpc",))
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--image", type=Path)
    args = parser.parse_args(argv)
    image, _ = image_or_synthetic(args.image)
    target = target_from_args(args)
    try:
        pids = service_workers(args.pid)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"`python -m loadtests.profile {' '.join(argv if argv is not None else sys.argv[1:])}`")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for level in (int(c) for c in args.concurrency.split(",")):
            recorders = {}
            for name, pid in pids.items():
                out = Path(tmp) / f"{name}-{level}.txt"
                recorders[name] = (record(pid, out, args.seconds), out)
            time.sleep(1)
            outcomes = load(target, image, level, args.seconds - 2)
            answered = sum(o.ok for o in outcomes)
            failed += len(outcomes) - answered
            for proc, _ in recorders.values():
                proc.wait(timeout=60)
            print(f"\n### Concurrency {level}: {answered} Segment requests over gRPC in {args.seconds - 2:.0f} s\n")
            cells = []
            for name, (_, out) in recorders.items():
                counts = summarise(out)
                total = sum(counts.values()) or 1
                cells += [
                    [name, stage, f"{100 * n / total:.0f}%", f"{n / RATE_HZ:.2f}"]
                    for stage, n in counts.most_common()
                    if n / total >= 0.01
                ]
            header = ["worker", "stage", "share of its working samples", "seconds working"]
            print(markdown_table(header, cells, align="llrr"))
    if failed:
        print(f"error: {failed} Segment calls failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
