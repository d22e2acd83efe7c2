"""segserve.pipeline, the request path, with stand-in model services: confidence, the review flag, the ensemble,
Evaluate's checks and the deadline; and segserve.catalog's ListModels."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from segserve import imaging
from segserve.architectures import ENSEMBLE
from segserve.catalog import Catalog
from segserve.errors import DeadlineExceeded, InvalidInput, ModelFailed
from segserve.pipeline import Pipeline, ServedModel
from segserve.predictor import from_probabilities, pack
from segserve.settings import Settings
from tests.two_models import two_model_settings

SIZE = 32
REVIEW = {"confidence_threshold": 0.6, "max_low_confidence_fraction": 0.3, "min_agreement": 0.5}
MODELS = {
    name: {"version": f"v-{name}", "input_size": SIZE, "metadata": {"review": REVIEW}}
    for name in ("deeplabv3plus", "unet")
}


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


# A textured, well-lit photo: nothing about the image itself asks for review.
PHOTO = png(np.random.default_rng(0).integers(40, 220, (96, 128, 3), dtype=np.uint8))


def probs_of(top: np.ndarray, top_prob: float) -> np.ndarray:
    """Probabilities (1, S, S, 3) whose argmax is ``top`` (S, S) with probability ``top_prob``, the rest shared."""
    probs = np.full((1, SIZE, SIZE, 3), (1 - top_prob) / 2, np.float32)
    np.put_along_axis(probs[0], top[..., None].astype(np.int64), top_prob, axis=-1)
    return probs


def half_and_half(left: int, right: int) -> np.ndarray:
    top = np.full((SIZE, SIZE), left, np.uint8)
    top[:, SIZE // 2 :] = right
    return top


class Recorder:
    """A model service answering fixed probabilities per model (and for the ensemble, the mean of both
    models' with their own class ids, as the model service does), recording the batches it was sent."""

    def __init__(self, answers: dict[str, np.ndarray]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    async def __call__(self, name: str, batch: np.ndarray) -> np.ndarray:
        self.calls.append((name, batch.shape))
        if name == ENSEMBLE:
            probs = [self.answers[m] for m in sorted(self.answers)]
            members = np.stack([p.argmax(axis=-1).astype(np.uint8) for p in probs])
            return pack(from_probabilities(np.mean(probs, axis=0), members))
        return pack(from_probabilities(self.answers[name]))


def served(model: str, models=MODELS, settings: Settings | None = None) -> ServedModel:
    """The ServedModel the edge would hand the pipeline for a request naming ``model``."""
    catalog = Catalog(settings or two_model_settings(), models)
    name = catalog.resolve(model)
    return ServedModel(name, catalog.version(name), catalog.input_size(name), catalog.thresholds[name])


def segment(predict, model: str, image: bytes = PHOTO, models=MODELS) -> dict:
    header = imaging.read_header(image)
    return asyncio.run(Pipeline(predict).segment(image, header, served(model, models)))


def test_confident_answer_carries_confidence_and_is_not_flagged():
    # corrosion on the left half at 0.9, asset on the right half at 0.8
    top = half_and_half(0, 1)
    probs = probs_of(top, 0.9)
    probs[0, :, SIZE // 2 :] = [0.1, 0.8, 0.1]
    answer = segment(Recorder({"unet": probs}), "unet")
    # confidences travel quantised to 1/255
    assert [c["mean_confidence"] for c in answer["coverage"]][:2] == pytest.approx([0.9, 0.8], abs=0.002)
    assert np.isnan(answer["coverage"][2]["mean_confidence"])  # background predicted nowhere
    assert answer["mean_confidence"] == pytest.approx(0.85, abs=0.002)
    assert answer["low_confidence_fraction"] == 0.0
    assert answer["confidence_threshold"] == 0.6
    assert answer["needs_review"] is False and answer["review_reasons"] == []
    assert answer["models_agreement"] is None


def test_low_confidence_answer_is_flagged():
    # 3/4 of the pixels at 0.5 (below the 0.6 threshold), so 75% low-confidence > the 30% limit
    top = half_and_half(0, 1)
    probs = probs_of(top, 0.5)
    probs[0, : SIZE // 4] = [0.9, 0.05, 0.05]
    answer = segment(Recorder({"deeplabv3plus": probs}), "")
    assert answer["low_confidence_fraction"] == pytest.approx(0.75)
    assert answer["needs_review"] is True
    assert answer["review_reasons"] == ["REVIEW_REASON_LOW_CONFIDENCE"]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.full((96, 128, 3), 128, np.uint8), "REVIEW_REASON_IMAGE_TOO_BLURRED"),  # blank
        (np.random.default_rng(1).integers(0, 12, (96, 128, 3), dtype=np.uint8), "REVIEW_REASON_IMAGE_TOO_DARK"),
        (np.random.default_rng(2).integers(40, 220, (20, 30, 3), dtype=np.uint8), "REVIEW_REASON_IMAGE_TOO_SMALL"),
    ],
)
def test_photos_that_cannot_be_judged_are_flagged(image, reason):
    probs = probs_of(half_and_half(0, 1), 0.95)
    answer = segment(Recorder({"unet": probs}), "unet", png(image))
    assert answer["needs_review"] is True
    assert reason in answer["review_reasons"]


def test_no_asset_found_is_flagged():
    probs = probs_of(np.full((SIZE, SIZE), 2, np.uint8), 0.95)  # background everywhere
    answer = segment(Recorder({"unet": probs}), "unet")
    assert answer["review_reasons"] == ["REVIEW_REASON_NO_ASSET"]


def test_thresholds_come_from_the_model_metadata():
    probs = probs_of(half_and_half(0, 1), 0.5)
    strict = {"unet": {"version": "v", "input_size": SIZE, "metadata": {"review": {"confidence_threshold": 0.4}}}}
    answer = segment(Recorder({"unet": probs}), "unet", models=strict)
    assert answer["confidence_threshold"] == 0.4 and answer["low_confidence_fraction"] == 0.0


def test_ensemble_averages_both_models_and_reports_their_agreement():
    # deeplabv3plus: corrosion | asset; unet: corrosion everywhere. Agreement: IoU corrosion 1/2, asset 0 -> 0.25
    recorder = Recorder(
        {"deeplabv3plus": probs_of(half_and_half(0, 1), 0.9), "unet": probs_of(np.zeros((SIZE, SIZE), np.uint8), 0.6)}
    )
    answer = segment(recorder, ENSEMBLE)
    assert recorder.calls == [(ENSEMBLE, (1, SIZE, SIZE, 3))]
    assert answer["model"] == "ensemble"
    assert answer["model_version"] == "deeplabv3plus:v-deeplabv3plus+unet:v-unet"
    assert answer["models_agreement"] == pytest.approx(0.25)
    # left half: both say corrosion (0.9 and 0.6 -> 0.75); right half: asset (0.9 + 0.2) / 2 = 0.55
    assert answer["coverage"][0]["mean_confidence"] == pytest.approx(0.75, abs=0.002)
    assert answer["coverage"][1]["mean_confidence"] == pytest.approx(0.55, abs=0.002)
    assert answer["review_reasons"] == ["REVIEW_REASON_LOW_CONFIDENCE", "REVIEW_REASON_MODELS_DISAGREE"]


def test_the_model_input_is_the_photo_resized_and_the_mask_comes_back_at_its_size():
    """The model service gets the photo resized to the model's input (RGB uint8, a batch of one), and the mask
    it answers is upsampled by nearest neighbour to the photo's 128x96."""
    photo = np.random.default_rng(5).integers(40, 220, (96, 128, 3), dtype=np.uint8)
    sent = []

    async def predict(name, batch):
        sent.append(batch)
        return pack(from_probabilities(probs_of(half_and_half(0, 1), 0.9)))

    answer = segment(predict, "unet", png(photo))
    np.testing.assert_array_equal(sent[0], imaging.resize_image(photo, SIZE)[None])
    mask = imaging.decode_mask(answer["mask_png"])
    assert mask.shape == (96, 128)
    assert (mask[:, :64] == 0).all() and (mask[:, 64:] == 1).all()
    assert [c["pixels"] for c in answer["coverage"]] == [96 * 64, 96 * 64, 0]
    assert answer["corrosion_asset_ratio"] == 0.5 and answer["rust_grade"] == 1
    assert (answer["width"], answer["height"]) == (128, 96)


def test_a_passed_deadline_spares_the_model():
    calls = []

    async def predict(name, batch):
        calls.append(name)
        return pack(from_probabilities(probs_of(half_and_half(0, 1), 0.9)))

    header = imaging.read_header(PHOTO)
    with pytest.raises(DeadlineExceeded):
        asyncio.run(Pipeline(predict).segment(PHOTO, header, served("unet"), deadline=0.0))
    assert calls == []


def test_a_failing_model_service_is_a_retryable_model_failure():
    async def predict(name, batch):
        raise ConnectionError("reset by peer")

    with pytest.raises(ModelFailed, match="unet did not answer: reset by peer") as caught:
        segment(predict, "unet")
    assert caught.value.retry_after == 1.0


def test_a_model_failure_without_a_message_is_named():
    async def predict(name, batch):
        raise TimeoutError()

    with pytest.raises(ModelFailed, match="unet did not answer: TimeoutError; retry shortly"):
        segment(predict, "unet")


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        (b"", "ground_truth is empty"),
        (png(np.zeros((96, 127, 3), np.uint8)), "ground_truth is 127x96 but the image is 128x96"),
        (b"not an image", "not a PNG"),
    ],
)
def test_evaluate_checks_the_ground_truth_before_the_model_runs(truth, message):
    calls = []

    async def predict(name, batch):
        calls.append(name)
        return pack(from_probabilities(probs_of(half_and_half(0, 1), 0.9)))

    header = imaging.read_header(PHOTO)
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(Pipeline(predict).evaluate(PHOTO, header, truth, served("unet")))
    assert calls == []


def test_evaluate_scores_the_answer_against_the_truth():
    """Truth: corrosion left, background right; answer: corrosion left, asset right. Corrosion is right
    everywhere (IoU 1), the right half is asset instead of background (half the pixels wrong)."""
    truth = np.zeros((96, 128), np.uint8)
    truth[:, 64:] = 2

    async def predict(name, batch):
        return pack(from_probabilities(probs_of(half_and_half(0, 1), 0.9)))

    header = imaging.read_header(PHOTO)
    answer = asyncio.run(Pipeline(predict).evaluate(PHOTO, header, imaging.encode_png(truth), served("unet")))
    rows = {r["name"]: r for r in answer["per_class"]}
    assert rows["corrosion"]["iou"] == 1.0
    assert rows["background"]["true_pixels"] == 96 * 64 and rows["background"]["predicted_pixels"] == 0
    assert rows["asset"]["predicted_pixels"] == 96 * 64
    assert answer["pixel_accuracy"] == 0.5
    assert answer["confusion_matrix"] == [96 * 64, 0, 0, 0, 0, 0, 0, 96 * 64, 0]
    assert answer["prediction"]["corrosion_asset_ratio"] == 0.5
