"""Start `bentoml serve` on free loopback ports with SEGSERVE_* settings, wait until it serves, and stop it.

The server runs in a session of its own, so that stopping it reaches every worker: SIGTERM to the process group,
then SIGKILL to what is left after the grace time. It gets a BentoML home of its own whose models, bentos and pins
link to the store's: `bentoml serve` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, and two
servers sharing a home would wipe each other's metrics.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.harness.client import SegmentClient
from loadtests.harness.target import Target

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "bento.service:SegServe"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A running `bentoml serve` and where it answers."""

    http_url: str
    grpc_target: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def target(self) -> Target:
        """The server's addresses, token and TLS, from the settings it was started with."""
        return Target.from_env(self.env, http=self.http_url, grpc=self.grpc_target)

    def client(self, timeout: float = 60.0) -> SegmentClient:
        """A client of this server (close it when done)."""
        return SegmentClient(self.target, timeout)


def setting_variable(name: str) -> str:
    """The environment variable of a setting: ``max_latency_ms`` -> SEGSERVE_MAX_LATENCY_MS (full names pass)."""
    return name if name.startswith("SEGSERVE_") else f"SEGSERVE_{name.upper()}"


def private_home(shared: Path, private: Path) -> Path:
    """A BentoML home of the server's own at ``private`` whose models, bentos and pins link to ``shared``'s."""
    private.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    for entry in ("models", "bentos", "segserve"):
        (shared / entry).mkdir(exist_ok=True)
        link = private / entry
        if not link.exists():
            link.symlink_to(shared / entry, target_is_directory=True)
    return private


def start_server(
    log_path: Path,
    settings: Mapping[str, object] | None = None,
    *,
    bentoml_home: Path | None = None,
    serve_target: str = SERVICE,
    pythonpath_first: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LiveServer:
    """Start `bentoml serve SERVE_TARGET` (the service, or a built bento's tag) on free loopback ports.

    settings: SEGSERVE_* settings, by field name (``max_batch_size``) or variable (``SEGSERVE_MAX_BATCH_SIZE``).
    bentoml_home: the model store (default: $BENTOML_HOME, else ~/bentoml); the server's own home, beside
        ``log_path``, links to it. env: the server's environment before the settings (default: this process's).
    pythonpath_first: goes before everything on PYTHONPATH. The server's output goes to ``log_path``.
    """
    base = dict(os.environ if env is None else env)
    store = Path(bentoml_home or base.get("BENTOML_HOME") or Path.home() / "bentoml")
    http_port, grpc_port = free_port(), free_port()
    first = f"{pythonpath_first}:" if pythonpath_first else ""
    server_env = {
        **base,
        "BENTOML_HOME": str(private_home(store, log_path.parent / f"home-{http_port}")),
        "PYTHONPATH": f"{first}{ROOT / 'src'}:{ROOT}",
        "BENTOML_DO_NOT_TRACK": "True",
        "SEGSERVE_HTTP_PORT": str(http_port),
        "SEGSERVE_GRPC_PORT": str(grpc_port),
        "SEGSERVE_GRPC_HOST": HOST,
        **{setting_variable(k): str(v) for k, v in (settings or {}).items()},
    }
    server_env.pop("SEGSERVE_GRPC_TARGET", None)  # a client-side override; the server's own ports are these
    target = Target.from_env(server_env)
    cmd = [sys.executable, "-m", "bentoml", "serve", serve_target, "--host", HOST, "--port", str(http_port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return LiveServer(target.http_url, target.grpc_target, server_env, process, log_path)


def wait_until_serving(server: LiveServer, timeout: float = 180.0) -> None:
    """Wait for HTTP /readyz and gRPC health SERVING; raise with the server's log if it exits or does not come
    up within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with server.client(timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
            if client.serving(timeout=2):
                return
            time.sleep(0.5)
    raise TimeoutError(f"server not serving after {timeout:.0f}s:\n{server.log()[-4000:]}")


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM the process group of ``process`` (started with ``start_new_session=True``), wait up to ``timeout``
    seconds for it to exit, then SIGKILL whatever is left of the group and of its descendants found before the
    SIGTERM (a worker outlives its arbiter otherwise); return the exit code."""
    import psutil

    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process.pid, signal.SIGKILL)  # the leader if it lingers, and any worker it left behind
    for child in family:
        try:
            child.kill()
        except psutil.Error:  # gone already
            pass
    process.wait()
    return process.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def stop_server(server: LiveServer, timeout: float = 30.0) -> int:
    """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); return its exit code."""
    return stop_process(server.process, timeout)
