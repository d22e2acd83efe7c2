"""The shared request path with stand-in predictors: confidence, the review flag and the ensemble."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from segserve.errors import UnknownModel
from segserve.predictor import from_probabilities, pack
from segserve.segmenter import ENSEMBLE, Segmenter
from segserve.settings import Settings

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


def segment(predict, model: str, image: bytes = PHOTO, models=MODELS) -> dict:
    return asyncio.run(Segmenter(predict, models, Settings()).segment(image, model))


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


def test_ensemble_is_listed_with_its_members_and_needs_two_models():
    segmenter = Segmenter(Recorder({}), MODELS, Settings())
    listed = {m["name"]: m for m in segmenter.list_models()["models"]}
    assert list(listed) == ["deeplabv3plus", "unet", "ensemble"]
    assert listed["ensemble"]["members"] == ["deeplabv3plus", "unet"]
    assert listed["unet"]["members"] == []
    assert listed["ensemble"]["review"]["min_agreement"] == 0.5
    single = Segmenter(Recorder({}), {"unet": MODELS["unet"]}, Settings(default_model="unet"))
    assert [m["name"] for m in single.list_models()["models"]] == ["unet"]
    with pytest.raises(UnknownModel, match="serves unet"):
        single.resolve(ENSEMBLE)
