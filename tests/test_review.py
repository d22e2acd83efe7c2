"""segserve.review on hand-computed cases: confidence, agreement, image quality, thresholds, review reasons."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import cv2
import numpy as np
import pytest

from segserve import review
from segserve.classes import ASSET, BACKGROUND, CORROSION
from segserve.review import ImageQuality, ReviewThresholds


def test_confidence_of_a_two_pixel_prediction():
    # pixel 0: corrosion at 0.7; pixel 1: asset at 0.5; no pixel predicted background
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]]], dtype=np.float32)
    conf = review.confidence(probs, threshold=0.6)
    assert conf.mean == pytest.approx(0.6)
    assert conf.low_fraction == pytest.approx(0.5)  # 0.5 < 0.6, 0.7 is not
    assert conf.per_class[CORROSION] == pytest.approx(0.7)
    assert conf.per_class[ASSET] == pytest.approx(0.5)
    assert math.isnan(conf.per_class[BACKGROUND])


def test_confidence_per_class_is_the_mean_over_that_class_pixels():
    probs = np.array(
        [[[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]], [[0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]], dtype=np.float32
    )  # corrosion 0.9 and 0.6, background 0.6 and 0.8
    conf = review.confidence(probs, threshold=0.7)
    assert conf.per_class[CORROSION] == pytest.approx(0.75)
    assert conf.per_class[BACKGROUND] == pytest.approx(0.7)
    assert math.isnan(conf.per_class[ASSET])
    assert conf.mean == pytest.approx((0.9 + 0.6 + 0.6 + 0.8) / 4)
    assert conf.low_fraction == pytest.approx(0.5)  # 0.6 and 0.6 are below 0.7


def test_threshold_at_a_pixel_probability_is_not_low():
    probs = np.full((2, 2, 3), 0.0, np.float32)
    probs[..., ASSET] = 1.0
    assert review.confidence(probs, threshold=1.0).low_fraction == 0.0
    assert review.confidence(probs, threshold=1.01).low_fraction == 1.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),  # equal
        ([0, 0, 0, 0], [1, 1, 1, 1], 0.0),  # disjoint: IoU 0 for both classes
        ([0, 0, 1, 1], [0, 1, 1, 1], (1 / 2 + 2 / 3) / 2),  # class 0: 1/2, class 1: 2/3, class 2 absent
        ([2, 2, 2, 2], [2, 2, 2, 2], 1.0),  # one class only: the others are left out
    ],
)
def test_agreement(a, b, expected):
    mask_a = np.array(a, np.uint8).reshape(2, 2)
    mask_b = np.array(b, np.uint8).reshape(2, 2)
    assert review.agreement(mask_a, mask_b) == pytest.approx(expected)
    assert review.agreement(mask_b, mask_a) == pytest.approx(expected)


def test_image_quality_of_blank_dark_small_and_large_images():
    blank = np.full((64, 80, 3), 128, np.uint8)
    q = review.image_quality(blank)
    assert (q.min_side, q.brightness, q.sharpness) == (64, pytest.approx(128.0), 0.0)
    dark = review.image_quality(np.zeros((100, 100, 3), np.uint8))
    assert dark.brightness == 0.0 and dark.sharpness == 0.0
    tiny = review.image_quality(np.full((2, 2, 3), 200, np.uint8))
    assert tiny.min_side == 2 and tiny.sharpness == 0.0  # too small for a 3x3 Laplacian
    large = review.image_quality(np.full((300, 600, 3), 50, np.uint8))
    assert large.min_side == 300 and large.brightness == pytest.approx(50.0)


def test_sharpness_of_a_checkerboard_is_high_and_of_its_blur_lower():
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    sharp = review.image_quality(np.repeat(board[..., None], 3, axis=2))
    assert sharp.brightness == pytest.approx(127.5)
    blurred = cv2.GaussianBlur(np.repeat(board[..., None], 3, axis=2), (5, 5), 2)
    assert sharp.sharpness > 1000 > review.image_quality(blurred).sharpness


def test_sharpness_does_not_depend_on_resolution_above_the_measuring_size():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = cv2.resize(small, (1024, 1024), interpolation=cv2.INTER_NEAREST)
    same = cv2.resize(small, (review.SHARPNESS_SIZE, review.SHARPNESS_SIZE), interpolation=cv2.INTER_NEAREST)
    assert review.image_quality(big).sharpness == pytest.approx(review.image_quality(same).sharpness, rel=0.05)


def test_thresholds_from_metadata():
    assert ReviewThresholds.from_metadata(None) == ReviewThresholds()
    assert ReviewThresholds.from_metadata({"val_metrics": {}}) == ReviewThresholds()
    recorded = {
        "review": {
            "confidence_threshold": "0.7",
            "min_side": 100.0,
            "min_agreement": 0.25,
            "calibration": {"n_images": 22},  # numbers beside the thresholds are ignored
        }
    }
    t = ReviewThresholds.from_metadata(recorded)
    assert t.confidence_threshold == 0.7 and t.min_agreement == 0.25
    assert t.min_side == 100 and isinstance(t.min_side, int)
    assert t.max_low_confidence_fraction == ReviewThresholds().max_low_confidence_fraction
    assert set(t.as_dict()) == {f.name for f in fields(ReviewThresholds)}
    assert ReviewThresholds.from_metadata({"review": t.as_dict()}) == t


GOOD_QUALITY = ImageQuality(min_side=256, brightness=120.0, sharpness=500.0)
GOOD_PIXELS = np.array([100, 400, 500])  # corrosion, asset, background
THRESHOLDS = ReviewThresholds(
    confidence_threshold=0.6,
    max_low_confidence_fraction=0.3,
    min_asset_fraction=0.01,
    min_side=64,
    min_brightness=25.0,
    min_sharpness=20.0,
    min_agreement=0.5,
)


def _conf(low_fraction: float) -> review.Confidence:
    return review.Confidence(per_class=np.array([0.9, 0.9, 0.9]), mean=0.9, low_fraction=low_fraction)


def test_a_confident_sharp_photo_with_an_asset_needs_no_review():
    assert review.review_reasons(_conf(0.1), GOOD_QUALITY, GOOD_PIXELS, THRESHOLDS) == []
    assert review.review_reasons(_conf(0.1), GOOD_QUALITY, GOOD_PIXELS, THRESHOLDS, models_agreement=0.8) == []
    # at the limits exactly: not flagged (the rules are strict inequalities)
    at_limits = ImageQuality(min_side=64, brightness=25.0, sharpness=20.0)
    pixels = np.array([0, 10, 990])  # corrosion + asset exactly 1%
    assert review.review_reasons(_conf(0.3), at_limits, pixels, THRESHOLDS, models_agreement=0.5) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"low_fraction": 0.31}, review.LOW_CONFIDENCE),
        ({"pixels": np.array([0, 9, 991])}, review.NO_ASSET),
        ({"pixels": np.array([0, 0, 1000])}, review.NO_ASSET),
        ({"quality": replace(GOOD_QUALITY, min_side=32)}, review.IMAGE_TOO_SMALL),
        ({"quality": replace(GOOD_QUALITY, brightness=10.0)}, review.IMAGE_TOO_DARK),
        ({"quality": replace(GOOD_QUALITY, sharpness=0.0)}, review.IMAGE_TOO_BLURRED),
        ({"agreement": 0.49}, review.MODELS_DISAGREE),
    ],
)
def test_each_reason_is_raised_alone(change, reason):
    reasons = review.review_reasons(
        _conf(change.get("low_fraction", 0.1)),
        change.get("quality", GOOD_QUALITY),
        change.get("pixels", GOOD_PIXELS),
        THRESHOLDS,
        change.get("agreement", 0.9),
    )
    assert reasons == [reason]


def test_no_disagreement_without_a_second_model():
    assert review.review_reasons(_conf(0.1), GOOD_QUALITY, GOOD_PIXELS, THRESHOLDS, models_agreement=None) == []


def test_a_blank_photo_gives_every_image_reason_in_order():
    blank = review.image_quality(np.zeros((32, 32, 3), np.uint8))
    reasons = review.review_reasons(_conf(0.9), blank, np.array([0, 0, 1024]), THRESHOLDS, models_agreement=0.0)
    assert reasons == list(review.REASONS)
