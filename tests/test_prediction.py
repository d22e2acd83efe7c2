"""training.prediction: the masks training scores are the ones serving answers, checked against the model's
own ``predict`` with normalisation, argmax and nearest-neighbour resizing done by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segserve import metrics, review
from training import prediction
from training.data import Sample

# The model's input by hand: BGR order, ImageNet means removed.
BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
NAMES = ("deeplabv3plus", "unet")


def by_hand(model, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """Class probabilities (N, H, W, C) from Keras' own ``predict``, the flip averaged by hand."""
    x = images[..., ::-1].astype(np.float32) - BGR_MEAN
    probs = model.predict(x, verbose=0)
    if flip:
        probs = (probs + model.predict(x[:, :, ::-1], verbose=0)[:, :, ::-1]) / 2
    return probs


def decided(probs: np.ndarray, margin: float = 1e-5) -> np.ndarray:
    """Pixels whose top class leads the second by more than ``margin`` (elsewhere rounding may pick either)."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] > margin


@pytest.fixture(scope="module")
def models(tf_few_threads):
    """Tiny stand-ins with seeded weights that make every class and few near-ties between the top two."""
    from tests.servers import tiny_model

    rng = np.random.default_rng(2)
    out = {}
    for name in NAMES:
        model = tiny_model(name)
        scales = (0.02, 1.0, 0.5, 0.5)  # hidden kernel and bias, output kernel and bias
        weights = model.get_weights()
        model.set_weights([rng.normal(0, s, w.shape).astype("float32") for s, w in zip(scales, weights, strict=True)])
        out[name] = model
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_predict_masks_is_serving_path(models, flip):
    model = models["unet"]
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    probs = by_hand(model, images, flip)
    expected = np.stack(
        [cv2.resize(p.argmax(axis=-1).astype(np.uint8), (48, 32), interpolation=cv2.INTER_NEAREST_EXACT) for p in probs]
    )
    masks = prediction.predict_masks(model, images, batch_size=2, flip=flip)
    assert masks.dtype == np.uint8 and masks.shape == (5, 32, 48)
    sure = decided(probs)
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(masks[sure], expected[sure])


def test_options_name_the_models_the_ensemble_and_the_flip():
    one, flipped = prediction.Option(("unet",), False), prediction.Option(("unet",), True)
    both = prediction.Option(NAMES, True)
    assert (one.name, one.label, one.passes) == ("unet", "U-Net", 1)
    assert (flipped.name, flipped.label, flipped.passes) == ("unet+flip", "U-Net + flip TTA", 2)
    assert (both.name, both.label, both.passes) == ("ensemble+flip", "ensemble + flip TTA", 4)
    scaled = prediction.Option(("unet",), False, (192, 256, 320))
    assert (scaled.name, scaled.label, scaled.passes) == ("unet@192+256+320", "U-Net at 192+256+320 px", 3)
    assert prediction.Option(("unet",), True, (192,)).name == "unet+flip@192"
    with pytest.raises(ValueError, match="single model"):
        prediction.Option(NAMES, False, (192,))


def test_resized_probabilities_still_sum_to_one():
    probs = np.random.default_rng(4).dirichlet(np.ones(3), size=(8, 8)).astype(np.float32)
    resized = prediction.resize_probabilities(probs, 20)
    assert resized.shape == (20, 20, 3)
    np.testing.assert_allclose(resized.sum(axis=-1), 1.0, atol=1e-5)
    assert prediction.resize_probabilities(probs, 8) is probs


def test_per_shape_runs_a_model_at_several_sizes(models):
    """One trace per input shape, each the model's own output."""
    scalable = prediction.PerShape(models["deeplabv3plus"])
    rng = np.random.default_rng(6)
    for size in (32, 64, 32):
        x = rng.normal(0, 50, (1, size, size, 3)).astype(np.float32)
        np.testing.assert_allclose(
            scalable.predict_on_batch(x), models["deeplabv3plus"].predict(x, verbose=0), rtol=1e-5, atol=1e-6
        )


def test_run_option_at_test_time_sizes_averages_each_size_brought_back(models):
    """A 48x64 photo run at 32 and 64 px for a model served at 32: the mean of the two, at 32, decides."""
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    model_input = cv2.resize(photo, (32, 32), interpolation=cv2.INTER_AREA)
    at32 = by_hand(models["unet"], model_input[None])[0]
    at64 = by_hand(models["unet"], cv2.resize(photo, (64, 64), interpolation=cv2.INTER_LINEAR)[None])[0]
    mean = (at32 + cv2.resize(at64, (32, 32), interpolation=cv2.INTER_LINEAR)) / 2

    got = prediction.run_option(prediction.Option(("unet",), False, (32, 64)), models, model_input[None], [photo])
    assert got.mask.shape == (1, 32, 32) and got.members is None
    sure = decided(mean)
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(got.mask[0][sure], mean.argmax(axis=-1)[sure])
    np.testing.assert_allclose(got.top[0], mean.max(axis=-1), atol=1e-5)

    # at the model's own size alone, the option is the plain prediction
    own = prediction.run_option(prediction.Option(("unet",), False, (32,)), models, model_input[None], [photo])
    plain = prediction.run_option(prediction.Option(("unet",), False), models, model_input[None])
    np.testing.assert_allclose(own.top, plain.top, atol=1e-6)
    np.testing.assert_array_equal(own.mask, plain.mask)


def test_run_option_is_the_model_service_prediction(models):
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    single = prediction.run_option(prediction.Option(("unet",), True), models, images)
    probs = by_hand(models["unet"], images, flip=True)
    sure = decided(probs)
    np.testing.assert_array_equal(single.mask[sure], probs.argmax(axis=-1)[sure])
    np.testing.assert_allclose(single.top, probs.max(axis=-1), atol=1e-5)
    assert single.members is None

    ensemble = prediction.run_option(prediction.Option(NAMES, False), models, images)
    each = [by_hand(models[n], images) for n in NAMES]
    mean = (each[0] + each[1]) / 2
    sure = decided(mean) & decided(each[0]) & decided(each[1])
    np.testing.assert_array_equal(ensemble.mask[sure], mean.argmax(axis=-1)[sure])
    for member, probs in zip(ensemble.members, each, strict=True):
        np.testing.assert_array_equal(member[sure], probs.argmax(axis=-1)[sure])


def test_answer_is_what_the_server_answers(models):
    """A 48x64 photo (not the model's 32x32 input): the answer's mask comes back at the photo's size."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    model_input = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    sample = Sample("001", image, np.zeros((48, 64), np.uint8), model_input)
    predicted = prediction.run_option(prediction.Option(NAMES, False), models, model_input[None])
    seg = prediction.answer(sample, predicted)

    each = [by_hand(models[n], model_input[None])[0] for n in NAMES]
    mean = (each[0] + each[1]) / 2
    expected = cv2.resize(mean.argmax(axis=-1).astype(np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST_EXACT)
    sure = cv2.resize(decided(mean).astype(np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST_EXACT) > 0
    assert seg.mask.shape == (48, 64) and sure.mean() > 0.99
    np.testing.assert_array_equal(seg.mask[sure], expected[sure])
    members = [p.argmax(axis=-1) for p in each]
    assert seg.models_agreement == pytest.approx(review.agreement(*members))
    assert seg.corrosion_asset_ratio == metrics.corrosion_asset_ratio(metrics.class_pixels(seg.mask))
    np.testing.assert_array_equal(prediction.answer_masks([predicted], [sample])[0], seg.mask)
