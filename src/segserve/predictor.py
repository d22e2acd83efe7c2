"""Running a model: loading it for a backend, input normalisation, the forward pass, and turning class
probabilities into what an answer needs. The one place serving and training do any of it.

The model service, ``training.evaluate``, the training loop's validation and the reports all go through
``Predictor``, so what training measures is what serving answers. Three backends run the same model:

- ``openvino``: the ONNX export (``model.onnx``, written beside the Keras model when it enters the store)
  compiled by OpenVINO for the CPU, in float32 or bfloat16 (``f32`` / ``bf16``; see ``segserve.engines``
  for which a machine gets), the compiled model cached on disk;
- ``onnxruntime``: the same ONNX file on ONNX Runtime's CPU provider (float32);
- ``tensorflow``: the Keras model (``model.keras`` in the store).

The model service answers with ``pack``-ed class ids and confidences (uint8), not float probabilities:
that is all an answer needs, and a fraction of the bytes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segserve import imaging
from segserve.engines import usable_cpus

logger = logging.getLogger("segserve")

BACKENDS = ("openvino", "onnxruntime", "tensorflow")
PRECISIONS = ("f32", "bf16")
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
ONNX_INPUT = "image"
ONNX_OPSET = 17


@dataclass(frozen=True)
class Prediction:
    """What answers need from a model, for a batch at the model's input size.

    mask: class ids uint8 (N, S, S), the argmax. top: the top class probability float32 (N, S, S).
    members: for an ensemble, each member model's own class ids uint8 (M, N, S, S); else None.
    """

    mask: np.ndarray
    top: np.ndarray
    members: np.ndarray | None = None


def from_probabilities(probs: np.ndarray, members: np.ndarray | None = None) -> Prediction:
    """A Prediction from class probabilities (N, S, S, C)."""
    probs = np.asarray(probs)
    return Prediction(mask=probs.argmax(axis=-1).astype(np.uint8), top=probs.max(axis=-1), members=members)


def pack(prediction: Prediction) -> np.ndarray:
    """The model service's wire format: uint8 (N, S, S, 2 + M) holding class ids, the top probability
    quantised to 1/255, and the ids of each ensemble member (M = 0 for a single model)."""
    top = np.rint(np.clip(prediction.top, 0.0, 1.0) * 255).astype(np.uint8)
    planes = [prediction.mask, top]
    if prediction.members is not None:
        planes.extend(prediction.members)
    return np.stack(planes, axis=-1)


def unpack(packed: np.ndarray) -> Prediction:
    """The inverse of ``pack`` (the top probability to within 1/510)."""
    packed = np.asarray(packed)
    members = np.moveaxis(packed[..., 2:], -1, 0) if packed.shape[-1] > 2 else None
    return Prediction(mask=packed[..., 0], top=packed[..., 1].astype(np.float32) / 255, members=members)


class OnnxModel:
    """An ONNX Runtime session with the Keras model's ``predict_on_batch`` (float32 NHWC in, probabilities out)."""

    def __init__(self, path: str | Path, threads: int = 0, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or usable_cpus()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


class OpenVinoModel:
    """An ONNX file compiled by OpenVINO for the CPU, with the Keras model's ``predict_on_batch``.

    precision: ``f32`` or ``bf16`` (OpenVINO's inference precision hint; bfloat16 only pays where the CPU
    has it natively). cache_dir: where OpenVINO keeps compiled models, so a restart skips compilation.
    Each calling thread gets its own infer request (one request is not safe to share between threads).
    """

    def __init__(self, path: str | Path, precision: str = "f32", threads: int = 0, cache_dir: str | None = None):
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        core = ov.Core()
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or usable_cpus()),
        }
        self.precision = precision
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._local = threading.local()

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return request.get_output_tensor(0).data.copy()


class Predictor:
    """A segmentation model behind a small interface, whatever runs it.

    model: a Keras model or an OnnxModel (anything with ``predict_on_batch`` on normalised float32 input).
    flip: horizontal-flip test-time augmentation, the mean of the probabilities of the image and of its
        mirror image (twice the model time).
    """

    def __init__(self, model: Any, flip: bool = False, backend: str = "tensorflow", precision: str = "f32") -> None:
        self.model = model
        self.flip = flip
        self.backend = backend
        self.precision = precision

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) at the model's input size -> class probabilities float32 (N, S, S, C)."""
        x = imaging.normalize(images)
        probs = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        if self.flip:
            mirrored = np.asarray(self.model.predict_on_batch(np.ascontiguousarray(x[:, :, ::-1])), dtype=np.float32)
            probs = (probs + mirrored[:, :, ::-1]) / 2
        return probs

    def predict(self, images: np.ndarray) -> Prediction:
        """RGB uint8 (N, S, S, 3) -> class ids and confidences."""
        return from_probabilities(self.probabilities(images))


def predict_ensemble(predictors: list[Predictor], images: np.ndarray) -> Prediction:
    """The mean of several models' probabilities, with each member's own class ids kept for their agreement."""
    probs = [p.probabilities(images) for p in predictors]
    members = np.stack([p.argmax(axis=-1).astype(np.uint8) for p in probs])
    return from_probabilities(np.mean(probs, axis=0), members)


def export_onnx(model: Any, path: str | Path, input_size: int) -> Path:
    """Write the Keras model as ONNX (batch dimension free, input ``image`` (N, S, S, 3) float32) with tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=ONNX_INPUT),)
    forward = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))
    return Path(path)


def load_predictor(
    model_dir: str | Path,
    backend: str,
    input_size: int,
    threads: int = 0,
    spinning: bool = False,
    precision: str = "f32",
    cache_dir: str | None = None,
) -> Predictor:
    """Load the model stored in ``model_dir`` for ``backend`` (one of BACKENDS) at ``precision``.

    precision: ``bf16`` only on OpenVINO (the others compute in float32). spinning: ONNX Runtime's threads
    spin while waiting for work. cache_dir: OpenVINO's compiled-model cache.
    A store model saved before ONNX export existed has no ``model.onnx``: it is exported to a file beside the
    process's temporary files at load time, and a warning says to re-import the model.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision != "f32" and backend != "openvino":
        raise ValueError(f"{backend} computes in float32 only; {precision} needs the openvino backend")
    model_dir = Path(model_dir)
    if backend == "tensorflow":
        import keras

        import segserve.models  # noqa: F401  (registers the custom layers)

        return Predictor(keras.saving.load_model(model_dir / KERAS_FILE, compile=False), backend=backend)
    onnx_path = model_dir / ONNX_FILE
    if not onnx_path.exists():
        import tempfile

        import keras

        import segserve.models  # noqa: F401

        logger.warning("%s has no %s: exporting it now (re-import the model to keep one)", model_dir, ONNX_FILE)
        model = keras.saving.load_model(model_dir / KERAS_FILE, compile=False)
        onnx_path = export_onnx(model, Path(tempfile.mkdtemp(prefix="segserve-onnx-")) / ONNX_FILE, input_size)
    if backend == "openvino":
        engine = OpenVinoModel(onnx_path, precision, threads, cache_dir)
        return Predictor(engine, backend=backend, precision=precision)
    return Predictor(OnnxModel(onnx_path, threads, spinning), backend=backend)
