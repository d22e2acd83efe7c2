"""Running a model: the wire format of the model service, the ensemble, every backend and precision, the
OpenVINO cache, and their parity on real validation photos (the gate of segserve.parity)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from segserve import architectures, engines, metrics, parity, predictor
from segserve.settings import Settings
from tests.servers import tiny_model
from tests.shipped import needs_data


def random_probs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(*shape, 3)).astype(np.float32)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def test_pack_carries_ids_and_quantised_confidence():
    probs = random_probs((2, 8, 8))
    packed = predictor.pack(predictor.from_probabilities(probs))
    assert packed.dtype == np.uint8 and packed.shape == (2, 8, 8, 2)
    back = predictor.unpack(packed)
    assert np.array_equal(back.mask, probs.argmax(axis=-1))
    assert np.abs(back.top - probs.max(axis=-1)).max() <= 1 / 510 + 1e-6
    assert back.members is None


def test_ensemble_is_the_mean_of_its_members_with_their_own_ids():
    class Fixed:
        def __init__(self, probs):
            self.probs = probs

        def predict_on_batch(self, x):
            return self.probs

    a, b = random_probs((1, 6, 6), 1), random_probs((1, 6, 6), 2)
    images = np.zeros((1, 6, 6, 3), np.uint8)
    got = predictor.predict_ensemble([predictor.Predictor(Fixed(a)), predictor.Predictor(Fixed(b))], images)
    assert np.array_equal(got.mask, ((a + b) / 2).argmax(axis=-1))
    assert np.allclose(got.top, ((a + b) / 2).max(axis=-1))
    assert np.array_equal(got.members, np.stack([a.argmax(-1), b.argmax(-1)]))
    unpacked = predictor.unpack(predictor.pack(got))
    assert np.array_equal(unpacked.members, got.members)


def test_flip_averages_the_mirror_image():
    class LeftHalfCorrosion:
        """Corrosion on the left half of whatever it is shown, background on the right."""

        def predict_on_batch(self, x):
            probs = np.zeros((*x.shape[:3], 3), np.float32)
            probs[:, :, : x.shape[2] // 2, 0] = 1
            probs[:, :, x.shape[2] // 2 :, 2] = 1
            return probs

    probs = predictor.Predictor(LeftHalfCorrosion(), flip=True).probabilities(np.zeros((1, 4, 4, 3), np.uint8))
    assert np.allclose(probs[0, :, :, 0], 0.5) and np.allclose(probs[0, :, :, 2], 0.5)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A store-like model folder (model.keras and model.onnx) of a tiny stand-in model."""
    folder = tmp_path_factory.mktemp("tiny_model")
    model = tiny_model("tiny")
    model.save(folder / predictor.KERAS_FILE)
    predictor.export_onnx(model, folder / predictor.ONNX_FILE, 32)
    return folder


@pytest.mark.parametrize("backend", predictor.BACKENDS)
def test_each_backend_loads_and_says_which_it_is(tiny_dir, backend):
    loaded = predictor.load_predictor(tiny_dir, backend, 32)
    assert loaded.backend == backend
    out = loaded.predict(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
    assert out.mask.shape == (3, 32, 32) and out.mask.max() < 3


@pytest.mark.parametrize("threads", [0, 2])
def test_a_forward_pass_runs_on_the_usable_cpus_unless_told(tiny_dir, monkeypatch, threads):
    """SEGSERVE_MODEL_THREADS=0 gives both engines ``usable_cpus()`` threads (a container's CPU limit, not the
    host's core count); a number is taken as it is (OpenVINO caps it at the machine's cores)."""
    monkeypatch.setattr(predictor, "usable_cpus", lambda: 1)
    expected = threads or 1
    ort = predictor.load_predictor(tiny_dir, "onnxruntime", 32, threads=threads)
    assert ort.model.session.get_session_options().intra_op_num_threads == expected
    ov = predictor.load_predictor(tiny_dir, "openvino", 32, threads=threads)
    assert ov.model.compiled.get_property("INFERENCE_NUM_THREADS") == min(expected, os.cpu_count())


def test_a_model_stored_without_onnx_is_exported_at_load(tiny_dir, tmp_path, caplog):
    (tmp_path / predictor.KERAS_FILE).write_bytes((tiny_dir / predictor.KERAS_FILE).read_bytes())
    images = np.random.default_rng(1).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    loaded = predictor.load_predictor(tmp_path, "onnxruntime", 32)
    reference = predictor.load_predictor(tiny_dir, "tensorflow", 32)
    assert np.array_equal(loaded.predict(images).mask, reference.predict(images).mask)
    assert "re-import" in caplog.text


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="auto, openvino, onnxruntime, tensorflow"):
        Settings(backend="torch")
    with pytest.raises(ValueError, match="unknown backend"):
        predictor.load_predictor(Path("."), "torch", 32)
    with pytest.raises(ValueError, match="onnxruntime computes in float32 only"):
        predictor.load_predictor(Path("."), "onnxruntime", 32, precision="bf16")


def test_openvino_agrees_with_onnx_runtime_and_keeps_its_compiled_model(tiny_dir, tmp_path):
    """OpenVINO float32 gives ONNX Runtime's masks; its compiled model lands in the cache and is reused."""
    images = np.random.default_rng(2).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    cache = tmp_path / "cache"
    first = predictor.load_predictor(tiny_dir, "openvino", 32, precision="f32", cache_dir=str(cache))
    assert (first.backend, first.precision) == ("openvino", "f32")
    reference = predictor.load_predictor(tiny_dir, "onnxruntime", 32)
    assert np.array_equal(first.predict(images).mask, reference.predict(images).mask)
    blobs = sorted(cache.iterdir())
    assert blobs and all(b.stat().st_size > 0 for b in blobs)
    stamps = {b.name: b.stat().st_mtime_ns for b in blobs}
    again = predictor.load_predictor(tiny_dir, "openvino", 32, precision="f32", cache_dir=str(cache))
    assert {b.name: b.stat().st_mtime_ns for b in cache.iterdir()} == stamps  # read, not compiled again
    assert np.array_equal(again.predict(images).mask, first.predict(images).mask)


def test_openvino_calls_from_several_threads_get_their_own_requests(tiny_dir):
    from concurrent.futures import ThreadPoolExecutor

    run = predictor.load_predictor(tiny_dir, "openvino", 32)
    images = np.random.default_rng(3).integers(0, 255, (8, 2, 32, 32, 3), dtype=np.uint8)
    expected = [run.predict(batch).mask for batch in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda batch: run.predict(batch).mask, images))
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_parity_is_recorded_per_kind_of_machine(tmp_path):
    truth = np.zeros((2, 4, 4), np.uint8)
    same = parity.compare(truth, truth.copy(), truth)
    assert same == {"agreement": 1.0, "mean_iou": 1.0, "reference_mean_iou": 1.0, "images": 2, "passed": True}
    off = truth.copy()
    off[0, 0, :2] = 1  # 2 of 32 pixels differ: 93.75% agreement
    result = parity.compare(truth, off, truth)
    assert result["agreement"] == 30 / 32 and result["passed"] is False
    parity.record(tmp_path, {"openvino:bf16": result}, kind="x86_64:amx_bf16+avx512_bf16+avx512f+avx2")
    parity.record(tmp_path, {"openvino:f32": same}, kind="x86_64:avx2")
    assert parity.passed(tmp_path, "openvino:bf16", kind="x86_64:amx_bf16+avx512_bf16+avx512f+avx2") is False
    assert parity.passed(tmp_path, "openvino:f32", kind="x86_64:avx2") is True
    assert parity.passed(tmp_path, "openvino:bf16", kind="x86_64:avx2") is None  # never checked there
    assert set(parity.read(tmp_path)) == {"x86_64:amx_bf16+avx512_bf16+avx512f+avx2", "x86_64:avx2"}


def test_a_model_that_failed_parity_never_gets_bfloat16(tiny_dir, tmp_path, monkeypatch):
    """On a machine with native bfloat16 (pretended here), auto serves bfloat16 only after a passed parity."""
    from segserve import runtime
    from segserve.store import ModelInfo

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / predictor.ONNX_FILE).write_bytes((tiny_dir / predictor.ONNX_FILE).read_bytes())
    monkeypatch.setattr(engines, "native_bf16", lambda: True)
    monkeypatch.setattr("segserve.store.served_model", lambda name: (model_dir, ModelInfo(name, "v1", name, 32, {})))
    kind = engines.machine_kind()
    settings = Settings(openvino_cache_dir=str(tmp_path / "cache"))
    assert runtime.load_served("unet", settings)[1]["precision"] == "f32"  # never checked: float32
    parity.record(model_dir, {"openvino:bf16": {"passed": False, "agreement": 0.97}}, kind)
    assert runtime.load_served("unet", settings)[1]["precision"] == "f32"
    parity.record(model_dir, {"openvino:bf16": {"passed": True, "agreement": 0.998}}, kind)
    _, described = runtime.load_served("unet", settings)
    assert (described["backend"], described["precision"]) == ("openvino", "bf16")


PRECISIONS_HERE = [
    pytest.param("f32", id="f32"),
    pytest.param(
        "bf16",
        id="bf16",
        marks=pytest.mark.skipif(
            not engines.native_bf16(),
            reason=f"this CPU ({engines.machine_kind()}) has no native bfloat16; bf16 parity needs one that has",
        ),
    ),
]


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("precision", PRECISIONS_HERE)
@pytest.mark.parametrize("name", architectures.SHIPPED)
def test_openvino_passes_the_parity_gate_on_validation_photos(name, precision, shipped_on_val):
    """Pixel agreement with ONNX Runtime float32 >= 99.5% and mean IoU within 0.5 points, on the 22 val photos."""
    release = shipped_on_val(name)
    reference = release.masks(*parity.REFERENCE)
    result = parity.compare(reference, release.masks("openvino", precision), release.truth)
    print(f"{name} openvino:{precision}: {result}")
    assert result["images"] == 22
    assert result["agreement"] >= parity.MIN_AGREEMENT
    assert result["reference_mean_iou"] - result["mean_iou"] <= parity.MAX_MEAN_IOU_DROP
    assert result["passed"] is True


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", architectures.SHIPPED)
def test_backends_agree_on_validation_photos(name, shipped_on_val):
    """ONNX Runtime and TensorFlow give the same masks (>= 99.5% of pixels) and mean IoU (within 0.2 points)."""
    release = shipped_on_val(name)
    masks = {backend: release.masks(backend) for backend in ("tensorflow", "onnxruntime")}
    assert (masks["tensorflow"] == masks["onnxruntime"]).mean() >= 0.995
    miou = {b: metrics.report(metrics.confusion_matrix(release.truth, m)).mean_iou for b, m in masks.items()}
    assert abs(miou["tensorflow"] - miou["onnxruntime"]) <= 0.002
