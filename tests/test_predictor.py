"""Running a model: the wire format of the model service, the ensemble, both backends, and their parity on
real validation photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segserve import architectures, imaging, metrics, predictor, store
from segserve.settings import Settings
from tests.servers import ROOT, tiny_model

DATA = ROOT.parent / "shared" / "datasets" / "corrosion-pipes"


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


def test_a_model_stored_without_onnx_is_exported_at_load(tiny_dir, tmp_path, caplog):
    (tmp_path / predictor.KERAS_FILE).write_bytes((tiny_dir / predictor.KERAS_FILE).read_bytes())
    images = np.random.default_rng(1).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    loaded = predictor.load_predictor(tmp_path, "onnxruntime", 32)
    reference = predictor.load_predictor(tiny_dir, "tensorflow", 32)
    assert np.array_equal(loaded.predict(images).mask, reference.predict(images).mask)
    assert "re-import" in caplog.text


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="onnxruntime, tensorflow"):
        Settings(backend="torch")
    with pytest.raises(ValueError, match="unknown backend"):
        predictor.load_predictor(Path("."), "torch", 32)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason=f"the dataset is not at {DATA}")
@pytest.mark.parametrize("name", architectures.SHIPPED)
def test_backends_agree_on_validation_photos(name, tmp_path):
    """ONNX Runtime and TensorFlow give the same masks (>= 99.5% of pixels) and mean IoU (within 0.2 points)."""
    model, meta = store.load_release(name)
    onnx = predictor.Predictor(predictor.OnnxModel(predictor.export_onnx(model, tmp_path / "m.onnx", 256)))
    ids = (DATA / "val.txt").read_text().split()
    images = np.stack([imaging.resize_image(imaging.read_image(str(DATA / "original" / f"ORI_{i}.png"))) for i in ids])
    truth = np.stack([imaging.resize_mask(imaging.read_mask(str(DATA / "ground_truth" / f"GT_{i}.png"))) for i in ids])
    masks = {}
    for backend, run in (("tensorflow", predictor.Predictor(model)), ("onnxruntime", onnx)):
        masks[backend] = np.concatenate([run.predict(images[k : k + 8]).mask for k in range(0, len(ids), 8)])
    assert (masks["tensorflow"] == masks["onnxruntime"]).mean() >= 0.995
    miou = {b: metrics.report(metrics.confusion_matrix(truth, m)).mean_iou for b, m in masks.items()}
    assert abs(miou["tensorflow"] - miou["onnxruntime"]) <= 0.002
