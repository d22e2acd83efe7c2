"""Real servers for the tests: a BentoML store of small stand-in models and a `bentoml serve` on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(name: str, input_channels: int = 3):
    """A two-layer fully convolutional stand-in with the served models' input and output (3 classes)."""
    import keras

    inputs = keras.Input((None, None, input_channels), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def make_tiny_store(home: Path) -> None:
    """Fill a BentoML store at ``home`` with stand-ins of both models (in a subprocess: BENTOML_HOME is read once)."""
    code = (
        "from tests.servers import tiny_model\n"
        "from segserve.store import save_to_store\n"
        "for n in ('deeplabv3plus', 'unet'):\n"
        "    save_to_store(tiny_model(n), n, {'input_size': 256, 'encoder_weights': 'none', 'val_metrics': {"
        "'per_class': [{'class_id': 0, 'name': 'corrosion', 'iou': 0.5, 'dice': 0.6, 'per_image_iou': 0.5,"
        " 'per_image_dice': 0.6}], 'mean_iou': 0.5, 'pixel_accuracy': 0.7}})\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)


@dataclass
class LiveServer:
    """A running `bentoml serve` of bento.service:SegServe."""

    http_url: str
    grpc_target: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_serving(server: LiveServer, timeout: float = 180.0) -> None:
    """Wait for HTTP /readyz and gRPC health SERVING; raise with the server log if it does not come up."""
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(server.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
            try:
                ready = httpx.get(f"{server.http_url}/readyz", timeout=2).status_code == 200
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if ready and status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except (httpx.HTTPError, grpc.RpcError):
                pass
            time.sleep(0.5)
    finally:
        channel.close()
    raise TimeoutError(f"server not serving after {timeout:.0f}s:\n{server.log()[-4000:]}")


def private_home(shared: Path, private: Path) -> Path:
    """A BentoML home of the server's own that links to ``shared``'s contents (models, bentos, pins).

    `bentoml serve` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts: two servers sharing a
    home would wipe each other's metrics.
    """
    private.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    for entry in ("models", "bentos", "segserve"):
        (shared / entry).mkdir(exist_ok=True)
        link = private / entry
        if not link.exists():
            link.symlink_to(shared / entry, target_is_directory=True)
    return private


def start_server(
    bentoml_home: Path,
    log_path: Path,
    target: str = "bento.service:SegServe",
    pythonpath_first: Path | None = None,
    **settings: str,
) -> LiveServer:
    """Start `bentoml serve TARGET` (the service, or a built bento's tag) on free ports, with SEGSERVE_* settings
    given as keyword arguments; ``pythonpath_first`` goes before everything on PYTHONPATH."""
    http_port, grpc_port = free_port(), free_port()
    first = f"{pythonpath_first}:" if pythonpath_first else ""
    env = {
        **os.environ,
        "BENTOML_HOME": str(private_home(bentoml_home, log_path.parent / f"home-{http_port}")),
        "PYTHONPATH": f"{first}{ROOT / 'src'}:{ROOT}",
        "SEGSERVE_HTTP_PORT": str(http_port),
        "SEGSERVE_GRPC_PORT": str(grpc_port),
        "SEGSERVE_GRPC_HOST": "127.0.0.1",
        "BENTOML_DO_NOT_TRACK": "True",
        **{f"SEGSERVE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1"]
    cmd += ["--port", str(http_port)]
    log = log_path.open("w")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return LiveServer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", env, process, log_path)


def stop_server(server: LiveServer, timeout: float = 30.0) -> int:
    """SIGTERM the server's process group, wait, and SIGKILL what is left; return the exit code."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    return server.process.returncode
