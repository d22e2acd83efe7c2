"""training.metadata: ``val_metrics`` from the metrics table, in the layout the server reads, the metadata
of a trained model, exported from a run or fine-tuned from a start model, and the check that a model is measured
only on photos it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest

from segserve import metrics
from segserve.errors import SegServeError
from training.metadata import (
    VAL_ROW_KEYS,
    build_metadata,
    require_held_out,
    trained_on,
    trained_photos,
    val_metrics,
)
from training.sources import LoadedModel

C, A, B = 0, 1, 2


def hand_made_masks() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 truths and predictions with known corroded shares (C corrosion, A asset, B background).

    truth 0: 4 C, 4 A -> 0.5 (grade 1); prediction 0: 2 C, 6 A -> 0.25 (grade 2)
    truth 1: 0 C, 8 A -> 0 (grade 10); prediction 1: 1 C, 7 A -> 0.125 (grade 3)
    Summed: the 4 true C pixels -> 2 C, 2 A; the 12 true A -> 1 C, 11 A; the 16 B right.
    """
    truth = np.array(
        [
            [[C, C, C, C], [A, A, A, A], [B, B, B, B], [B, B, B, B]],
            [[A, A, A, A], [A, A, A, A], [B, B, B, B], [B, B, B, B]],
        ],
        np.uint8,
    )
    pred = np.array(
        [
            [[C, C, A, A], [A, A, A, A], [B, B, B, B], [B, B, B, B]],
            [[C, A, A, A], [A, A, A, A], [B, B, B, B], [B, B, B, B]],
        ],
        np.uint8,
    )
    return truth, pred


def test_val_metrics_layout_and_numbers():
    truth, pred = hand_made_masks()
    val = val_metrics(metrics.table(truth, pred))
    # summed matrix: corrosion TP 2, FP 1, FN 2; asset TP 11, FP 2, FN 1; background TP 16, FP 0, FN 0
    assert list(val) == [
        "split",
        "num_images",
        "per_class",
        "mean_iou",
        "mean_dice",
        "pixel_accuracy",
        "per_image_mean_iou",
        "per_image_mean_dice",
        "ratio_mae",
        "grade_exact",
        "grade_within_one",
    ]
    assert (val["split"], val["num_images"]) == ("val", 2)
    assert [list(row) for row in val["per_class"]] == [list(VAL_ROW_KEYS)] * 3
    corrosion, asset, background = val["per_class"]
    assert (corrosion["class_id"], corrosion["name"]) == (0, "corrosion")
    assert corrosion["iou"] == pytest.approx(2 / 5) and corrosion["dice"] == pytest.approx(4 / 7)
    assert corrosion["precision"] == pytest.approx(2 / 3) and corrosion["recall"] == pytest.approx(2 / 4)
    assert asset["iou"] == pytest.approx(11 / 14) and background["iou"] == 1.0
    assert val["mean_iou"] == pytest.approx((2 / 5 + 11 / 14 + 1) / 3)
    assert val["pixel_accuracy"] == pytest.approx(29 / 32)
    # per image, smoothed: corrosion 2/4 in image 0 and (0 + 1e-7) / (1 + 1e-7) in image 1
    assert corrosion["per_image_iou"] == pytest.approx((2 / 4 + 0) / 2, abs=1e-6)
    assert val["ratio_mae"] == pytest.approx((0.25 + 0.125) / 2)
    assert (val["grade_exact"], val["grade_within_one"]) == (0.0, 0.5)


def test_val_metrics_leave_undefined_values_out():
    truth = np.full((1, 2, 2), A, np.uint8)
    val = val_metrics(metrics.table(truth, truth.copy()), "test")
    corrosion = val["per_class"][0]
    assert val["split"] == "test"
    assert set(corrosion) == {"class_id", "name", "per_image_iou", "per_image_dice"}  # IoU, Dice... undefined
    assert val["mean_iou"] == 1.0


def test_val_metrics_hold_what_the_server_reports():
    """ListModels reads per_class[].{class_id, name, iou, dice, per_image_iou, per_image_dice}, mean_iou,
    pixel_accuracy and the inspector's numbers."""
    truth, pred = hand_made_masks()
    val = val_metrics(metrics.table(truth, pred))
    for row in val["per_class"]:
        assert {"class_id", "name", "iou", "dice", "per_image_iou", "per_image_dice"} <= set(row)
    assert {"mean_iou", "pixel_accuracy", "ratio_mae", "grade_exact", "grade_within_one"} <= set(val)


CONFIG = {
    "model": "unet",
    "data": "/data/corrosion-pipes",
    "input_size": 64,
    "encoder_weights": "none",
    "resolved_precision": "mixed_bfloat16",
    "train_ids": ["001", "002", "003"],
    "val_ids": ["004"],
}
STATE = {"epoch": 12, "best_epoch": 9, "train_seconds": 321.5}


def test_build_metadata_of_a_run():
    meta = build_metadata(CONFIG, STATE, {"mean_iou": 0.5}, "2025-03-04")
    assert meta == {
        "builder_kwargs": {},
        "input_size": 64,
        "encoder_weights": "none",
        "val_metrics": {"mean_iou": 0.5},
        "train_seconds": 321.5,
        "best_epoch": 9,
        "epochs_run": 12,
        "dataset": "corrosion-pipes",
        "train_ids": ["001", "002", "003"],
        "val_ids": ["004"],
        "trained_at": "2025-03-04",
        "recipe": {"encoder_weights": "none", "input_size": 64},  # the run's training options (RECIPE_KEYS)
    }
    assert "train_seconds" not in build_metadata(CONFIG, {}, {}, "2025-03-04")  # no state.json: left out


def test_build_metadata_of_a_fine_tune_carries_the_start_model_over():
    start = LoadedModel(
        model=None,
        metadata={"encoder_weights": "imagenet", "review": {"confidence_threshold": 0.6}},
        description="release models/unet.json (trained_at 2025-01-01)",
        source="release models/unet.weights.npz",
        builder_kwargs={"decoder_filters": [8]},
    )
    meta = build_metadata(CONFIG, STATE, {"mean_iou": 0.6}, "2025-03-04T10:00:00+00:00", start, {"mean_iou": 0.5})
    assert meta["builder_kwargs"] == {"decoder_filters": [8]} and meta["encoder_weights"] == "imagenet"
    assert meta["trained_from"] == start.description and meta["review"] == {"confidence_threshold": 0.6}
    assert (meta["val_metrics"], meta["start_val_metrics"]) == ({"mean_iou": 0.6}, {"mean_iou": 0.5})
    assert meta["trained_on"] == "/data/corrosion-pipes (3 train / 1 val photos)" == trained_on(CONFIG)
    assert meta["precision"] == "mixed_bfloat16" and meta["trained_at"] == "2025-03-04T10:00:00+00:00"


def test_trained_photos_are_the_train_ids_of_the_same_dataset(tmp_path):
    data = tmp_path / "corrosion-pipes"
    data.mkdir()
    final_fit = {"dataset": "corrosion-pipes", "train_ids": ["001", "002", "005", "006"]}
    assert trained_photos(final_fit, data, ["005", "006", "007"]) == ["005", "006"]
    assert trained_photos({**final_fit, "train_ids": ["001", "002"]}, data, ["005", "006"]) == []
    # a fine-tuned model's ids name photos of its own folder, not of this one
    other = tmp_path / "our-photos"
    other.mkdir()
    assert trained_photos(final_fit, other, ["005", "006"]) == []
    assert trained_photos({}, data, ["005"]) == []


def test_a_model_trained_on_the_split_is_refused_with_where_its_val_metrics_come_from(tmp_path):
    data = tmp_path / "corrosion-pipes"
    data.mkdir()
    held_out = {"dataset": "corrosion-pipes", "train_ids": ["001", "002"]}
    final_fit = {
        "dataset": "corrosion-pipes",
        "train_ids": [f"{k:03d}" for k in range(1, 12)],
        "validation_source": "the val split (3 photos) of the same recipe trained on the train split only",
    }
    val = [f"{k:03d}" for k in range(5, 12)]
    require_held_out({"unet": held_out}, data, val, "val")  # nothing of val trained it: no error
    with pytest.raises(SegServeError) as refused:
        require_held_out({"unet": held_out, "unet-vgg16": final_fit}, data, val, "val")
    message = str(refused.value)
    assert message.startswith("unet-vgg16 was trained on 7 of the 7 val photos")
    assert "(005, 006, 007, 008, 009, ...)" in message
    assert "Its recorded val metrics come from the val split (3 photos) of the same recipe" in message
