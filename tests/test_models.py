"""segserve.models: one contract for both architectures, checked at tiny sizes (random weights, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segserve.classes import NUM_CLASSES

pytestmark = pytest.mark.usefixtures("tf_few_threads")


class ModelContract:
    """What the server and the trainer rely on from any architecture. Subclasses set ``name``."""

    name: str = ""

    @pytest.fixture(scope="class")
    def model(self, tf_few_threads):
        import keras

        from segserve.models import build_model

        keras.utils.set_random_seed(0)
        return build_model(self.name)

    @pytest.fixture(scope="class")
    def batch(self):
        return np.random.default_rng(0).normal(0.0, 50.0, size=(2, 64, 64, 3)).astype(np.float32)

    @pytest.fixture(scope="class")
    def probs(self, model, batch):
        return np.asarray(model.predict_on_batch(batch))

    def test_name(self, model):
        assert model.name == self.name

    def test_output_shape_and_dtype(self, probs):
        assert probs.shape == (2, 64, 64, NUM_CLASSES)
        assert probs.dtype == np.float32

    def test_softmax_sums_to_one(self, probs):
        assert (probs >= 0).all()
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)

    def test_encoder_stops_at_conv4(self, model):
        names = [layer.name for layer in model.layers]
        assert "conv4_block6_out" in names
        assert not [n for n in names if n.startswith("conv5")]

    def test_input_256_batch_1(self, model):
        x = np.zeros((1, 256, 256, 3), np.float32)
        out = model(x, training=False)
        assert tuple(out.shape) == (1, 256, 256, NUM_CLASSES)

    def test_save_and_load_keras_file(self, model, batch, probs, tmp_path_factory):
        import keras

        import segserve.models  # noqa: F401  (registers the custom layers)

        path = tmp_path_factory.mktemp(self.name) / f"{self.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
        np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(batch)), probs, rtol=0, atol=1e-6)


class TestDeepLabV3Plus(ModelContract):
    name = "deeplabv3plus"

    def test_has_aspp(self, model):
        assert model.get_layer("aspp_pool_broadcast") is not None


class TestUNet(ModelContract):
    name = "unet"


def test_build_model_unknown_name():
    from segserve.models import build_model

    with pytest.raises(ValueError, match="unknown architecture 'segnet'; choose one of deeplabv3plus, unet"):
        build_model("segnet")


def test_architecture_table_names_builders_and_the_service_serves_each():
    """One table names the architectures; each resolves to a builder and has a batchable model API."""
    import inspect

    from segserve.architectures import ARCHITECTURES, NAMES

    assert NAMES == ("deeplabv3plus", "unet")
    service = (Path(__file__).resolve().parents[1] / "bento" / "service.py").read_text()
    for arch in ARCHITECTURES.values():
        module, function = arch.builder.split(":")
        builder = getattr(__import__(module, fromlist=[function]), function)
        assert "encoder_weights" in inspect.signature(builder).parameters
        assert f"    def {arch.name}(self, images: np.ndarray) -> np.ndarray:" in service
