"""training.calibrate: rank correlation, the threshold rule on hand-made photos, and a calibration of tiny
stand-in models on a small synthetic split that writes thresholds which behave."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest

from segserve import imaging, metrics, review
from segserve.predictor import Predictor
from segserve.review import ImageQuality, ReviewThresholds
from tests.two_models import two_model_settings
from training import calibrate

NAMES = ("deeplabv3plus", "unet")
INPUT_SIZE = 32
VAL = ["003", "004", "005", "006"]


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),  # 1 - 6 * 2 / (4 * 15)
        ([0.1, 0.5, 0.2, 0.9, 0.3], [5, 1, 4, 2, 3], -0.9),  # ranks 1 4 2 5 3 vs 5 1 4 2 3: 1 - 6 * 38 / 120
    ],
)
def test_spearman(x, y, expected):
    assert calibrate.spearman(x, y) == pytest.approx(expected)


def test_ranks_share_ties_and_constant_series_have_no_correlation():
    assert calibrate.rank([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert calibrate.spearman([1, 1, 1], [1, 2, 3]) is None
    assert calibrate.spearman([1, 2], [1, 2]) is None


def _photo(id_: str, low_fraction: float, ratio_error: float, agreement: float = 0.9) -> calibrate.Photo:
    confidences = {
        t: review.Confidence(per_class=np.full(3, 0.8), mean=0.8, low_fraction=low_fraction)
        for t in calibrate.CONFIDENCE_THRESHOLDS
    }
    return calibrate.Photo(
        id=id_,
        mean_confidence=0.8,
        low_fraction={t: low_fraction for t in calibrate.CONFIDENCE_THRESHOLDS},
        confidences=confidences,
        pixels=np.array([100, 400, 500]),
        quality=ImageQuality(min_side=256, brightness=100.0, sharpness=1000.0),
        agreement=agreement,
        mean_iou=0.5,
        ratio_error=ratio_error,
    )


def test_the_rule_flags_the_photo_that_carries_the_error():
    photos = [_photo("a", 0.9, 0.5), _photo("b", 0.1, 0.0), _photo("c", 0.2, 0.0), _photo("d", 0.1, 0.0)]
    chosen = calibrate.choose_confidence(photos, ReviewThresholds())
    # flagging "a" alone scores 1 - 1/4; the limit lies halfway between 0.2 and 0.9; ties: lowest threshold
    assert chosen.max_low_confidence_fraction == pytest.approx(0.55)
    assert chosen.confidence_threshold == calibrate.CONFIDENCE_THRESHOLDS[0]
    assert calibrate.flags(photos, chosen, ensemble=False).tolist() == [True, False, False, False]
    numbers = calibrate.summary(photos, chosen, False, "val")
    assert (numbers["flagged"], numbers["unflagged"]) == (1, 3)
    assert numbers["flagged_ratio_mae"] == pytest.approx(0.5) and numbers["unflagged_ratio_mae"] == 0.0
    assert numbers["flagged_share_of_ratio_error"] == pytest.approx(1.0)
    held_out = np.array([False, False, True, False])  # the bad answer missed when held out, a good one flagged
    large = calibrate.summary(photos, chosen, False, "val", held_out)["large_error"]
    assert large == {"threshold": 0.1, "photos": 1, "flagged": 1, "held_out_flagged": 0}


def test_the_rule_never_flags_more_than_half_and_agreement_adds_the_disagreeing_photo():
    photos = [_photo(str(i), 0.9, 0.1) for i in range(4)]  # every photo equally bad: flagging gains nothing
    chosen = calibrate.choose_confidence(photos, ReviewThresholds())
    assert not calibrate.flags(photos, chosen, ensemble=False).any()

    photos = [_photo("a", 0.1, 0.4, agreement=0.2), _photo("b", 0.1, 0.0, 0.8), _photo("c", 0.1, 0.0, 0.9)]
    base = replace(ReviewThresholds(), max_low_confidence_fraction=0.5)
    chosen = calibrate.choose_agreement(photos, base)
    assert chosen.min_agreement == pytest.approx(0.5)  # halfway between 0.2 and 0.8
    assert calibrate.flags(photos, chosen, ensemble=True).tolist() == [True, False, False]


def test_held_out_flags_choose_without_the_photo():
    photos = [_photo("a", 0.9, 0.5), _photo("b", 0.8, 0.4), _photo("c", 0.1, 0.0), _photo("d", 0.2, 0.0)]
    held_out = calibrate.held_out_flags(
        photos, lambda keep: calibrate.choose_confidence([photos[k] for k in keep], ReviewThresholds()), False
    )
    assert held_out.tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def tiny_models(tf_few_threads):
    import keras

    from tests.servers import tiny_model

    keras.utils.set_random_seed(1)
    return {name: tiny_model(name) for name in NAMES}


def test_calibration_writes_thresholds_that_behave(make_dataset, tiny_models, monkeypatch, tmp_path):
    data = make_dataset(n=6, size=(48, 64), splits={"train": ["001", "002"], "val": VAL})
    release = tmp_path / "models"
    release.mkdir()
    for name in NAMES:
        meta = {"architecture": name, "input_size": INPUT_SIZE, "val_metrics": {"mean_iou": 0.5}, "kept": [1, 2]}
        (release / f"{name}.json").write_text(json.dumps(meta))
    metas = {name: {"input_size": INPUT_SIZE} for name in NAMES}
    monkeypatch.setattr(calibrate, "load_releases", lambda release_dir, names: (tiny_models, metas))
    report = tmp_path / "docs" / "review_calibration.md"
    argv = ["--data", str(data.root), "--split", "val", "--release-dir", str(release), "--write", "--out", str(report)]
    calibrate.calibrate(calibrate.parse_args(argv), argv)

    images = [data.images[i] for i in VAL]
    truths = [data.masks[i] for i in VAL]
    inputs = np.stack([imaging.resize_image(image, INPUT_SIZE) for image in images])
    qualities = [review.image_quality(x, min_side=48) for x in inputs]  # as the server measures them
    masks = {
        n: [imaging.upsample_mask(m, 64, 48) for m in Predictor(tiny_models[n]).predict(inputs).mask] for n in NAMES
    }
    written = {n: json.loads((release / f"{n}.json").read_text()) for n in NAMES}
    for name, meta in written.items():
        assert meta["kept"] == [1, 2] and meta["val_metrics"]["mean_iou"] == 0.5  # every other key is kept
        ratio = metrics.ratio_agreement(truths, masks[name])
        for key in ("ratio_mae", "grade_exact", "grade_within_one"):
            assert meta["val_metrics"][key] == pytest.approx(ratio[key])
        block = meta["review"]
        assert set(block) == {f.name for f in fields(ReviewThresholds)} | {"calibration"}
        assert block["min_side"] == 33  # half of 48 is under the floor that makes a 32x32 photo too small
        assert block["min_brightness"] == pytest.approx(max(10.0, min(q.brightness for q in qualities) / 2), abs=0.01)
        assert block["min_sharpness"] == pytest.approx(max(1.0, min(q.sharpness for q in qualities) / 2), abs=0.01)
        assert block["confidence_threshold"] in calibrate.CONFIDENCE_THRESHOLDS
        cal = block["calibration"]
        assert (cal["split"], cal["n_images"]) == ("val", 4)
        assert cal["flagged"] + cal["unflagged"] == 4 and cal["flagged"] <= 2
        errors = [abs(metrics.corrosion_asset_ratio(metrics.class_pixels(m)) - 0.25) for m in masks[name]]
        assert cal["ratio_mae"] == pytest.approx(np.mean(errors))  # every synthetic truth has a ratio of 0.25
        assert (
            cal["ensemble"]["n_images"] == 4
            and cal["ensemble"]["thresholds"]["min_agreement"] == block["min_agreement"]
        )
        assert "held_out" in cal and None not in cal.values()  # an undefined correlation is left out
        large = cal["large_error"]
        assert large["threshold"] == calibrate.LARGE_ERROR == 0.1
        assert large["photos"] == sum(e > 0.1 for e in errors) and large["flagged"] <= large["photos"]
    assert written["deeplabv3plus"]["review"]["min_agreement"] == written["unet"]["review"]["min_agreement"]
    # what GET /models reports of it (the ensemble's from the default model's metadata)
    from segserve.catalog import Catalog

    served = {n: {"version": "v", "input_size": INPUT_SIZE, "metadata": written[n]} for n in NAMES}
    catalog = Catalog(two_model_settings(), served)
    for name in NAMES:
        told = catalog.review_calibration(name)
        assert told["n_images"] == 4 and told["flagged"] == written[name]["review"]["calibration"]["flagged"]
        assert told["large_error"] == written[name]["review"]["calibration"]["large_error"]
    assert (
        catalog.review_calibration("ensemble")["flagged"]
        == written["deeplabv3plus"]["review"]["calibration"]["ensemble"]["flagged"]
    )
    ensemble_probs = np.mean([Predictor(tiny_models[n]).probabilities(inputs) for n in NAMES], axis=0)
    ensemble_masks = [imaging.upsample_mask(p.argmax(axis=-1).astype(np.uint8), 64, 48) for p in ensemble_probs]
    ensemble = written["deeplabv3plus"]["ensemble_val_metrics"]
    assert ensemble == written["unet"]["ensemble_val_metrics"]
    assert ensemble["num_images"] == 4 and ensemble["split"] == "val"
    cm = np.sum([metrics.confusion_matrix(t, m) for t, m in zip(truths, ensemble_masks, strict=True)], axis=0)
    assert ensemble["mean_iou"] == pytest.approx(metrics.report(cm).mean_iou)
    assert ensemble["ratio_mae"] == pytest.approx(metrics.ratio_agreement(truths, ensemble_masks)["ratio_mae"])

    thresholds = ReviewThresholds.from_metadata(written["deeplabv3plus"])
    confident = review.Confidence(per_class=np.full(3, 0.99), mean=0.99, low_fraction=0.0)
    pixels = np.array([100, 300, 600])

    def reasons(image):
        return review.review_reasons(confident, review.image_quality(image), pixels, thresholds)

    assert review.IMAGE_TOO_BLURRED in reasons(np.full((256, 256, 3), 128, np.uint8))  # blank
    assert review.IMAGE_TOO_SMALL in reasons(np.asarray(images[0][:32, :32]))
    assert review.IMAGE_TOO_DARK in reasons(np.zeros((256, 256, 3), np.uint8))
    for image in images:
        assert reasons(image) == []  # no photo of the split fails an image check
    text = report.read_text()
    assert "python -m training.calibrate --data" in text and "Spearman" in text and "held out" in text


def test_the_ensemble_calibrated_is_the_served_one_when_its_models_are_given(monkeypatch):
    monkeypatch.setattr(calibrate.architectures, "ENSEMBLE_MEMBERS", ("unet-vgg16", "deeplabv3plus-vgg16"))
    every = ("deeplabv3plus", "unet", "unet-vgg16", "deeplabv3plus-vgg16")
    assert calibrate.ensemble_members(every) == ("unet-vgg16", "deeplabv3plus-vgg16")
    assert calibrate.ensemble_members(("deeplabv3plus", "unet")) == ("deeplabv3plus", "unet")  # another pair: both
    assert calibrate.ensemble_members(("unet",)) == ()
