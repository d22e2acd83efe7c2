"""training.report: the metrics.json layout of the metrics table, report.md, the history, and a run's report
written from a run folder (a tiny stand-in model as its best.keras)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import openpyxl
import pytest

from segserve import metrics
from training import report
from training.data import find_pairs
from training.prediction import predict_masks

C, A, B = 0, 1, 2


def hand_made_masks() -> tuple[np.ndarray, np.ndarray]:
    """truth 0: 4 C, 4 A -> 0.5 (grade 1), prediction 0: 2 C, 6 A -> 0.25 (grade 2);
    truth 1: 0 C, 8 A -> 0 (grade 10), prediction 1: 1 C, 7 A -> 0.125 (grade 3)."""
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


def test_metrics_json_reports_the_ratio_error_and_grade_agreement():
    result = report.metrics_json(metrics.table(*hand_made_masks()))
    assert result["ratios"] == {
        "truth": [0.5, 0.0],
        "predicted": [0.25, 0.125],
        "truth_grade": [1, 10],
        "predicted_grade": [2, 3],
    }
    assert result["ratio_agreement"] == {
        "ratio_mae": pytest.approx((0.25 + 0.125) / 2),
        "grade_exact": 0.0,
        "grade_within_one": 0.5,
    }


def test_metrics_json_layout():
    result = report.metrics_json(metrics.table(*hand_made_masks()))
    assert list(result) == [
        "num_images",
        "classes",
        "standard",
        "per_image",
        "ratio_agreement",
        "ratios",
        "confusion_matrix",
        "confusion_matrix_axes",
    ]
    assert result["classes"] == ["corrosion", "asset", "background"] == list(result["standard"]["per_class"])
    corrosion = result["standard"]["per_class"]["corrosion"]
    assert corrosion == {
        "iou": pytest.approx(2 / 5),
        "dice": pytest.approx(4 / 7),
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 4),
        "true_pixels": 4,
        "predicted_pixels": 3,
    }
    assert set(result["per_image"]["per_class"]["asset"]) == {"iou", "dice"}
    assert result["standard"]["pixel_accuracy"] == pytest.approx(29 / 32)
    assert result["confusion_matrix"] == [[2, 2, 0], [1, 11, 0], [0, 0, 16]]


def test_metrics_json_is_strict_json():
    truth = np.full((1, 2, 2), A, np.uint8)
    result = report.metrics_json(metrics.table(truth, truth.copy()))
    assert result["standard"]["per_class"]["corrosion"]["iou"] is None  # undefined: NaN becomes null
    json.dumps(result, allow_nan=False)


def _result(**extra) -> dict:
    result = report.metrics_json(metrics.table(*hand_made_masks()))
    return {"model": "unet", "split": "val", **extra, **result}


def test_render_markdown():
    text = report.render_markdown("unet", _result(train_seconds=5400, encoder_weights="none"), [("Curves", "c.png")])
    assert text.startswith("# U-Net: evaluation on the val split\n")
    assert "- training time: 90.0 min" in text and "- images: 2" in text
    assert "| corrosion | 40.00% | 57.14% | 66.67% | 50.00% | 12.50% |" in text
    assert "## What an inspector reads" in text and "| 18.75% | 0.00% | 50.00% |" in text
    assert "| DeepLabV3+ (published) | 56.66% |" in text and "| U-Net (published) | 52.54% |" in text
    assert "![Curves](c.png)" in text


def test_render_markdown_of_an_architecture_without_published_numbers():
    truth = np.full((1, 2, 2), A, np.uint8)
    result = {"split": "val", **report.metrics_json(metrics.table(truth, truth.copy()))}
    text = report.render_markdown("unet-vgg16", result)
    assert text.startswith("# U-Net (VGG16): evaluation")
    assert "| corrosion | n/a | n/a | n/a | n/a | 0.00% |" in text
    assert "(VGG16) (published)" not in text  # only architectures with published numbers are compared


def test_read_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    path = tmp_path / report.HISTORY_FILE
    rows = [
        {"epoch": 1, "loss": 0.9, "val_miou": 0.2},
        {"epoch": 2, "loss": 0.8, "val_miou": ""},  # not validated
        {"epoch": 2, "loss": 0.7, "val_miou": 0.3},  # a resumed run repeated epoch 2
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_miou"])
        writer.writeheader()
        writer.writerows(rows)
    assert report.read_history(path) == [
        {"epoch": 1.0, "loss": 0.9, "val_miou": 0.2},
        {"epoch": 2.0, "loss": 0.7, "val_miou": 0.3},
    ]


def test_write_evaluation_writes_every_file(tmp_path):
    truth, pred = hand_made_masks()
    images = np.full((2, 4, 4, 3), 90, np.uint8)
    extra = {"split": "val", "source": "somewhere", "best_epoch": np.int64(3)}
    result = report.write_evaluation(tmp_path, "unet", images, truth, pred, extra, ids=["007", "008"])
    for name in (report.METRICS_FILE, report.CONFUSION_FILE, report.PREDICTIONS_FILE, report.REPORT_FILE):
        assert (tmp_path / name).exists(), name
    written = json.loads((tmp_path / report.METRICS_FILE).read_text())
    assert written == result
    assert list(written)[:4] == ["model", "split", "source", "best_epoch"] and written["best_epoch"] == 3
    assert written["ids"] == ["007", "008"] and written["num_images"] == 2
    assert "![Predictions](predictions.png)" in (tmp_path / report.REPORT_FILE).read_text()


def test_write_run_report(tmp_path, make_dataset, tf_few_threads):
    """A run folder's report: its best.keras evaluated on the pairs, with curves and history.xlsx."""
    import keras

    from tests.servers import tiny_model

    data = make_dataset(n=2, size=(16, 16))
    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    model = tiny_model("unet")
    model.save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"model": "unet", "input_size": 16, "encoder_weights": "none"}))
    (run / "state.json").write_text(json.dumps({"epoch": 2, "best_epoch": 2, "train_seconds": 12.0}))
    with (run / report.HISTORY_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "seconds", "lr", "loss", "accuracy", "val_miou", "val_iou_corrosion"])
        writer.writerows([[1, 5.0, 1e-3, 0.9, 0.5, 0.2, 0.1], [2, 5.0, 5e-4, 0.8, 0.6, 0.3, 0.2]])

    result = report.write_run_report(run, str(data.root), "val", find_pairs(data.root))
    assert result["split"] == "val" and result["source"] == str(run / "best.keras") and result["ids"] == ["001", "002"]
    assert (result["best_epoch"], result["epochs_run"], result["input_size"]) == (2, 2, 16)
    images = np.stack([data.images[i] for i in data.ids])
    masks = np.stack([data.masks[i] for i in data.ids])
    expected = report.metrics_json(metrics.table(masks, predict_masks(model, images)))
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    for name in ("curves_loss.png", "curves_iou.png", "curves_lr.png", report.HISTORY_XLSX, report.REPORT_FILE):
        assert (run / name).exists(), name
    workbook = openpyxl.load_workbook(run / report.HISTORY_XLSX)
    assert workbook.sheetnames == ["history", "curves"] and len(workbook["curves"]._images) == 3
    text = (run / report.REPORT_FILE).read_text()
    assert "- training time: 12 s" in text and "### Validation IoU" in text
    assert not math.isnan(result["standard"]["pixel_accuracy"])
