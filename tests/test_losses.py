"""training.losses: cross-entropy plus soft Dice on tiny hand-made batches."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("tf_few_threads")

TRUTH = np.array([[[0, 1], [2, 2]]], np.int32)  # (1, 2, 2): one corrosion, one asset, two background pixels


def loss(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from keras import ops

    from training.losses import ce_dice_loss

    value = ce_dice_loss(ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred.astype(np.float32)))
    return float(ops.convert_to_numpy(value))


def one_hot(ids: np.ndarray, on: float = 1.0) -> np.ndarray:
    off = (1.0 - on) / 2
    return np.where(np.eye(3, dtype=bool)[ids], on, off).astype(np.float32)


def test_perfect_prediction_is_near_zero():
    assert loss(TRUTH, one_hot(TRUTH)) == pytest.approx(0.0, abs=1e-5)


def test_uniform_prediction_by_hand():
    # CE = ln 3. Dice_c = (2 n_c / 3 + 1) / (n_c + 4 / 3 + 1) with n = (1, 1, 2): 1/2, 1/2, 7/13.
    expected = math.log(3) + 1 - (0.5 + 0.5 + 7 / 13) / 3
    assert loss(TRUTH, np.full((1, 2, 2, 3), 1 / 3)) == pytest.approx(expected, rel=1e-5)


def test_perfect_is_lower_than_wrong():
    wrong = one_hot((TRUTH + 1) % 3, on=0.9)
    assert loss(TRUTH, one_hot(TRUTH, on=0.9)) < loss(TRUTH, np.full((1, 2, 2, 3), 1 / 3)) < loss(TRUTH, wrong)


def test_absent_class_stays_finite():
    truth = np.array([[[1, 2], [2, 2]], [[2, 2], [1, 1]]], np.int32)  # no corrosion in the batch
    pred = one_hot(truth)
    pred[..., 0] = 0.0  # and corrosion never predicted
    value = loss(truth, pred)
    assert math.isfinite(value)
    assert value == pytest.approx(0.0, abs=1e-5)  # the smoothed Dice of an absent class is 1


def test_accepts_float_labels():
    assert loss(TRUTH.astype(np.float32), one_hot(TRUTH)) == pytest.approx(0.0, abs=1e-5)


def test_cross_entropy_alone_by_hand():
    """ce_loss is the mean pixel cross-entropy: ln 3 for a uniform prediction, -ln 0.9 for 0.9 on the truth."""
    from keras import ops

    from training.losses import LOSSES, ce_loss

    def ce(y_pred):
        return float(ops.convert_to_numpy(ce_loss(ops.convert_to_tensor(TRUTH), ops.convert_to_tensor(y_pred))))

    assert ce(np.full((1, 2, 2, 3), 1 / 3, np.float32)) == pytest.approx(math.log(3), rel=1e-5)
    assert ce(one_hot(TRUTH, on=0.9)) == pytest.approx(-math.log(0.9), rel=1e-5)
    assert LOSSES == {"ce": ce_loss, "ce_dice": __import__("training.losses").losses.ce_dice_loss}
