"""The bento: `make bento` builds it from bentofile.yaml, its Dockerfile exposes both ports, and it serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import yaml

from segserve import architectures
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import ROOT, start_server, stop_server, wait_until_serving

# what `make bento-from-store` neither reads nor needs: the environment, the model store and weights, outputs
NOT_SOURCES = (".git", ".venv", ".bentoml", "models", "runs", "dist", "build", "site", "*.egg-info", "__pycache__",
               ".pytest_cache", ".ruff_cache")  # fmt: skip


@pytest.fixture(scope="module")
def built(tiny_store: Path, tmp_path_factory) -> tuple[Path, Path]:
    """`make bento-from-store` (the build step of `make bento`, which first imports the shipped releases) into a
    copy of the tiny-model store; returns (BENTOML_HOME, bento folder)."""
    home = tmp_path_factory.mktemp("bento_home")
    shutil.copytree(tiny_store, home, dirs_exist_ok=True)
    # A copy of the sources (mtimes kept, so `setup` stays done), so that no other process touches its dist/
    tree = tmp_path_factory.mktemp("sources") / "segserve"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "VENV": str(Path(sys.prefix))}
    make = ["make", "bento-from-store"]
    result = subprocess.run(make, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bentos = list((home / "bentos" / "segserve").iterdir())
    bentos = [b for b in bentos if b.is_dir()]
    assert len(bentos) == 1
    return home, bentos[0]


@pytest.mark.slow
def test_bento_holds_service_proto_wheel_and_requirements(built):
    _, bento = built
    assert (bento / "src" / "bento" / "service.py").exists()
    assert (bento / "src" / "proto" / "segserve" / "v1" / "segmentation.proto").exists()
    assert [w.name for w in (bento / "env" / "python" / "wheels").iterdir()] == ["segserve-0.1.0-py3-none-any.whl"]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "openvino" in requirements and "onnxruntime" in requirements and "grpcio-health-checking" in requirements
    assert "tensorflow" not in requirements and "keras" not in requirements  # the lean bento


@pytest.mark.slow
def test_dockerfile_exposes_http_and_grpc(built):
    _, bento = built
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "EXPOSE 3000" in dockerfile
    assert "EXPOSE 50051" in dockerfile


@pytest.mark.slow
def test_container_runs_as_a_non_root_user(built):
    """The image's process runs as BentoML's bento user, uid 1034 (the Kubernetes manifests' runAsUser)."""
    _, bento = built
    lines = (bento / "env" / "docker" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "bentoml"
    assert "ARG BENTO_USER_UID=1034" in lines


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile-tensorflow.yaml"])
def test_bentofile_packs_every_shipped_model(bentofile):
    models = yaml.safe_load((ROOT / bentofile).read_text())["models"]
    assert models == [f"corrosion-{name}:latest" for name in architectures.SHIPPED]


@pytest.mark.slow
def test_exported_bento_carries_every_shipped_model(built, tmp_path):
    home, bento = built
    env = {**os.environ, "BENTOML_HOME": str(home)}
    archive = tmp_path / "segserve.bento"
    tag = f"segserve:{bento.name}"
    subprocess.run(
        [sys.executable, "-m", "bentoml", "export", tag, str(archive)], env=env, check=True, capture_output=True
    )
    with tarfile.open(archive) as tar:
        names = [n.removeprefix("./") for n in tar.getnames()]
    for model in (f"corrosion-{name}" for name in architectures.SHIPPED):
        for filename in ("model.keras", "model.onnx"):
            assert any(n.startswith(f"models/{model}/") and n.endswith(filename) for n in names), (model, filename)


@pytest.mark.slow
def test_built_bento_serves_grpc_without_tensorflow(built, tmp_path):
    """The lean bento serves on OpenVINO with TensorFlow and Keras made unimportable (a sitecustomize that blocks
    them)."""
    home, bento = built
    blocker = tmp_path / "no_tensorflow"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('tensorflow', 'keras', 'tf2onnx'):\n    sys.modules[name] = None\n"
    )
    server = start_server(home, tmp_path / "serve.log", target=f"segserve:{bento.name}", pythonpath_first=blocker)
    try:
        wait_until_serving(server)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)
            models = stub.ListModels(pb.ListModelsRequest()).models
            image = cv2.imencode(".png", np.full((30, 40, 3), 120, np.uint8))[1].tobytes()
            answer = stub.Segment(pb.SegmentRequest(image=image, model="ensemble"))
        assert sorted(m.name for m in models) == sorted([*architectures.SHIPPED, "ensemble"])
        assert {m.backend for m in models} == {"openvino"}
        assert (answer.width, answer.height) == (40, 30)
        assert "No module named" not in server.log() and "tensorflow" not in server.log().lower()
    finally:
        stop_server(server)
