"""Start-up failures: `segserve serve` (what `make serve` runs) exits non-zero naming the cause, and never
starts a server that loops or says SERVING."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, free_port

pytestmark = pytest.mark.slow


def cli(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "SEGSERVE_HTTP_PORT": str(free_port()),
        "SEGSERVE_GRPC_PORT": str(free_port()),
        "SEGSERVE_GRPC_HOST": "127.0.0.1",
        **{f"SEGSERVE_{k.upper()}": v for k, v in settings.items()},
    }
    cmd = [sys.executable, "-m", "segserve.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def store_copy(tiny_store: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(tiny_store, home)
    return home


def served_file(home: Path, name: str, filename: str) -> Path:
    return next((home / "models" / f"corrosion-{name}").glob(f"*/{filename}"))


@pytest.mark.parametrize(
    ("filename", "backend"),
    [("model.onnx", "openvino"), ("model.onnx", "onnxruntime"), ("model.keras", "tensorflow")],
)
def test_a_corrupt_model_file_in_the_store_stops_the_start(store_copy, filename, backend):
    served_file(store_copy, "unet", filename).write_bytes(b"not a model")
    result = cli(store_copy, "serve", backend=backend)
    assert result.returncode == 1
    assert f"corrosion-unet cannot be loaded on {backend}" in result.stderr


def test_an_unknown_model_name_stops_the_start(store_copy):
    result = cli(store_copy, "serve", models="deeplabv3plus,segnet")
    assert result.returncode == 2
    assert "unknown ones (segnet)" in result.stderr


def test_a_broken_release_file_stops_the_import(tmp_path):
    releases = tmp_path / "models"
    shutil.copytree(ROOT / "models", releases, ignore=shutil.ignore_patterns("*.val_masks.npz"))
    (releases / "unet.weights.npz").write_bytes(b"PK\x03\x04 truncated")
    result = cli(
        tmp_path / "home", "import-models", "--release-dir", str(releases), models="unet", default_model="unet"
    )
    assert result.returncode == 1
    assert "the release of unet" in result.stderr and "cannot be imported" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_grpc_port_in_use_stops_the_start(store_copy):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(store_copy, "serve", grpc_port=str(port))
    assert result.returncode == 1
    assert f"the gRPC port 127.0.0.1:{port} cannot be bound" in result.stderr
