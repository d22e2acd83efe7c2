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
    assert (tmp_path / "ev" / "metrics.json").exists(), evaluated.stdout
