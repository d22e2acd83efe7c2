"""What this machine does with the served model outside the server: the yardstick for the served numbers.

- raw: ``segserve.predictor`` on each backend, in this process, at several batch sizes (the served model's
  files from the BentoML store, exactly what the model service loads), with GFLOP/s from the model's FLOP count;
- naive: Keras ``model.predict`` on one image per call, what a server without batching or a lean call does.

``loadtests.bench`` runs these first, then the served system, and compares them in one table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from segserve import predictor, store


@dataclass
class RawRow:
    """Throughput of one way of running the model."""

    engine: str
    batch: int
    images: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def latency_ms(self) -> float:
        """Median time of one call."""
        return float(np.median(self.latencies_ms))


def model_flops(model, input_size: int) -> float:
    """Floating-point operations of one forward pass of a Keras model on one image (2 per multiply-add), from
    its convolution and dense layers; elementwise work (normalisation, activations, resizing) is left out."""
    import keras

    total = 0.0

    def visit(layer) -> None:
        nonlocal total
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
            return
        if not hasattr(layer, "kernel") or not hasattr(layer, "output"):
            return
        out = layer.output.shape  # (None, H, W, C) or (None, C)
        positions = float(np.prod([d for d in out[1:-1] if d is not None])) if len(out) > 2 else 1.0
        kernel = np.prod(layer.kernel.shape)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * positions * kernel  # kernel is (kh, kw, C, multiplier): one filter per channel
        elif isinstance(layer, keras.layers.SeparableConv2D):
            total += 2 * positions * (np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
        else:
            total += 2 * positions * kernel

    visit(model)
    if not total:
        raise ValueError(f"no convolution or dense layers found in {model.name} at input {input_size}")
    return total


def _time_calls(run, images: np.ndarray, min_seconds: float, min_calls: int) -> tuple[float, list[float], int]:
    run(images)  # warm-up: allocation, and tracing for TensorFlow
    latencies, done, started = [], 0, time.perf_counter()
    while done < min_calls or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        run(images)
        latencies.append((time.perf_counter() - t) * 1000)
        done += 1
    return time.perf_counter() - started, latencies, done * len(images)


def raw_rows(
    name: str, batches: tuple[int, ...], backends: tuple[str, ...], min_seconds: float, threads: int = 0
) -> tuple[list[RawRow], float]:
    """Throughput of the served ``corrosion-<name>`` per backend and batch size, and its FLOPs per image."""
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)

    model_dir, info = store.served_model(name)
    size = info.input_size
    rng = np.random.default_rng(0)
    rows = []
    # ONNX Runtime twice: as served (threads sleep between calls) and with spinning threads, its fastest alone.
    engines = [(b, False) for b in backends] + [("onnxruntime", True)] * ("onnxruntime" in backends)
    for backend, spinning in engines:
        run = predictor.load_predictor(model_dir, backend, size, threads, spinning)
        label = f"{backend} float32" + (", spinning threads" if spinning else "")
        for batch in batches:
            images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            seconds, latencies, n = _time_calls(run.predict, images, min_seconds, 3)
            rows.append(RawRow(label, batch, n, seconds, latencies))
    model = keras.saving.load_model(model_dir / predictor.KERAS_FILE, compile=False)
    flops = model_flops(model, size)

    def naive(images: np.ndarray) -> np.ndarray:
        from segserve import imaging

        return model.predict(imaging.normalize(images), verbose=0)

    one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    seconds, latencies, n = _time_calls(naive, one, min_seconds, 3)
    rows.append(RawRow("naive: Keras model.predict, one image per call", 1, n, seconds, latencies))
    return rows, flops
