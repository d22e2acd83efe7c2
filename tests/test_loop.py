"""training.loop: the options of training.train (flags and defaults that documented experiments rely on), their
checks, the per-epoch validation numbers and the augmented batches."""

from __future__ import annotations

import numpy as np
import pytest

from training import loop

# Every option of `python -m training.train` and its default.
TRAIN_DEFAULTS = {
    "model": None,
    "data": None,
    "out": None,
    "epochs": 200,
    "batch_size": 8,
    "crop_size": 128,
    "input_size": 256,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 3,
    "patience": 40,
    "val_every": 1,
    "encoder_weights": "none",
    "augment": "rescale",
    "loss": "ce_dice",
    "fit_on": "train",
    "seed": 0,
    "limit": 0,
    "threads": 0,
    "resume": False,
    "no_report": False,
    "init_from": None,
    "precision": "float32",
    "recipe": None,
}


def test_train_options_and_defaults():
    args = loop.parse_args(["--model", "unet", "--data", "d"])
    assert {k: v for k, v in vars(args).items() if k not in ("model", "data")} == {
        k: v for k, v in TRAIN_DEFAULTS.items() if k not in ("model", "data")
    }
    flags = {a.option_strings[0]: a.dest for a in loop.build_parser()._actions if a.option_strings and a.dest != "help"}
    assert flags == {"--" + k.replace("_", "-"): k for k in TRAIN_DEFAULTS}
    choices = {a.dest: a.choices for a in loop.build_parser()._actions if a.choices}
    assert choices["augment"] == ["rescale", "zoom"] and choices["loss"] == ["ce", "ce_dice"]
    assert choices["fit_on"] == ["train", "train+val"]
    assert choices["precision"] == ["auto", "float32", "mixed_bfloat16"]
    assert {"deeplabv3plus", "unet"} <= set(choices["model"])


def test_every_option_parses():
    argv = ["--model", "unet", "--data", "d", "--out", "o", "--epochs", "5", "--batch-size", "2"]
    argv += ["--crop-size", "32", "--input-size", "64", "--lr", "0.01", "--weight-decay", "0", "--warmup-epochs", "1"]
    argv += ["--patience", "3", "--val-every", "2", "--encoder-weights", "hed", "--augment", "zoom", "--loss", "ce"]
    argv += ["--fit-on", "train+val", "--seed", "7", "--limit", "4", "--threads", "1", "--resume", "--no-report"]
    argv += ["--precision", "auto"]
    args = loop.parse_args(argv)
    assert (args.epochs, args.crop_size, args.encoder_weights, args.fit_on, args.val_every) == (
        5,
        32,
        "hed",
        "train+val",
        2,
    )
    assert args.resume and args.no_report and args.precision == "auto"


@pytest.mark.parametrize(
    "extra",
    [
        ["--crop-size", "100"],
        ["--input-size", "250"],
        ["--init-from", "release", "--encoder-weights", "imagenet"],  # every weight comes from the start model
    ],
)
def test_options_that_cannot_work_are_refused(extra):
    with pytest.raises(SystemExit):
        loop.parse_args(["--model", "unet", "--data", "d", *extra])


def test_split_metrics_are_the_table_flat_and_in_a_stable_order():
    truth = np.array([[[0, 0], [1, 2]], [[1, 1], [2, 2]]], np.uint8)
    pred = np.array([[[0, 1], [1, 2]], [[1, 1], [2, 2]]], np.uint8)
    logs = loop.split_metrics(truth, pred)
    assert list(logs) == [
        "val_miou",
        "val_mdice",
        "val_pixel_accuracy",
        "val_iou_corrosion",
        "val_per_image_iou_corrosion",
        "val_iou_asset",
        "val_per_image_iou_asset",
        "val_iou_background",
        "val_per_image_iou_background",
        "val_ratio_mae",
        "val_grade_exact",
        "val_grade_within_one",
    ]
    # summed: corrosion TP 1, FN 1; asset TP 3, FP 1; background TP 3
    assert logs["val_iou_corrosion"] == pytest.approx(1 / 2) and logs["val_iou_asset"] == pytest.approx(3 / 4)
    assert logs["val_miou"] == pytest.approx((1 / 2 + 3 / 4 + 1) / 3)
    assert logs["val_pixel_accuracy"] == pytest.approx(7 / 8)
    # image 0: truth 2 corrosion / 1 asset -> 2/3, prediction 1 / 2 -> 1/3; image 1: 0 and 0
    assert logs["val_ratio_mae"] == pytest.approx((1 / 3) / 2)


def test_make_batches_are_normalised_crops_reshuffled_every_epoch(tf_few_threads):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (5, 32, 32), dtype=np.uint8)
    batches = loop.make_batches(images, masks, batch_size=2, crop=16, seed=1)
    assert len(batches) == 2  # the last, incomplete batch is dropped
    x, y = batches[0]
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.float32 and y.shape == (2, 16, 16) and y.dtype == np.int32
    assert set(np.unique(y)) <= {0, 1, 2}
    first = batches.order.copy()
    batches.on_epoch_end()
    again = loop.make_batches(images, masks, batch_size=2, crop=16, seed=1)
    again.on_epoch_end()
    np.testing.assert_array_equal(batches.order, again.order)  # seeded
    assert sorted(first) == sorted(batches.order) == list(range(5))
