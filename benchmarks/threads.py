"""A forward pass on one thread per core of the host against one per CPU this process may use, side by side.

    BENTOML_HOME=... python -m benchmarks.threads --model unet-vgg16 --rounds 20

``os.cpu_count()`` counts the host's cores; ``segserve.engines.usable_cpus`` (what ``SEGSERVE_MODEL_THREADS=0``
gives the model service) counts the CPUs of the process's affinity, capped by a cgroup CPU quota. Run this
where the limit is (a container started with ``--cpus``, a pod with ``limits.cpu``, a cgroup with a CPU quota):
the served model's files from the store, ONNX Runtime and OpenVINO in float32 at batch 1, the two thread counts
interleaved call by call so that a load on the machine weighs on both alike. Without a limit the two counts are
the same and there is one row per engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loadtests.harness.stats import fmt, markdown_table, percentile
from segserve import engines, predictor, store

BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Row:
    """Single-image latencies of one engine on ``threads`` threads."""

    backend: str
    threads: int
    latencies_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)


def thread_counts(host: int | None = None, usable: int | None = None) -> tuple[int, ...]:
    """The counts compared: the host's cores and the usable CPUs (one count where they agree)."""
    host = (os.cpu_count() or 1) if host is None else host
    usable = engines.usable_cpus() if usable is None else usable
    return tuple(sorted({host, usable}))


def measure(
    load: Callable[[str, int], predictor.Predictor], image: np.ndarray, counts: tuple[int, ...], rounds: int
) -> list[Row]:
    """``rounds`` calls of every engine at every count, interleaved, after one warm-up call each."""
    runs = {(b, n): load(b, n) for b in BACKENDS for n in counts}
    for run in runs.values():
        run.predict(image)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            started = time.perf_counter()
            run.predict(image)
            times[key].append((time.perf_counter() - started) * 1000)
    return [Row(b, n, times[(b, n)]) for b, n in runs]


def table(rows: list[Row], usable: int) -> str:
    """Markdown: each engine and count with p50, p90 and the slowest call, and p50 against the usable count's."""
    base = {r.backend: r.median_ms for r in rows if r.threads == usable}
    header = ["engine", "threads", "calls", "p50 (ms)", "p90 (ms)", "slowest (ms)", "p50 / usable's"]
    cells = [
        [
            f"{r.backend} f32",
            r.threads,
            len(r.latencies_ms),
            fmt(r.median_ms),
            fmt(percentile(r.latencies_ms, 90)),
            fmt(max(r.latencies_ms)),
            fmt(r.median_ms / base[r.backend], 2),
        ]
        for r in rows
    ]
    return markdown_table(header, cells, "lrrrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unet-vgg16", help="a served model in the store (default unet-vgg16)")
    parser.add_argument("--rounds", type=int, default=20, help="calls per engine and thread count (default 20)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    try:
        model_dir, info = store.served_model(args.model)
    except Exception as exc:  # not imported, or no store at BENTOML_HOME
        print(f"error: the model {args.model!r} is not in the store ({exc}); run `make models`", file=sys.stderr)
        return 2
    usable = engines.usable_cpus()
    size = info.input_size
    print(f"host cores {os.cpu_count()}, CPU quota {engines.cgroup_cpu_quota()}, usable CPUs {usable}", flush=True)
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)

    def load(backend: str, threads: int) -> predictor.Predictor:
        return predictor.load_predictor(model_dir, backend, size, threads)

    print(table(measure(load, image, thread_counts(usable=usable), args.rounds), usable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
