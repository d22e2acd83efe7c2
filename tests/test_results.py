"""training.results: the README's results tables from release metadata."""

from __future__ import annotations

import json

import numpy as np

from segserve import metrics
from training.metadata import val_metrics
from training.results import inspector_table, results_table


def test_results_tables(tmp_path):
    truth = np.array([[[0, 0], [1, 2]]], np.uint8)
    val = val_metrics(metrics.table(truth, truth.copy()))
    meta = {"val_metrics": val, "encoder_weights": "none", "best_epoch": 3, "epochs_run": 5, "train_seconds": 600}
    meta["float16_agreement"] = 0.9995
    (tmp_path / "unet.json").write_text(json.dumps(meta))  # no deeplabv3plus release: its rows are left out
    text = results_table(tmp_path)
    assert "| U-Net | corrosion | 100.00 | 100.00 | 100.00 | 100.00 | 52.54 | 59.00 |" in text
    assert "DeepLabV3+" not in text
    assert "- U-Net: mean IoU 100.00, pixel accuracy 100.00 on 1 val images; encoder weights `none`" in text
    assert "10 min of training; float16 masks match float32 on 99.950% of val pixels." in text
    assert "| U-Net | 0.00 | 100.00% | 100.00% |" in inspector_table(tmp_path)


def test_a_final_fit_is_labelled_with_whose_val_figures_it_carries(tmp_path):
    truth = np.array([[[0, 0], [1, 2]]], np.uint8)
    meta = {
        "val_metrics": val_metrics(metrics.table(truth, truth.copy())),
        "encoder_weights": "hed",
        "best_epoch": 40,
        "epochs_run": 40,
        "train_seconds": 600,
        "validation_source": "the val split (1 photos) of the same recipe trained on the train split only",
        "trained_on": "/data/corrosion-pipes (3 photos: the train and val splits)",
    }
    (tmp_path / "unet.json").write_text(json.dumps(meta))
    assert (
        "on 1 val images (its recipe's run on the train split's; these weights were fit on /data/corrosion-pipes "
        "(3 photos: the train and val splits)); encoder weights `hed`" in results_table(tmp_path)
    )
