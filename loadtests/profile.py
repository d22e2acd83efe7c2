"""Where a request's time goes in the running server: py-spy samples both service workers while Segment
requests run at each concurrency, and the samples are summed by stage of the hot path.

    python -m loadtests.profile --pid PID [--concurrency 1,8] [--seconds 20] [--image PATH] [--grpc TARGET]

PID is the `bentoml serve` process (make serve's); its children are the entry worker (transports, decoding,
answers) and the model worker (the forward pass). Idle samples (threads waiting on a socket, a lock or the
event loop) are left out: the shares are of the time a worker spent working.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil

from loadtests.images import synthetic_png
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

# Stage -> substrings of frames ("function (file:line)") that mark it; the first stage that matches a sample
# (from the innermost frame outwards) takes it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("forward pass (ONNX Runtime / TensorFlow)", ("Session.run", "predict_on_batch")),
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
IDLE = ("select (selectors", "Condition.wait", "_worker (concurrent", "Thread.run", "wait (threading", "sleep")


def workers(pid: int) -> dict[str, int]:
    """{"entry": pid, "model": pid} of a `bentoml serve` process's service workers."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        cmdline = " ".join(child.cmdline())
        if "_bentoml_impl.worker.service" not in cmdline:
            continue
        found["model" if "segserve-models" in cmdline else "entry"] = child.pid
    if set(found) != {"entry", "model"}:
        raise SystemExit(f"process {pid} has no segserve entry and model workers: is it `bentoml serve`?")
    return found


def stage_of(stack: str) -> str | None:
    frames = stack.split(";")
    if frames and any(k in frames[-1] for k in IDLE):
        return None
    for frame in reversed(frames):
        for stage, keys in STAGES:
            if any(k in frame for k in keys):
                return stage
    return "other Python"


def summarise(raw_file: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in raw_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        stage = stage_of(stack)
        if stage is not None and n.isdigit():
            counts[stage] += int(n)
    return counts


def load(target: str, image: bytes, concurrency: int, seconds: float) -> int:
    done = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal done
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)
            while time.monotonic() < stop_at:
                stub.Segment(pb.SegmentRequest(image=image), timeout=120)
                with lock:
                    done += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--grpc", default=f"127.0.0.1:{os.environ.get('SEGSERVE_GRPC_PORT', '50051')}")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--image", type=Path)
    args = parser.parse_args(argv)
    image = args.image.read_bytes() if args.image else synthetic_png()
    pids = workers(args.pid)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    print(f"`python -m loadtests.profile {' '.join(argv if argv is not None else sys.argv[1:])}`")
    with tempfile.TemporaryDirectory() as tmp:
        for level in (int(c) for c in args.concurrency.split(",")):
            recorders = {}
            for name, pid in pids.items():
                out = Path(tmp) / f"{name}-{level}.txt"
                cmd = [
                    py_spy,
                    "record",
                    "-p",
                    str(pid),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                    "-d",
                    str(int(args.seconds)),
                    "-o",
                    str(out),
                    "--nonblocking",
                ]
                recorders[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
            time.sleep(1)
            requests = load(args.grpc, image, level, args.seconds - 2)
            for proc, _ in recorders.values():
                proc.wait(timeout=60)
            print(f"\n### Concurrency {level}: {requests} Segment requests over gRPC in {args.seconds - 2:.0f} s\n")
            print("| worker | stage | share of its working samples |\n|---|---|---:|")
            for name, (_, out) in recorders.items():
                counts = summarise(out)
                total = sum(counts.values()) or 1
                for stage, n in counts.most_common():
                    if n / total >= 0.01:
                        print(f"| {name} | {stage} | {100 * n / total:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
