"""segserve.metrics: confusion matrices on micro masks, ratios as hand-computed fractions, NaN rules, D610 grades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segserve import metrics

# 4x4 case: rows = truth, columns = prediction.
TRUTH_4 = np.array(
    [
        [0, 0, 0, 0],
        [0, 0, 1, 1],
        [1, 1, 1, 1],
        [2, 2, 2, 2],
    ],
    np.uint8,
)
PRED_4 = np.array(
    [
        [0, 0, 0, 1],
        [0, 1, 1, 1],
        [1, 1, 1, 2],
        [2, 2, 2, 2],
    ],
    np.uint8,
)
# truth 0 (6 px): predicted 0 four times, 1 twice; truth 1 (6 px): 1 five times, 2 once; truth 2 (4 px): 2.
CM_4 = np.array([[4, 2, 0], [0, 5, 1], [0, 0, 4]])
# TP = (4, 5, 4), FP = column sums - TP = (0, 2, 1), FN = row sums - TP = (2, 1, 0).


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        pytest.param(
            [[0, 0, 1], [1, 1, 2], [2, 2, 2]],
            [[0, 1, 1], [1, 2, 2], [2, 2, 0]],
            [[1, 1, 0], [0, 2, 1], [1, 0, 3]],
            id="3x3",
        ),
        pytest.param(TRUTH_4, PRED_4, CM_4, id="4x4"),
        pytest.param([[2, 2], [2, 2]], [[2, 2], [2, 2]], [[0, 0, 0], [0, 0, 0], [0, 0, 4]], id="all-background"),
        pytest.param([[0, 1], [2, 0]], [[2, 0], [1, 2]], [[0, 0, 2], [1, 0, 0], [0, 1, 0]], id="all-wrong"),
    ],
)
def test_confusion_matrix(truth, pred, expected):
    cm = metrics.confusion_matrix(np.array(truth, np.uint8), np.array(pred, np.uint8))
    assert cm.shape == (3, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_num_classes():
    cm = metrics.confusion_matrix(np.array([[3, 0]]), np.array([[3, 3]]), num_classes=4)
    expected = np.zeros((4, 4), np.int64)
    expected[3, 3] = 1
    expected[0, 3] = 1
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.confusion_matrix(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (metrics.iou, [4 / 6, 5 / 8, 4 / 5]),
        (metrics.dice, [8 / 10, 10 / 13, 8 / 9]),
        (metrics.precision, [4 / 4, 5 / 7, 4 / 5]),
        (metrics.recall, [4 / 6, 5 / 6, 4 / 4]),
    ],
    ids=["iou", "dice", "precision", "recall"],
)
def test_per_class_ratios(fn, expected):
    values = fn(CM_4)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_report_on_4x4():
    rep = metrics.report(CM_4)
    assert rep.mean_iou == pytest.approx((4 / 6 + 5 / 8 + 4 / 5) / 3)
    assert rep.mean_dice == pytest.approx((8 / 10 + 10 / 13 + 8 / 9) / 3)
    assert rep.pixel_accuracy == pytest.approx(13 / 16)
    np.testing.assert_array_equal(rep.true_pixels, [6, 6, 4])
    np.testing.assert_array_equal(rep.predicted_pixels, [4, 7, 5])


def test_class_absent_from_truth_and_prediction_is_nan_and_skipped():
    # No corrosion anywhere. cm = [[0,0,0],[0,1,0],[0,1,2]]: TP (0,1,2), FP (0,1,0), FN (0,0,1).
    truth = np.array([[1, 2], [2, 2]], np.uint8)
    pred = np.array([[1, 1], [2, 2]], np.uint8)
    rep = metrics.report(metrics.confusion_matrix(truth, pred))
    np.testing.assert_array_equal(rep.confusion, [[0, 0, 0], [0, 1, 0], [0, 1, 2]])
    for values in (rep.iou, rep.dice, rep.precision, rep.recall):
        assert math.isnan(values[0])
    np.testing.assert_allclose(rep.iou[1:], [1 / 2, 2 / 3])
    np.testing.assert_allclose(rep.dice[1:], [2 / 3, 4 / 5])
    np.testing.assert_allclose(rep.precision[1:], [1 / 2, 2 / 2])
    np.testing.assert_allclose(rep.recall[1:], [1 / 1, 2 / 3])
    assert rep.mean_iou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert rep.mean_dice == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert rep.pixel_accuracy == pytest.approx(3 / 4)


def test_never_predicted_class_has_nan_precision_but_zero_recall_and_iou():
    # Corrosion is in the truth once and never predicted.
    truth = np.array([[0, 1], [2, 2]], np.uint8)
    pred = np.array([[1, 1], [2, 2]], np.uint8)
    cm = metrics.confusion_matrix(truth, pred)
    assert math.isnan(metrics.precision(cm)[0])
    assert metrics.recall(cm)[0] == 0.0
    assert metrics.iou(cm)[0] == 0.0
    assert metrics.dice(cm)[0] == 0.0
    assert metrics.precision(cm)[1] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, float("nan"), 1.0], 0.75),
        ([0.2, 0.4, 0.9], 0.5),
        ([float("nan"), float("nan")], float("nan")),
    ],
)
def test_nanmean(values, expected):
    result = metrics.nanmean(np.array(values))
    if math.isnan(expected):
        assert math.isnan(result)
    else:
        assert result == pytest.approx(expected)


def test_pixel_accuracy_of_empty_matrix_is_nan():
    assert math.isnan(metrics.pixel_accuracy(np.zeros((3, 3), np.int64)))


def test_smoothed_metrics_score_absent_class_as_one():
    truth = np.array([[1, 2], [2, 2]], np.uint8)
    pred = np.array([[1, 1], [2, 2]], np.uint8)
    cm = metrics.confusion_matrix(truth, pred)
    np.testing.assert_allclose(metrics.smoothed_iou(cm), [1.0, 1 / 2, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(metrics.smoothed_dice(cm), [1.0, 2 / 3, 4 / 5], atol=1e-6)
    assert metrics.smoothed_iou(cm)[0] == 1.0


def test_smoothed_metrics_of_a_missed_class_are_near_zero():
    truth = np.array([[0, 2], [2, 2]], np.uint8)
    pred = np.full((2, 2), 2, np.uint8)
    cm = metrics.confusion_matrix(truth, pred)
    assert metrics.smoothed_iou(cm)[0] == pytest.approx(0.0, abs=1e-6)
    assert metrics.smoothed_dice(cm)[0] == pytest.approx(0.0, abs=1e-6)


def test_per_image_means_differ_from_the_split_report():
    # Image A: its single corrosion pixel is missed. Image B: its three corrosion pixels are all found.
    truth_a, pred_a = np.array([[0, 2], [2, 2]]), np.array([[2, 2], [2, 2]])
    truth_b, pred_b = np.array([[0, 0], [0, 2]]), np.array([[0, 0], [0, 2]])
    cms = np.stack([metrics.confusion_matrix(truth_a, pred_a), metrics.confusion_matrix(truth_b, pred_b)])
    np.testing.assert_array_equal(cms[0], [[0, 0, 1], [0, 0, 0], [0, 0, 3]])
    np.testing.assert_array_equal(cms[1], [[3, 0, 0], [0, 0, 0], [0, 0, 1]])

    per_image = metrics.per_image_means(cms)
    # corrosion: (0 + 1) / 2; asset absent from both -> 1 in each; background: (3/4 + 1/1) / 2.
    np.testing.assert_allclose(per_image["iou"], [0.5, 1.0, 0.875], atol=1e-6)
    # Dice corrosion (0 + 1) / 2; background (6/7 + 2/2) / 2.
    np.testing.assert_allclose(per_image["dice"], [0.5, 1.0, (6 / 7 + 1) / 2], atol=1e-6)

    rep = metrics.report(cms.sum(axis=0))  # [[3,0,1],[0,0,0],[0,0,4]]
    assert rep.iou[0] == pytest.approx(3 / 4)
    assert math.isnan(rep.iou[1])
    assert rep.iou[2] == pytest.approx(4 / 5)
    assert rep.mean_iou == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert rep.iou[0] != pytest.approx(per_image["iou"][0])


def test_dataset_matrix_is_the_sum_of_image_matrices():
    rng = np.random.default_rng(3)
    truths = rng.integers(0, 3, size=(4, 5, 6))
    preds = rng.integers(0, 3, size=(4, 5, 6))
    per_image = np.stack([metrics.confusion_matrix(t, p) for t, p in zip(truths, preds, strict=True)])
    whole = metrics.confusion_matrix(truths, preds)
    np.testing.assert_array_equal(per_image.sum(axis=0), whole)
    assert whole.sum() == 4 * 5 * 6
    # The per-class functions also reduce a stack of matrices image by image.
    np.testing.assert_allclose(metrics.iou(per_image)[2], metrics.iou(per_image[2]))


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ([[0, 0, 1], [2, 2, 2]], [2, 1, 3]),
        ([[2, 2], [2, 2]], [0, 0, 4]),
        ([[1]], [0, 1, 0]),
    ],
)
def test_class_pixels(mask, expected):
    counts = metrics.class_pixels(np.array(mask, np.uint8))
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        ([1, 3, 100], 0.25),
        ([2, 0, 7], 1.0),
        ([0, 5, 7], 0.0),
        ([0, 0, 9], 0.0),  # no asset and no corrosion: 0, not a division by zero
        ([0, 0, 0], 0.0),
    ],
)
def test_corrosion_asset_ratio(pixels, expected):
    assert metrics.corrosion_asset_ratio(np.array(pixels)) == expected


D610 = [
    (10, 0.0001),
    (9, 0.0003),
    (8, 0.001),
    (7, 0.003),
    (6, 0.01),
    (5, 0.03),
    (4, 0.10),
    (3, 0.16),
    (2, 0.33),
    (1, 0.50),
]


@pytest.mark.parametrize(("grade", "limit"), D610, ids=[f"grade{g}" for g, _ in D610])
def test_rust_grade_boundaries(grade, limit):
    assert metrics.rust_grade(limit) == grade  # the limit itself still has this grade
    assert metrics.rust_grade(np.nextafter(limit, 1.0)) == grade - 1  # just above it is the next grade down
    assert metrics.rust_grade(limit * 0.999) == grade


@pytest.mark.parametrize(("ratio", "grade"), [(0.0, 10), (0.5001, 0), (1.0, 0)])
def test_rust_grade_extremes(ratio, grade):
    assert metrics.rust_grade(ratio) == grade


@pytest.mark.parametrize(
    ("pixels", "grade"),
    [
        ([1, 9999, 0], 10),  # exactly 0.01 % rusted
        ([2, 9998, 0], 9),
        ([1, 1, 50], 1),  # exactly half
        ([0, 0, 100], 10),  # nothing to rust
    ],
)
def test_rust_grade_from_pixel_counts(pixels, grade):
    assert metrics.rust_grade(metrics.corrosion_asset_ratio(np.array(pixels))) == grade


@pytest.mark.parametrize(
    ("truth", "pred", "bad", "where"),
    [
        pytest.param([[0, 3]], [[0, 0]], 3, "truth", id="truth-above"),  # 3 * 3 + 0 would be cell (1, 0)
        pytest.param([[0, 1]], [[0, 3]], 3, "prediction", id="pred-above"),  # 0 * 3 + 3 would be cell (1, 0)
        pytest.param([[1, 0]], [[-1, 0]], -1, "prediction", id="pred-negative"),  # 1 * 3 - 1 would be cell (0, 2)
        pytest.param([[255, 0]], [[0, 0]], 255, "truth", id="truth-255"),
    ],
)
def test_confusion_matrix_rejects_ids_outside_the_class_table(truth, pred, bad, where):
    with pytest.raises(ValueError, match=rf"{where} has class id {bad}; class ids must be 0\.\.2"):
        metrics.confusion_matrix(np.array(truth), np.array(pred))


def test_confusion_matrix_range_follows_num_classes():
    with pytest.raises(ValueError, match=r"truth has class id 4; class ids must be 0\.\.3"):
        metrics.confusion_matrix(np.array([[4]]), np.array([[0]]), num_classes=4)


def test_confusion_matrix_of_empty_masks_is_zero():
    cm = metrics.confusion_matrix(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8))
    np.testing.assert_array_equal(cm, np.zeros((3, 3), np.int64))


@pytest.mark.parametrize(
    ("mask", "bad"),
    [([[0, 1], [2, 3]], 3), ([[7]], 7), ([[0, -2]], -2)],
)
def test_class_pixels_rejects_ids_outside_the_class_table(mask, bad):
    with pytest.raises(ValueError, match=rf"mask has class id {bad}; class ids must be 0\.\.2"):
        metrics.class_pixels(np.array(mask))


def test_class_pixels_of_an_empty_mask_is_zero():
    np.testing.assert_array_equal(metrics.class_pixels(np.zeros((0, 0), np.uint8)), [0, 0, 0])


# --- the metrics table ---------------------------------------------------------------------------------------

# Two images. Image 0 is the 4x4 case above; image 1 (2x2): truth [[0, 1], [1, 1]], prediction [[1, 1], [1, 2]].
TRUTH_2 = np.array([[0, 1], [1, 1]], np.uint8)
PRED_2 = np.array([[1, 1], [1, 2]], np.uint8)
# image 1: truth 0 -> 1 once; truth 1 -> 1 twice, -> 2 once. CM = [[0, 1, 0], [0, 2, 1], [0, 0, 0]]:
# TP (0, 2, 0), FP (0, 1, 1), FN (1, 1, 0)
# summed CM = [[4, 3, 0], [0, 7, 2], [0, 0, 4]]: TP (4, 7, 4), FP (0, 3, 2), FN (3, 2, 0)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("iou", [4 / 7, 7 / 12, 4 / 6]),
        ("dice", [8 / 11, 14 / 19, 8 / 10]),
        ("precision", [4 / 4, 7 / 10, 4 / 6]),
        ("recall", [4 / 7, 7 / 9, 4 / 4]),
        ("true_pixels", [7, 9, 4]),
        ("predicted_pixels", [4, 10, 6]),
    ],
)
def test_table_rows_are_the_summed_matrix_metrics(key, expected):
    table = metrics.table([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    assert [row[key] for row in table["per_class"]] == pytest.approx(expected)


def test_table_means_accuracy_and_matrix():
    table = metrics.table([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    assert table["num_images"] == 2
    assert [(r["class_id"], r["name"]) for r in table["per_class"]] == [
        (0, "corrosion"),
        (1, "asset"),
        (2, "background"),
    ]
    assert table["mean_iou"] == pytest.approx((4 / 7 + 7 / 12 + 4 / 6) / 3)
    assert table["mean_dice"] == pytest.approx((8 / 11 + 14 / 19 + 8 / 10) / 3)
    assert table["pixel_accuracy"] == pytest.approx(15 / 20)
    assert table["confusion_matrix"] == [[4, 3, 0], [0, 7, 2], [0, 0, 4]]


def test_table_per_image_numbers():
    table = metrics.table([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    s = metrics.SMOOTH
    # smoothed per image, then averaged: in image 1 corrosion is missed (0) and background only predicted (0)
    iou_1 = [s / (1 + s), 2 / 4, s / (1 + s)]
    dice_1 = [s / (1 + s), 4 / 6, s / (1 + s)]
    for row, iou_0, dice_0, iou1, dice1 in zip(
        table["per_class"], [4 / 6, 5 / 8, 4 / 5], [8 / 10, 10 / 13, 8 / 9], iou_1, dice_1, strict=True
    ):
        assert row["per_image_iou"] == pytest.approx((iou_0 + iou1) / 2)
        assert row["per_image_dice"] == pytest.approx((dice_0 + dice1) / 2)
    assert table["per_image_mean_iou"] == pytest.approx(np.mean([r["per_image_iou"] for r in table["per_class"]]))
    # each image's own IoU, unsmoothed
    images = table["images"]
    assert images["iou"][0] == pytest.approx([4 / 6, 5 / 8, 4 / 5])
    assert images["iou"][1] == pytest.approx([0.0, 2 / 4, 0.0])
    assert images["mean_iou"] == pytest.approx([(4 / 6 + 5 / 8 + 4 / 5) / 3, 1 / 6])


def test_table_inspector_numbers():
    # image 0: truth 6 corrosion / 6 asset -> 0.5 (grade 1), prediction 4 / 7 -> 4/11 (grade 1)
    # image 1: truth 1 / 3 -> 0.25 (grade 2), prediction 0 / 3 -> 0 (grade 10)
    table = metrics.table([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    images = table["images"]
    assert images["truth_ratio"] == pytest.approx([0.5, 0.25])
    assert images["predicted_ratio"] == pytest.approx([4 / 11, 0.0])
    assert (images["truth_grade"], images["predicted_grade"]) == ([1, 2], [1, 10])
    assert table["ratio_mae"] == pytest.approx((0.5 - 4 / 11 + 0.25) / 2)
    assert (table["grade_exact"], table["grade_within_one"]) == (0.5, 0.5)
    agreement = metrics.ratio_agreement([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    assert {k: table[k] for k in metrics.RATIO_KEYS} == agreement


def test_table_class_absent_everywhere_is_nan_and_the_means_skip_it():
    truth = np.array([[[1, 1], [2, 2]]], np.uint8)
    table = metrics.table(truth, truth.copy())
    corrosion = table["per_class"][0]
    assert all(math.isnan(corrosion[k]) for k in ("iou", "dice", "precision", "recall"))
    assert corrosion["per_image_iou"] == pytest.approx(1.0)  # the smoothed metric scores an absent class 1
    assert table["mean_iou"] == 1.0 and table["pixel_accuracy"] == 1.0
    assert math.isnan(table["images"]["iou"][0][0]) and table["images"]["mean_iou"] == [1.0]


def test_table_needs_pairs():
    with pytest.raises(ValueError, match="same non-zero number"):
        metrics.table([], [])
    with pytest.raises(ValueError, match="same non-zero number"):
        metrics.table([TRUTH_4], [PRED_4, PRED_4])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.table([TRUTH_4], [PRED_2])


def test_table_is_plain_python():
    import json

    table = metrics.table([TRUTH_4, TRUTH_2], [PRED_4, PRED_2])
    json.dumps(table)  # no NumPy values anywhere
