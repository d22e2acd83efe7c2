"""training.parity: the served models checked on this machine's engines against ONNX Runtime float32, on
labelled photos, and the result recorded with each model for SEGSERVE_PRECISION=auto."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import ROOT


def run(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", "training.parity", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_parity_is_checked_and_recorded_with_the_served_models(tiny_store, make_dataset, tmp_path):
    """`python -m training.parity --data DIR` runs each served model on this machine's engines over DIR's val photos and
    records, per kind of machine, how far they agree with ONNX Runtime float32."""
    from segserve import engines
    from segserve import parity as gate

    data = make_dataset(n=4, size=(40, 48), splits={"train": ["001", "002"], "val": ["003", "004"]})
    home = tmp_path / "home"
    subprocess.run(["cp", "-r", str(tiny_store), str(home)], check=True)
    result = run("unet", "--data", str(data.root), home=home)
    assert result.returncode == 0, result.stderr
    assert "corrosion-unet" in result.stdout and "on openvino:f32" in result.stdout
    assert "of pixels agree with onnxruntime:f32 on 2 val photos" in result.stdout
    (model_dir,) = [p for p in (home / "models" / "corrosion-unet").iterdir() if p.is_dir()]
    record = gate.read(model_dir)[engines.machine_kind()]
    assert set(record) == {e for e in (f"{b}:{p}" for b, p in gate.candidates())}
    assert record["openvino:f32"]["images"] == 2 and record["openvino:f32"]["passed"] is True
    assert not gate.read(next((home / "models" / "corrosion-deeplabv3plus").iterdir()))  # only the one named
    missing = run("unet", "--data", str(tmp_path / "nowhere"), home=home)
    assert missing.returncode == 1 and "error:" in missing.stderr and "Traceback" not in missing.stderr
