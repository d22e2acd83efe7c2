"""A real Prometheus (Debian's prometheus package) scraping a real server with the shipped configuration.

Prometheus runs on loopback with deploy/prometheus/prometheus.yml, its target pointed at the session's server
and its interval cut to 1 s, and deploy/prometheus/alerts.yml loaded. The test sends Segment requests over gRPC
and HTTP and reads the series back through Prometheus' HTTP API with PromQL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import cv2
import grpc
import httpx
import numpy as np
import pytest
import yaml

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import free_port
from tests.test_deploy import ALERTS, PROMETHEUS, alert_rules, ops_tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prometheus(live_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a Prometheus scraping ``live_server`` every second; killed on teardown."""
    binary = ops_tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [urlparse(live_server.http_url).netloc]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS / "alerts.yml", work / "alerts.yml")

    url = f"http://127.0.0.1:{free_port()}"
    log_path = work / "prometheus.log"
    command = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address={urlparse(url).netloc}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready(url, process, log_path), timeout=60, what="Prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready(url: str, process: subprocess.Popen, log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Callable[[], object], timeout: float, what: str):
    """Poll ``check`` until it returns something truthy; fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(0.5)


def query(url: str, expr: str) -> list[dict]:
    """An instant query through Prometheus' HTTP API: the result's series, each {"metric": labels, "value"}."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def label_sets(url: str, expr: str, labels: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {tuple(series["metric"].get(name, "") for name in labels) for series in query(url, expr)}


def photo_png(width: int = 96, height: int = 64) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.dstack([x * 255 // width, y * 255 // height, (x + y) % 256]).astype(np.uint8)
    return cv2.imencode(".png", rgb)[1].tobytes()


@pytest.fixture(scope="module")
def traffic(live_server) -> None:
    """Segment calls over both transports, for both models and for an unknown one."""
    image = photo_png()
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        for model in ("deeplabv3plus", "unet"):
            stub.Segment(pb.SegmentRequest(image=image, model=model), timeout=60)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Segment(pb.SegmentRequest(image=image, model="nope"), timeout=60)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with httpx.Client(base_url=live_server.http_url, timeout=60) as http:
        for model in ("deeplabv3plus", "unet", "nope"):
            answer = http.post("/segment", files={"image": ("pipe.png", image, "image/png")}, data={"model": model})
            assert answer.status_code == (404 if model == "nope" else 200), answer.text


def test_request_series_arrive_with_their_labels(prometheus, traffic):
    expected = {
        ("grpc", "Segment", "deeplabv3plus", "OK"),
        ("grpc", "Segment", "unet", "OK"),
        ("grpc", "Segment", "unknown", "NOT_FOUND"),
        ("http", "Segment", "deeplabv3plus", "200"),
        ("http", "Segment", "unet", "200"),
        ("http", "Segment", "unknown", "404"),
    }
    labels = ("transport", "method", "model", "code")
    expr = 'segserve_requests_total{job="segserve", method="Segment"} >= 1'
    seen = wait_until(
        lambda: expected <= (found := label_sets(prometheus, expr, labels)) and found,
        timeout=30,
        what=f"{expected} in segserve_requests_total",
    )
    assert expected <= seen
    (up,) = query(prometheus, 'up{job="segserve"}')
    assert up["value"][1] == "1"


def test_latency_and_batch_size_histograms_arrive(prometheus, traffic):
    latency = wait_until(
        lambda: label_sets(
            prometheus,
            'segserve_request_duration_seconds_bucket{job="segserve", method="Segment", le="+Inf"} >= 1',
            ("transport", "method", "model", "le"),
        ),
        timeout=30,
        what="segserve_request_duration_seconds_bucket",
    )
    assert {(t, m) for t, _, m, _ in latency} >= {(t, m) for t in ("grpc", "http") for m in ("deeplabv3plus", "unet")}
    buckets = label_sets(
        prometheus, 'segserve_request_duration_seconds_bucket{transport="grpc", model="unet"}', ("le",)
    )
    assert {"0.1", "1.0", "+Inf"} <= {le for (le,) in buckets}

    batches = label_sets(prometheus, 'segserve_batch_size_bucket{job="segserve"} >= 1', ("model", "le"))
    assert {m for m, le in batches if le == "+Inf"} >= {"deeplabv3plus", "unet"}
    assert {"1.0", "8.0", "32.0", "+Inf"} <= {le for _, le in batches}
    # The drift alert's input: the mean confidence per model is a ratio in (0, 1].
    means = query(
        prometheus,
        "sum by (model) (segserve_prediction_confidence_sum) / sum by (model) (segserve_prediction_confidence_count)",
    )
    assert {s["metric"]["model"] for s in means} >= {"deeplabv3plus", "unet"}
    assert all(0 < float(s["value"][1]) <= 1 for s in means)


def test_prometheus_loads_the_alert_rules(prometheus):
    answer = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == ALERTS
    assert all(rule["health"] != "err" for rule in rules), [r.get("lastError") for r in rules]


def test_health_alerts_stay_quiet_for_a_healthy_server(prometheus, traffic):
    """The expressions of the down / model-not-loaded / model-absent alerts, evaluated by the real Prometheus
    against a server that has loaded both models, select nothing (while `up` and the model series are there)."""
    wait_until(lambda: len(query(prometheus, "segserve_model_info == 1")) >= 2, timeout=30, what="segserve_model_info")
    rules = alert_rules()
    for name in ("SegServeDown", "SegServeModelNotLoaded", "SegServeModelAbsent"):
        assert query(prometheus, rules[name]["expr"]) == [], name
