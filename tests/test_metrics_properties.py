"""segserve.metrics properties (hypothesis): confusion-matrix identities, ratio bounds and NaN rules, reductions.

The hand-computed cases live in test_metrics.py; these check the identities on any masks hypothesis draws.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segserve import metrics
from segserve.classes import NUM_CLASSES

# Deterministic (the same examples every run, no example database written into the tree) and quick.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)


def masks(shape) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.uint8, shape, elements=st.integers(0, NUM_CLASSES - 1))


@st.composite
def mask_pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(shapes)
    return draw(masks(shape)), draw(masks(shape))


@st.composite
def mask_stacks(draw) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) truths and predictions, N in 1..4."""
    n = draw(st.integers(1, 4))
    shape = (n, *draw(shapes))
    return draw(masks(shape)), draw(masks(shape))


def _in_unit_or_nan(values: np.ndarray) -> bool:
    defined = values[~np.isnan(values)]
    return bool(np.all((defined >= 0.0) & (defined <= 1.0)))


@PROPERTY
@given(mask_pairs())
def test_confusion_matrix_sums_are_the_pixel_and_class_counts(pair):
    truth, pred = pair
    cm = metrics.confusion_matrix(truth, pred)
    assert cm.shape == (NUM_CLASSES, NUM_CLASSES)
    assert cm.dtype == np.int64
    assert cm.sum() == truth.size
    assert np.all(cm >= 0)
    np.testing.assert_array_equal(cm.sum(axis=1), metrics.class_pixels(truth))
    np.testing.assert_array_equal(cm.sum(axis=0), metrics.class_pixels(pred))
    np.testing.assert_array_equal(metrics.class_pixels(truth), [(truth == c).sum() for c in range(NUM_CLASSES)])
    assert np.trace(cm) == (truth == pred).sum()
    # Swapping truth and prediction transposes the matrix.
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, truth), cm.T)


@PROPERTY
@given(mask_pairs())
def test_iou_and_dice_are_in_the_unit_interval_or_nan_exactly_when_undefined(pair):
    truth, pred = pair
    cm = metrics.confusion_matrix(truth, pred)
    iou, dice = metrics.iou(cm), metrics.dice(cm)
    absent = (cm.sum(axis=0) + cm.sum(axis=1)) == 0  # in neither truth nor prediction
    np.testing.assert_array_equal(np.isnan(iou), absent)
    np.testing.assert_array_equal(np.isnan(dice), absent)
    assert _in_unit_or_nan(iou) and _in_unit_or_nan(dice)
    defined = ~absent
    assert np.all(dice[defined] >= iou[defined])
    np.testing.assert_allclose(dice[defined], 2 * iou[defined] / (1 + iou[defined]), rtol=1e-12, atol=1e-15)
    # A class is perfect (1) exactly when truth and prediction agree on every one of its pixels.
    perfect = np.array([np.array_equal(truth == c, pred == c) for c in range(NUM_CLASSES)])
    np.testing.assert_array_equal(iou[defined] == 1.0, perfect[defined])
    np.testing.assert_array_equal(dice[defined] == 1.0, perfect[defined])


@PROPERTY
@given(mask_pairs())
def test_precision_recall_and_accuracy_bounds(pair):
    truth, pred = pair
    cm = metrics.confusion_matrix(truth, pred)
    prec, rec = metrics.precision(cm), metrics.recall(cm)
    np.testing.assert_array_equal(np.isnan(prec), cm.sum(axis=0) == 0)  # never predicted
    np.testing.assert_array_equal(np.isnan(rec), cm.sum(axis=1) == 0)  # never true
    assert _in_unit_or_nan(prec) and _in_unit_or_nan(rec)
    # IoU is at most the smaller of precision and recall wherever both are defined.
    iou = metrics.iou(cm)
    both = ~np.isnan(prec) & ~np.isnan(rec)
    assert np.all(iou[both] <= np.minimum(prec[both], rec[both]) + 1e-12)
    acc = metrics.pixel_accuracy(cm)
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx((truth == pred).mean(), rel=1e-12)
    assert (acc == 1.0) == np.array_equal(truth, pred)


@PROPERTY
@given(mask_pairs())
def test_report_means_skip_undefined_classes(pair):
    truth, pred = pair
    rep = metrics.report(metrics.confusion_matrix(truth, pred))
    defined = ~np.isnan(rep.iou)
    assert defined.any()  # a non-empty mask has at least one class
    assert rep.mean_iou == pytest.approx(rep.iou[defined].mean(), rel=1e-12)
    assert rep.mean_dice == pytest.approx(rep.dice[defined].mean(), rel=1e-12)
    assert 0.0 <= rep.mean_iou <= rep.mean_dice <= 1.0


@PROPERTY
@given(mask_pairs())
def test_per_image_and_dataset_means_agree_on_one_image(pair):
    truth, pred = pair
    cm = metrics.confusion_matrix(truth, pred)
    per_image = metrics.per_image_means(cm[None])
    rep = metrics.report(cm)
    defined = ~np.isnan(rep.iou)
    # Smoothing differs from the exact ratio by at most 1e-7 / union; an absent class scores 1 per image.
    np.testing.assert_allclose(per_image["iou"][defined], rep.iou[defined], atol=1e-6)
    np.testing.assert_allclose(per_image["dice"][defined], rep.dice[defined], atol=1e-6)
    np.testing.assert_array_equal(per_image["iou"][~defined], 1.0)
    np.testing.assert_array_equal(per_image["dice"][~defined], 1.0)


@PROPERTY
@given(mask_pairs(), st.integers(1, 6))
def test_n_identical_images_score_as_one(pair, n):
    truth, pred = pair
    cm = metrics.confusion_matrix(truth, pred)
    cms = np.stack([metrics.confusion_matrix(truth, pred)] * n)
    whole = metrics.report(cms.sum(axis=0))
    single = metrics.report(cm)
    np.testing.assert_array_equal(cms.sum(axis=0), n * cm)
    np.testing.assert_allclose(whole.iou, single.iou, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(whole.dice, single.dice, rtol=1e-12, equal_nan=True)
    assert whole.mean_iou == pytest.approx(single.mean_iou, rel=1e-12)
    assert whole.pixel_accuracy == pytest.approx(single.pixel_accuracy, rel=1e-12)
    per_image = metrics.per_image_means(cms)
    np.testing.assert_allclose(per_image["iou"], metrics.smoothed_iou(cm), rtol=1e-12)
    np.testing.assert_allclose(per_image["dice"], metrics.smoothed_dice(cm), rtol=1e-12)


@PROPERTY
@given(mask_stacks())
def test_dataset_matrix_is_the_sum_of_the_image_matrices(stack):
    truths, preds = stack
    cms = np.stack([metrics.confusion_matrix(t, p) for t, p in zip(truths, preds, strict=True)])
    np.testing.assert_array_equal(cms.sum(axis=0), metrics.confusion_matrix(truths, preds))
    per_image = metrics.per_image_means(cms)
    for values in (per_image["iou"], per_image["dice"]):
        assert values.shape == (NUM_CLASSES,)
        assert np.all((values >= 0.0) & (values <= 1.0 + 1e-12))


@PROPERTY
@given(mask_stacks())
def test_ratio_agreement_bounds(stack):
    truths, preds = stack
    result = metrics.ratio_agreement(truths, preds)
    assert set(result) == {"ratio_mae", "grade_exact", "grade_within_one"}
    assert 0.0 <= result["ratio_mae"] <= 1.0
    assert 0.0 <= result["grade_exact"] <= result["grade_within_one"] <= 1.0
    ratios_t = [metrics.corrosion_asset_ratio(metrics.class_pixels(t)) for t in truths]
    ratios_p = [metrics.corrosion_asset_ratio(metrics.class_pixels(p)) for p in preds]
    assert result["ratio_mae"] == pytest.approx(np.mean(np.abs(np.subtract(ratios_t, ratios_p))), abs=1e-12)


@PROPERTY
@given(mask_stacks())
def test_ratio_agreement_of_identical_masks_is_perfect(stack):
    truths, _ = stack
    result = metrics.ratio_agreement(truths, truths.copy())
    assert result == {"ratio_mae": 0.0, "grade_exact": 1.0, "grade_within_one": 1.0}


@PROPERTY
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=20))
def test_rust_grade_is_monotone_in_the_ratio(ratios):
    ratios = sorted(ratios)
    grades = [metrics.rust_grade(r) for r in ratios]
    assert all(0 <= g <= 10 for g in grades)
    assert all(a >= b for a, b in zip(grades, grades[1:], strict=False))
    assert metrics.rust_grade(0.0) == 10 and metrics.rust_grade(1.0) == 0


@PROPERTY
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_corrosion_asset_ratio_bounds(rusted, sound, background):
    ratio = metrics.corrosion_asset_ratio(np.array([rusted, sound, background]))
    assert 0.0 <= ratio <= 1.0
    if rusted + sound:
        assert ratio == pytest.approx(rusted / (rusted + sound))
    else:
        assert ratio == 0.0


@PROPERTY
@given(mask_pairs(), st.integers(NUM_CLASSES, 255), st.booleans(), st.data())
def test_an_id_outside_the_class_table_is_refused(pair, bad, in_truth, data):
    truth, pred = (m.copy() for m in pair)
    target = truth if in_truth else pred
    row = data.draw(st.integers(0, target.shape[0] - 1))
    col = data.draw(st.integers(0, target.shape[1] - 1))
    target[row, col] = bad
    where = "truth" if in_truth else "prediction"
    with pytest.raises(ValueError, match=rf"^{where} has class id {bad}; class ids must be 0\.\.{NUM_CLASSES - 1}"):
        metrics.confusion_matrix(truth, pred)
    with pytest.raises(ValueError, match=rf"^mask has class id {bad};"):
        metrics.class_pixels(target)


@PROPERTY
@given(mask_stacks())
def test_table_is_the_stages_reduced(stack):
    """The table holds exactly what the two stages give: the summed matrix's report, the per-image means and
    matrices, and the inspector's numbers."""
    truths, preds = stack
    table = metrics.table(truths, preds)
    cms = np.stack([metrics.confusion_matrix(t, p) for t, p in zip(truths, preds, strict=True)])
    rep = metrics.report(cms.sum(axis=0))
    per_image = metrics.per_image_means(cms)
    assert table["num_images"] == len(truths)
    assert table["confusion_matrix"] == rep.confusion.tolist()
    for key in ("iou", "dice", "precision", "recall", "true_pixels", "predicted_pixels"):
        np.testing.assert_array_equal([row[key] for row in table["per_class"]], getattr(rep, key))
    for key in ("iou", "dice"):
        np.testing.assert_array_equal([row[f"per_image_{key}"] for row in table["per_class"]], per_image[key])
    np.testing.assert_array_equal([table["mean_iou"], table["mean_dice"]], [rep.mean_iou, rep.mean_dice])
    assert table["pixel_accuracy"] == rep.pixel_accuracy
    np.testing.assert_array_equal(table["images"]["iou"], metrics.iou(cms))
    assert {k: table[k] for k in metrics.RATIO_KEYS} == metrics.ratio_agreement(truths, preds)
    ratios = [metrics.corrosion_asset_ratio(metrics.class_pixels(t)) for t in truths]
    assert table["images"]["truth_ratio"] == ratios
    assert table["images"]["truth_grade"] == [metrics.rust_grade(r) for r in ratios]
