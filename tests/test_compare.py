"""training.compare: the options' names and costs, paired differences, and a run with tiny stand-in models on a
small synthetic split whose numbers are recomputed here the way the server answers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from segserve import imaging, metrics
from segserve.predictor import Predictor
from training import compare

NAMES = ("deeplabv3plus", "unet")
INPUT_SIZE = 32


def test_options_cover_each_model_and_the_ensemble_with_and_without_flip():
    rows = compare.options(NAMES)
    assert [o.name for o in rows] == [
        "deeplabv3plus",
        "deeplabv3plus+flip",
        "unet",
        "unet+flip",
        "ensemble",
        "ensemble+flip",
    ]
    assert [o.passes for o in rows] == [1, 2, 1, 2, 2, 4]
    assert [o.label for o in rows][-1] == "ensemble + flip TTA"
    assert [o.name for o in compare.options(("unet",))] == ["unet", "unet+flip"]


def test_the_ensemble_rows_are_the_served_ensembles_members():
    rows = compare.options(("deeplabv3plus", "unet", "unet-vgg16"), ensemble=("unet", "unet-vgg16"))
    assert [o.name for o in rows][-2:] == ["ensemble", "ensemble+flip"]
    assert rows[-1].models == ("unet", "unet-vgg16") and rows[-1].passes == 4
    assert [o.name for o in compare.options(("unet", "unet-vgg16"), ensemble=("unet",))] == [
        "unet",
        "unet+flip",
        "unet-vgg16",
        "unet-vgg16+flip",
    ]


def test_sizes_add_rows_after_each_models_flip_row():
    rows = compare.options(("unet", "unet-vgg16"), ensemble=("unet-vgg16",), sizes=[(192,), (192, 256)])
    assert [o.name for o in rows] == [
        "unet",
        "unet+flip",
        "unet@192",
        "unet@192+256",
        "unet-vgg16",
        "unet-vgg16+flip",
        "unet-vgg16@192",
        "unet-vgg16@192+256",
    ]
    assert [o.passes for o in rows][2:4] == [1, 2]


@pytest.mark.parametrize("text", ["abc", "192,", "100", "0", "2048", "256,256"])
def test_a_bad_size_group_is_refused_with_a_clear_error(text, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.parse_args(["--data", "d", "--sizes", text])
    assert exc.value.code == 2
    assert "--sizes" in capsys.readouterr().err
    assert compare.parse_args(["--data", "d", "--sizes", "192", "--sizes", "192,256,320"]).sizes == [
        (192,),
        (192, 256, 320),
    ]


def test_the_ensemble_is_set_against_its_members_only():
    def fake(option, mean_iou):
        return {
            "option": option,
            "models": ["a", "b"] if option == "ensemble" else [option],
            "label": option,
            "mean_iou": mean_iou,
            "per_image_mean_iou": mean_iou,
            "photo_mean_iou": [mean_iou] * 3,
            "photo_ratio_error": [0.1] * 3,
            "grade_exact": 0.5,
            "grade_within_one": 0.5,
            "ms_per_image": 10.0,
        }

    lines = compare.differences([fake("a", 0.4), fake("b", 0.5), fake("c", 0.6), fake("ensemble", 0.55)])
    assert len(lines) == 2
    assert lines[0].startswith("- ensemble vs a: mean IoU +15.00")
    assert lines[1].startswith("- ensemble vs b: mean IoU +5.00")


def test_paired_differences():
    d = compare.paired([0.5, 0.7, 0.9, 0.4], [0.5, 0.5, 0.5, 0.5])
    assert d["mean"] == pytest.approx(0.125)  # (0 + 0.2 + 0.4 - 0.1) / 4
    assert (d["up"], d["down"]) == (2, 1)
    assert -0.1 <= d["low"] <= d["mean"] <= d["high"] <= 0.4
    assert compare.paired([1.0, 1.0], [1.0, 1.0]) == {"mean": 0.0, "low": 0.0, "high": 0.0, "up": 0, "down": 0}


@pytest.fixture(scope="module")
def tiny_models(tf_few_threads):
    import keras

    from tests.servers import tiny_model

    keras.utils.set_random_seed(0)
    return {name: tiny_model(name) for name in NAMES}


@pytest.fixture
def split(make_dataset):
    """Three val photos of 48x64 (not the model's input size, so postprocessing resizes back)."""
    return make_dataset(n=5, size=(48, 64), splits={"train": ["001", "002"], "val": ["003", "004", "005"]})


def test_compare_measures_every_option_through_serving_path(split, tiny_models, monkeypatch, tmp_path):
    metas = {name: {"input_size": INPUT_SIZE} for name in NAMES}
    monkeypatch.setattr(compare, "load_releases", lambda release_dir, names: (tiny_models, metas))
    monkeypatch.setattr(compare, "MEMBERS", NAMES)
    out = tmp_path / "docs" / "inference_options.md"
    argv = ["--data", str(split.root), "--split", "val", "--out", str(out)]
    rows = {r["option"]: r for r in compare.compare(compare.parse_args(argv), argv)}
    assert list(rows) == [o.name for o in compare.options(NAMES)]

    ids = ["003", "004", "005"]
    truths = [split.masks[i] for i in ids]
    inputs = np.stack([imaging.resize_image(split.images[i], INPUT_SIZE) for i in ids])

    def expected(probs):
        # the server: argmax at the model's size, class ids brought to the photo's size by nearest neighbour
        masks = [imaging.upsample_mask(p.argmax(axis=-1).astype(np.uint8), 64, 48) for p in probs]
        assert all(m.shape == (48, 64) for m in masks)
        cms = [metrics.confusion_matrix(t, m) for t, m in zip(truths, masks, strict=True)]
        return masks, metrics.report(np.sum(cms, axis=0)), metrics.ratio_agreement(truths, masks)

    plain = {n: Predictor(tiny_models[n]).probabilities(inputs) for n in NAMES}
    flipped = {n: Predictor(tiny_models[n], flip=True).probabilities(inputs) for n in NAMES}
    cases = {
        "deeplabv3plus": plain["deeplabv3plus"],
        "unet+flip": flipped["unet"],
        "ensemble": (plain["deeplabv3plus"] + plain["unet"]) / 2,
        "ensemble+flip": (flipped["deeplabv3plus"] + flipped["unet"]) / 2,
    }
    for name, probs in cases.items():
        masks, rep, ratio = expected(probs)
        row = rows[name]
        assert row["mean_iou"] == pytest.approx(rep.mean_iou, abs=1e-6), name
        for c, cls in enumerate(("corrosion", "asset", "background")):
            want = rep.iou[c]
            assert (row["iou"][cls] is None and np.isnan(want)) or row["iou"][cls] == pytest.approx(want, abs=1e-6)
        assert row["ratio_mae"] == pytest.approx(ratio["ratio_mae"], abs=1e-6), name
        assert row["grade_exact"] == ratio["grade_exact"] and row["grade_within_one"] == ratio["grade_within_one"]
        assert len(row["photo_ratio_error"]) == 3 and row["ms_per_image"] > 0

    text = out.read_text()
    assert "python -m training.compare --data " in text and "--split val" in text
    for r in rows.values():
        assert f"| {r['label']} | {r['passes']} |" in text
    assert "ensemble vs DeepLabV3+" in text and "The ensemble is the served one: DeepLabV3+ and U-Net." in text
    recorded = json.loads(out.with_suffix(".json").read_text())
    assert [r["option"] for r in recorded] == list(rows)
    assert recorded[0]["ratio_mae"] == pytest.approx(rows["deeplabv3plus"]["ratio_mae"])
    assert "test-time sizes" not in text


def test_compare_at_test_time_sizes(split, tiny_models, monkeypatch, tmp_path):
    """A model at 64 px and at 32+64 (mean of probabilities at its 32 px size), set against the model plain."""
    metas = {name: {"input_size": INPUT_SIZE} for name in NAMES}
    monkeypatch.setattr(compare, "load_releases", lambda release_dir, names: (tiny_models, metas))
    monkeypatch.setattr(compare, "MEMBERS", NAMES)
    out = tmp_path / "options.md"
    argv = ["--data", str(split.root), "--split", "val", "--out", str(out), "--sizes", "64", "--sizes", "32,64"]
    rows = {r["option"]: r for r in compare.compare(compare.parse_args(argv), argv)}
    assert list(rows) == [o.name for o in compare.options(NAMES, sizes=[(64,), (32, 64)])]

    ids = ["003", "004", "005"]
    truths = [split.masks[i] for i in ids]
    unet = Predictor(tiny_models["unet"])
    at32 = unet.probabilities(np.stack([imaging.resize_image(split.images[i], INPUT_SIZE) for i in ids]))
    at64 = unet.probabilities(np.stack([imaging.resize_image(split.images[i], 64) for i in ids]))
    back = np.stack([cv2.resize(p, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR) for p in at64])
    for name, probs in {"unet@64": back, "unet@32+64": (at32 + back) / 2}.items():
        masks = [imaging.upsample_mask(p.argmax(axis=-1).astype(np.uint8), 64, 48) for p in probs]
        cms = [metrics.confusion_matrix(t, m) for t, m in zip(truths, masks, strict=True)]
        assert rows[name]["mean_iou"] == pytest.approx(metrics.report(np.sum(cms, axis=0)).mean_iou, abs=1e-6), name
        assert rows[name]["sizes"] == ([64] if name == "unet@64" else [32, 64])
        assert rows[name]["passes"] == len(rows[name]["sizes"])

    text = out.read_text()
    assert text.startswith("# Inference options: plain, horizontal-flip TTA, test-time sizes, ensemble")
    assert "| U-Net at 32+64 px | 2 |" in text and "--sizes 32,64" in text
    assert "- U-Net at 64 px vs U-Net: mean IoU" in text
    assert "- U-Net at 32+64 px vs U-Net: mean IoU" in text
