"""The command line: a store without the models is reported clearly and stops `serve` before it starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


def cli(*args: str, home, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", "segserve.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_serve_with_an_empty_store_names_the_missing_models_and_exits_1(tmp_path):
    result = cli("serve", home=tmp_path / "empty")
    assert result.returncode == 1
    for name in ("corrosion-deeplabv3plus", "corrosion-unet"):
        assert f"model {name} is not in the BentoML model store" in result.stderr
    assert "make models" in result.stderr


def test_check_models_finds_a_complete_store(tiny_store):
    result = cli("check-models", home=tiny_store)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("found corrosion-") == 2


def test_import_from_a_folder_without_releases_fails_clearly(tmp_path):
    result = cli("import-models", "--release-dir", str(tmp_path), home=tmp_path / "home")
    assert result.returncode == 1
    assert "deeplabv3plus.weights.npz" in result.stderr
