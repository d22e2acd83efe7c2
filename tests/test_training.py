"""A two-epoch training run on a small synthetic dataset writes every report file and a model the store loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import openpyxl
import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

REPORT_FILES = (
    "history.csv",
    "history.xlsx",
    "curves_loss.png",
    "curves_iou.png",
    "metrics.json",
    "report.md",
    "confusion_matrix.png",
    "predictions.png",
    "best.keras",
    "checkpoints/last.keras",
    "state.json",
)


def run(module: str, *args: str, home, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    from segserve.classes import PALETTE
    from tests.conftest import _make_image, _make_mask, _write_rgb

    ids = [f"{k:03d}" for k in range(1, 7)]
    for i, id_ in enumerate(ids):
        mask = np.roll(_make_mask(64, 64), 4 * i, axis=1)
        _write_rgb(data / "original" / f"ORI_{id_}.png", _make_image(mask, seed=i))
        _write_rgb(data / "ground_truth" / f"GT_{id_}.png", PALETTE[mask])
    (data / "train.txt").write_text("\n".join(ids[:4]) + "\n")
    (data / "val.txt").write_text("\n".join(ids[4:]) + "\n")
    out, home = root / "run", root / "home"
    common = ["--model", "unet", "--data", str(data), "--out", str(out), "--input-size", "64", "--crop-size", "32"]
    common += ["--batch-size", "2", "--threads", "1"]
    first = run("training.train", *common, "--epochs", "1", "--no-report", home=home)
    resumed = run("training.train", *common, "--epochs", "2", "--resume", home=home)
    return out, home, data, first, resumed


def test_two_epochs_write_every_report_file(trained):
    out = trained[0]
    for name in REPORT_FILES:
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["split"] == "val"
    assert list(metrics["standard"]["per_class"]) == ["corrosion", "asset", "background"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 2 * 64 * 64
    assert set(metrics["per_image"]["per_class"]["asset"]) == {"iou", "dice"}
    # what an inspector reads: every synthetic truth is 16 corrosion and 48 asset columns of one band
    ratios = metrics["ratios"]
    assert ratios["truth"] == [0.25, 0.25] and ratios["truth_grade"] == [2, 2]
    mae = np.mean(np.abs(np.array(ratios["predicted"]) - 0.25))
    assert metrics["ratio_agreement"]["ratio_mae"] == pytest.approx(mae)
    assert metrics["ratio_agreement"]["grade_exact"] == np.mean(np.array(ratios["predicted_grade"]) == 2)
    assert "What an inspector reads" in (out / "report.md").read_text()
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[-3:] == ["val_ratio_mae", "val_grade_exact", "val_grade_within_one"]
    workbook = openpyxl.load_workbook(out / "history.xlsx")
    assert len(workbook.sheetnames) >= 2
    assert sum(len(ws._images) for ws in workbook.worksheets) >= 2  # the curves are embedded


def test_resume_continues_from_the_last_checkpoint(trained):
    out, _, _, first, resumed = trained
    assert "epoch 1/1" in first.stdout
    assert "resuming after epoch 1" in resumed.stdout and "epoch 2/2" in resumed.stdout
    epochs = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    assert json.loads((out / "state.json").read_text())["epoch"] == 2


def test_export_imports_a_model_the_store_loads(trained, tmp_path):
    out, home, data, _, _ = trained
    run("training.export", "--run", str(out), "--release-dir", str(tmp_path), "--import", home=home)
    meta = json.loads((tmp_path / "unet.json").read_text())
    assert meta["encoder_weights"] == "none" and meta["float16_agreement"] >= 0.999
    assert meta["train_ids"] == ["001", "002", "003", "004"] and meta["val_ids"] == ["005", "006"]
    code = (
        "from segserve.store import load_from_store\n"
        "import numpy as np\n"
        "model, info = load_from_store('unet')\n"
        "p = model.predict_on_batch(np.zeros((1, 64, 64, 3), np.float32))\n"
        "print(info.name, info.metadata['val_metrics']['num_images'], p.shape)\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("unet 2 (1, 64, 64, 3)")
    evaluated = run(
        "training.evaluate",
        "--model",
        "unet",
        "--data",
        str(data),
        "--split",
        "val",
        "--out",
        str(tmp_path / "ev"),
        home=home,
    )
    evaluation = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    run_metrics = json.loads((out / "metrics.json").read_text())
    assert evaluation["num_images"] == 2 and evaluation["ratios"]["truth"] == [0.25, 0.25]
    # the float16 store model answers as the float32 run did (at least 99.9% of the pixels)
    assert evaluation["ratio_agreement"]["ratio_mae"] == pytest.approx(
        run_metrics["ratio_agreement"]["ratio_mae"], abs=0.01
    )
    assert evaluation["standard"]["mean_iou"] == pytest.approx(run_metrics["standard"]["mean_iou"], abs=0.01)
    assert "corroded share of the asset: mean absolute error" in evaluated.stdout
    # the release records what an inspector reads in its val_metrics
    for key in ("ratio_mae", "grade_exact", "grade_within_one"):
        assert meta["val_metrics"][key] == pytest.approx(run_metrics["ratio_agreement"][key])


def _hand_made_masks() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 truths and predictions with known corroded shares (C corrosion, A asset, . background).

    truth 0: 4 C, 4 A -> 0.5 (grade 1); prediction 0: 2 C, 6 A -> 0.25 (grade 2)
    truth 1: 0 C, 8 A -> 0 (grade 10); prediction 1: 1 C, 7 A -> 0.125 (grade 3)
    """
    C, A, B = 0, 1, 2
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


def test_compute_metrics_reports_the_ratio_error_and_grade_agreement():
    from training.report import compute_metrics
    from training.train import split_metrics

    truth, pred = _hand_made_masks()
    result, _ = compute_metrics(truth, pred)
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
    logs = split_metrics(truth, pred)
    assert logs["val_ratio_mae"] == pytest.approx(0.1875)
    assert (logs["val_grade_exact"], logs["val_grade_within_one"]) == (0.0, 0.5)
    assert list(logs)[-3:] == ["val_ratio_mae", "val_grade_exact", "val_grade_within_one"]


def test_export_val_metrics_carry_the_ratio_numbers():
    from training.export import val_metrics
    from training.report import compute_metrics

    truth, pred = _hand_made_masks()
    result, _ = compute_metrics(truth, pred)
    recorded = val_metrics(result)
    assert recorded["ratio_mae"] == pytest.approx(0.1875)
    assert (recorded["grade_exact"], recorded["grade_within_one"]) == (0.0, 0.5)
    assert recorded["num_images"] == 2


def test_predict_masks_is_serving_path(tf_few_threads):
    import keras

    from segserve.predictor import Predictor
    from tests.servers import tiny_model
    from training.train import predict_masks

    keras.utils.set_random_seed(2)
    model = tiny_model("unet")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for flip in (False, True):
        probs = Predictor(model, flip=flip).probabilities(images)
        expected = probs.argmax(axis=-1).astype(np.uint8)  # at the model's size the server's mask is the argmax
        masks = predict_masks(model, images, batch_size=2, flip=flip)
        assert masks.dtype == np.uint8 and masks.shape == (5, 32, 32)
        np.testing.assert_array_equal(masks, expected)
