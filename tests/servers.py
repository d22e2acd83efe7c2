"""Real servers for the tests: a BentoML store of small stand-in models, and `bentoml serve` on free ports through
the load harness's launcher (``loadtests.harness.launcher``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from loadtests.harness import launcher
from loadtests.harness.launcher import (
    ROOT,
    SERVICE,
    LiveServer,
    free_port,
    private_home,
    stop_server,
    wait_until_serving,
)

__all__ = [
    "ROOT",
    "LiveServer",
    "free_port",
    "make_tiny_store",
    "metric",
    "private_home",
    "start_server",
    "stop_server",
    "tiny_model",
    "wait_until_serving",
]


def tiny_model(name: str, input_channels: int = 3):
    """A two-layer fully convolutional stand-in with the served models' input and output (3 classes)."""
    import keras

    inputs = keras.Input((None, None, input_channels), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def make_tiny_store(home: Path) -> None:
    """Fill a BentoML store at ``home`` with stand-ins of every shipped model (in a subprocess: BENTOML_HOME is read
    once)."""
    code = (
        "from tests.servers import tiny_model\n"
        "from segserve.architectures import SHIPPED\n"
        "from segserve.store import save_to_store\n"
        "for n in SHIPPED:\n"
        "    save_to_store(tiny_model(n), n, {'input_size': 256, 'encoder_weights': 'none', 'val_metrics': {"
        "'per_class': [{'class_id': 0, 'name': 'corrosion', 'iou': 0.5, 'dice': 0.6, 'per_image_iou': 0.5,"
        " 'per_image_dice': 0.6}], 'mean_iou': 0.5, 'pixel_accuracy': 0.7}})\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)


def start_server(
    bentoml_home: Path,
    log_path: Path,
    target: str = SERVICE,
    pythonpath_first: Path | None = None,
    **settings: object,
) -> LiveServer:
    """Start `bentoml serve TARGET` (the service, or a built bento's tag) on free ports over the store at
    ``bentoml_home``, with SEGSERVE_* settings given as keyword arguments; ``pythonpath_first`` goes before
    everything on PYTHONPATH."""
    return launcher.start_server(
        log_path, settings, bentoml_home=bentoml_home, serve_target=target, pythonpath_first=pythonpath_first
    )


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total
