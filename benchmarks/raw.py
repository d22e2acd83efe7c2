"""What this machine does with the served model outside the server: the yardstick for the served numbers.

- raw: ``segserve.predictor`` on every engine (backend and precision) this machine runs, in this process, at
  several batch sizes (the served model's files from the BentoML store, exactly what the model service loads),
  with GFLOP/s from the model's FLOP count and, given labelled photos, each engine's parity with ONNX Runtime
  float32 (``segserve.parity``: pixel agreement and mean IoU);
- naive: Keras ``model.predict`` on one image per call, what a server without batching or a lean call does.

``loadtests.bench`` runs these first, then the served system, and compares them in one table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segserve import engines, parity, predictor, store

REFERENCE = "onnxruntime f32"


@dataclass(frozen=True)
class EngineSpec:
    """One way of running the model: a backend at a precision (ONNX Runtime also with spinning threads)."""

    backend: str
    precision: str = "f32"
    spinning: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + (", spinning threads" if self.spinning else "")


def engines_here(backends: tuple[str, ...]) -> list[EngineSpec]:
    """The engines of ``backends`` this machine runs: every backend in float32, ONNX Runtime also with spinning
    threads, OpenVINO also in bfloat16 where the CPU has it natively."""
    specs = []
    for backend in sorted(backends, key=lambda b: b != "onnxruntime"):  # the reference first
        specs.append(EngineSpec(backend))
        if backend == "onnxruntime":
            specs.append(EngineSpec(backend, spinning=True))
        if backend == "openvino" and engines.native_bf16():
            specs.append(EngineSpec(backend, "bf16"))
    return specs


@dataclass
class RawRow:
    """Throughput of one way of running the model, and its parity with ONNX Runtime float32 (None: unchecked)."""

    engine: str
    batch: int
    images: int
    seconds: float
    latencies_ms: list[float]
    parity: dict | None = None

    @property
    def passes_parity(self) -> bool:
        return self.engine.startswith(REFERENCE) or bool(self.parity and self.parity["passed"])

    @property
    def throughput(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def latency_ms(self) -> float:
        """Median time of one call."""
        return float(np.median(self.latencies_ms))


def model_flops(onnx_path: str | Path, input_size: int) -> float:
    """Floating-point operations of one forward pass on one image (2 per multiply-add), from the model's ONNX
    graph with its shapes inferred at ``input_size``: every Conv, ConvTranspose, MatMul and Gemm. Elementwise
    work (normalisation, activations, resizing) is left out."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, input_size, input_size, 3), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    graph = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output})
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    total = 0.0
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            kernel = weights[node.input[1]]  # (out, in / groups, kh, kw); ConvTranspose: (in, out / groups, ...)
            out = shapes.get(node.output[0])
            if not out or 0 in out:
                raise ValueError(f"no inferred shape for {node.name}'s output")
            # per output element, one multiply-add for each weight feeding it: (in / groups) * kh * kw
            fan_in = float(np.prod(kernel[1:])) if node.op_type == "Conv" else kernel[0] * float(np.prod(kernel[2:]))
            total += 2 * float(np.prod(out[1:])) * fan_in
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            k, n = weights[node.input[1]][-2:]
            rows = shapes.get(node.output[0], [1])
            total += 2 * float(np.prod(rows[:-1]) or 1) * k * n
    if not total:
        raise ValueError(f"no convolution or dense layers found in {onnx_path}")
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
    name: str,
    batches: tuple[int, ...],
    backends: tuple[str, ...],
    min_seconds: float,
    threads: int = 0,
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[RawRow], float]:
    """Throughput of the served ``corrosion-<name>`` per engine and batch size, and its FLOPs per image.

    labelled: (images (N, S, S, 3), truth (N, S, S)) at the model's input size: each engine's masks on them are
    compared with ONNX Runtime float32's (``segserve.parity.compare``).
    """
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)

    model_dir, info = store.served_model(name)
    size = info.input_size
    rng = np.random.default_rng(0)
    rows = []
    reference_masks = None
    for spec in engines_here(backends):
        run = predictor.load_predictor(
            model_dir, spec.backend, size, threads, spec.spinning, spec.precision, str(store.openvino_cache_dir())
        )
        checked = None
        if labelled is not None:
            masks = parity.masks(run, labelled[0])
            if spec.label == REFERENCE:
                reference_masks = masks
            if reference_masks is not None:
                checked = parity.compare(reference_masks, masks, labelled[1])
        for batch in batches:
            images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            seconds, latencies, n = _time_calls(run.predict, images, min_seconds, 3)
            rows.append(RawRow(spec.label, batch, n, seconds, latencies, checked))
    model = keras.saving.load_model(model_dir / predictor.KERAS_FILE, compile=False)
    flops = model_flops(model_dir / predictor.ONNX_FILE, size)

    def naive(images: np.ndarray) -> np.ndarray:
        from segserve import imaging

        return model.predict(imaging.normalize(images), verbose=0)

    one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    seconds, latencies, n = _time_calls(naive, one, min_seconds, 3)
    rows.append(RawRow("naive: Keras model.predict, one image per call", 1, n, seconds, latencies))
    return rows, flops
