"""End to end: `bentoml serve` on loopback, driven by a gRPC client and an HTTP client."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import re
import time

import cv2
import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from segserve.architectures import DEFAULT, ENSEMBLE_MEMBERS, SHIPPED
from segserve.classes import NUM_CLASSES, PALETTE
from segserve.metrics import corrosion_asset_ratio, rust_grade
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import metric, start_server, stop_server

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", array)[1].tobytes()


def photo(width: int = 320, height: int = 200, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB photo (compresses well at any size)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    r = (128 + 100 * np.sin(x / (17 + seed) + rng.uniform())).astype(np.uint8)
    g = (128 + 80 * np.cos(y / 23)).astype(np.uint8)
    b = ((x + y) % 256).astype(np.uint8)
    return np.dstack([r, g, b])


def truth_ids(width: int = 320, height: int = 200) -> np.ndarray:
    ids = np.full((height, width), 2, np.uint8)
    ids[:, : width // 3] = 0
    ids[:, width // 3 : 2 * width // 3] = 1
    return ids


@pytest.fixture(scope="module")
def stub(live_server) -> pb_grpc.SegmentationServiceStub:
    options = [("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)]
    with grpc.insecure_channel(live_server.grpc_target, options=options) as channel:
        yield pb_grpc.SegmentationServiceStub(channel)


@pytest.fixture(scope="module")
def http(live_server) -> httpx.Client:
    with httpx.Client(base_url=live_server.http_url, timeout=120) as client:
        yield client


def decode(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def check_segment_fields(mask_png: bytes, color_png: bytes, width: int, height: int, coverage, ratio, grade) -> None:
    mask = decode(mask_png)
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert mask.max() < NUM_CLASSES
    color = cv2.cvtColor(decode(color_png), cv2.COLOR_BGR2RGB)
    assert np.array_equal(color, PALETTE[mask])
    counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    assert [c["pixels"] for c in coverage] == counts.tolist()
    assert sum(c["fraction"] for c in coverage) == pytest.approx(1.0)
    assert ratio == pytest.approx(corrosion_asset_ratio(counts))
    assert grade == rust_grade(ratio)


def test_grpc_segment(stub):
    answer = stub.Segment(pb.SegmentRequest(image=png(photo(320, 200)), model="unet", include_overlay=True))
    assert (answer.model, answer.width, answer.height) == ("unet", 320, 200)
    assert answer.model_version
    coverage = [{"pixels": c.pixels, "fraction": c.fraction} for c in answer.coverage]
    assert [c.name for c in answer.coverage] == ["corrosion", "asset", "background"]
    check_segment_fields(
        answer.mask_png, answer.color_mask_png, 320, 200, coverage, answer.corrosion_asset_ratio, answer.rust_grade
    )
    assert decode(answer.overlay_jpeg, cv2.IMREAD_COLOR).shape == (200, 320, 3)
    assert answer.model_seconds > 0


def test_grpc_segment_default_model_without_overlay(stub):
    answer = stub.Segment(pb.SegmentRequest(image=cv2.imencode(".jpg", photo(64, 48))[1].tobytes()))
    assert answer.model == DEFAULT
    assert answer.overlay_jpeg == b""
    assert (answer.width, answer.height) == (64, 48)


@pytest.mark.parametrize("as_ids", [True, False], ids=["class-id-png", "rgb-mask"])
def test_grpc_evaluate(stub, as_ids):
    ids = truth_ids()
    truth = png(ids) if as_ids else png(PALETTE[ids])
    answer = stub.Evaluate(pb.EvaluateRequest(image=png(photo()), ground_truth=truth, model="deeplabv3plus"))
    cm = np.array(answer.confusion_matrix).reshape(answer.num_classes, answer.num_classes)
    assert answer.num_classes == 3 and cm.sum() == 320 * 200
    assert cm.sum(axis=1).tolist() == np.bincount(ids.ravel(), minlength=3).tolist()
    assert [m.true_pixels for m in answer.per_class] == cm.sum(axis=1).tolist()
    assert [m.predicted_pixels for m in answer.per_class] == cm.sum(axis=0).tolist()
    assert answer.pixel_accuracy == pytest.approx(np.trace(cm) / cm.sum())
    predicted = decode(answer.prediction.mask_png)
    assert predicted.shape == ids.shape
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    for c, scores in enumerate(answer.per_class):
        assert scores.iou == pytest.approx(iou[c], nan_ok=True)


def test_grpc_list_models(stub):
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {*SHIPPED, "ensemble"}
    assert list(models["ensemble"].members) == sorted(ENSEMBLE_MEMBERS)
    assert models["unet"].review.confidence_threshold > 0
    assert models[DEFAULT].is_default and [m for m in models.values() if m.is_default] == [models[DEFAULT]]
    assert [(c.id, c.name, c.red, c.green, c.blue) for c in models["unet"].classes] == [
        (0, "corrosion", 255, 0, 0),
        (1, "asset", 0, 0, 255),
        (2, "background", 0, 255, 0),
    ]
    assert models["unet"].input_size == 256 and models["unet"].version
    assert models["unet"].validation[0].iou == pytest.approx(0.5)


def test_http_segment(http):
    files = {"image": ("p.png", png(photo(300, 210)), "image/png")}
    r = http.post("/segment", files=files, data={"model": "unet", "include_overlay": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["width"], body["height"]) == ("unet", 300, 210)
    check_segment_fields(
        base64.b64decode(body["mask_png"]),
        base64.b64decode(body["color_mask_png"]),
        300,
        210,
        body["coverage"],
        body["corrosion_asset_ratio"],
        body["rust_grade"],
    )
    assert decode(base64.b64decode(body["overlay_jpeg"]), cv2.IMREAD_COLOR).shape == (210, 300, 3)


def test_http_evaluate_and_models(http):
    files = {"image": ("p.png", png(photo()), "image/png"), "ground_truth": ("t.png", png(truth_ids()), "image/png")}
    r = http.post("/evaluate", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == DEFAULT and len(body["confusion_matrix"]) == 9
    assert sum(body["confusion_matrix"]) == 320 * 200
    assert {m["name"] for m in body["per_class"]} == {"corrosion", "asset", "background"}
    models = http.get("/models").json()["models"]
    assert [m["name"] for m in models] == [*sorted(SHIPPED), "ensemble"]


def check_review_fields(answer: dict) -> None:
    """Confidence and review fields of a SegmentResponse (as a dict) are present and consistent."""
    assert 0 < answer["mean_confidence"] <= 1 and 0 <= answer["low_confidence_fraction"] <= 1
    assert 0 < answer["confidence_threshold"] < 1
    for c in answer["coverage"]:
        assert c["mean_confidence"] is None or 0 < c["mean_confidence"] <= 1
    assert answer["needs_review"] == bool(answer["review_reasons"])
    assert all(r.startswith("REVIEW_REASON_") for r in answer["review_reasons"])


def grpc_answer(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    answer = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for c in answer["coverage"]:
        c["pixels"] = int(c["pixels"])
        c["mean_confidence"] = None if c["mean_confidence"] == "NaN" else c["mean_confidence"]
    return answer


def test_review_fields_and_ensemble_on_both_transports(stub, http):
    image = png(photo(160, 120))
    single = grpc_answer(stub.Segment(pb.SegmentRequest(image=image, model="unet")))
    check_review_fields(single)
    assert "models_agreement" not in single
    ensemble = grpc_answer(stub.Segment(pb.SegmentRequest(image=image, model="ensemble")))
    check_review_fields(ensemble)
    assert ensemble["model"] == "ensemble" and all(f"{m}:" in ensemble["model_version"] for m in ENSEMBLE_MEMBERS)
    assert 0 <= ensemble["models_agreement"] <= 1

    r = http.post("/segment", files={"image": ("p.png", image, "image/png")}, data={"model": "ensemble"})
    assert r.status_code == 200, r.text
    body = r.json()
    check_review_fields(body)
    # the same photo and models give the same answer over both transports
    for key in ("models_agreement", "mean_confidence", "low_confidence_fraction", "needs_review", "review_reasons"):
        assert body[key] == pytest.approx(ensemble[key]), key
    assert http.post("/segment", files={"image": ("p.png", image, "image/png")}).json()["models_agreement"] is None


def test_blank_photo_is_flagged_for_review(stub, http):
    blank = png(np.full((120, 160, 3), 200, np.uint8))
    answer = stub.Segment(pb.SegmentRequest(image=blank))
    assert answer.needs_review
    assert pb.REVIEW_REASON_IMAGE_TOO_BLURRED in answer.review_reasons
    body = http.post("/segment", files={"image": ("b.png", blank, "image/png")}).json()
    assert body["needs_review"] is True and "REVIEW_REASON_IMAGE_TOO_BLURRED" in body["review_reasons"]


def test_large_photo_passes_both_transports(stub, http):
    """A 4000x3000 photo and its masks fit the configured message limits."""
    big = cv2.imencode(".jpg", cv2.cvtColor(photo(4000, 3000), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = big[1].tobytes()
    answer = stub.Segment(pb.SegmentRequest(image=data, include_overlay=True))
    assert (answer.width, answer.height) == (4000, 3000)
    assert decode(answer.mask_png).shape == (3000, 4000)
    r = http.post("/segment", files={"image": ("big.jpg", data, "image/jpeg")})
    assert r.status_code == 200 and r.json()["width"] == 4000


def _error_cases():
    good = png(photo())
    huge_header = png(np.zeros((7000, 6000), np.uint8))  # 42 megapixels, a few kB
    return [
        ("empty image", {"image": b""}, "INVALID_ARGUMENT", 400),
        ("not an image", {"image": b"GIF89a not really"}, "INVALID_ARGUMENT", 400),
        ("truncated png", {"image": good[:100]}, "INVALID_ARGUMENT", 400),
        ("unknown model", {"image": good, "model": "resnet"}, "NOT_FOUND", 404),
        ("over pixel limit", {"image": huge_header}, "RESOURCE_EXHAUSTED", 413),
        ("over byte limit", {"image": b"\x89PNG" + bytes(33 * MiB)}, "RESOURCE_EXHAUSTED", 413),
        ("truth of another size", {"image": good, "ground_truth": png(truth_ids(100, 100))}, "INVALID_ARGUMENT", 400),
        (
            "truth in unknown colours",
            {"image": good, "ground_truth": png(np.full((200, 320, 3), 128, np.uint8))},
            "INVALID_ARGUMENT",
            400,
        ),
        (
            "truth with class id 3",
            {"image": good, "ground_truth": png(np.full((200, 320), 3, np.uint8))},
            "INVALID_ARGUMENT",
            400,
        ),
        ("empty truth", {"image": good, "ground_truth": b""}, "INVALID_ARGUMENT", 400),
        ("truth not an image", {"image": good, "ground_truth": b"nope"}, "INVALID_ARGUMENT", 400),
    ]


@pytest.mark.parametrize(("case", "fields", "grpc_code", "http_status"), _error_cases(), ids=lambda v: v)
def test_errors_are_clear_and_the_server_keeps_serving(stub, http, case, fields, grpc_code, http_status):
    rpc, route = ("Evaluate", "/evaluate") if "ground_truth" in fields else ("Segment", "/segment")
    request = (pb.EvaluateRequest if rpc == "Evaluate" else pb.SegmentRequest)(**fields)
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(request)
    assert caught.value.code().name == grpc_code
    assert caught.value.details()  # a message a person can act on

    files = {k: (k, v, "application/octet-stream") for k, v in fields.items() if k != "model"}
    r = http.post(route, files=files, data={"model": fields.get("model", "")})
    assert r.status_code == http_status, r.text
    assert r.json()["error"]

    assert stub.Segment(pb.SegmentRequest(image=png(photo(40, 30)))).width == 40
    assert http.post("/segment", files={"image": ("ok.png", png(photo(40, 30)), "image/png")}).status_code == 200


def test_http_missing_field_is_a_400(http):
    r = http.post("/segment", data={"model": "unet"}, files={"other": ("x", b"x")})
    assert r.status_code == 400


def test_deadline_is_honoured(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Segment(pb.SegmentRequest(image=png(photo(2000, 1500))), timeout=0.005)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Segment(pb.SegmentRequest(image=png(photo(40, 30))), timeout=60).width == 40


def test_health_and_reflection(live_server):
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "segserve.v1.SegmentationService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = {
            s.name for r in reflection.ServerReflectionInfo(iter([request])) for s in r.list_services_response.service
        }
        assert {"segserve.v1.SegmentationService", "grpc.health.v1.Health"} <= names


def scrape(http: httpx.Client) -> str:
    r = http.get("/metrics")
    assert r.status_code == 200
    return r.text


def test_both_transports_share_one_batching_path(stub, http):
    """Concurrent gRPC and HTTP requests are merged into batches larger than one by the same model API."""
    before = scrape(http)
    image = png(photo(128, 96))

    def via_grpc(_):
        return stub.Segment(pb.SegmentRequest(image=image, model="unet")).model

    def via_http(_):
        return http.post("/segment", files={"image": ("p.png", image, "image/png")}, data={"model": "unet"}).json()[
            "model"
        ]

    with cf.ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(via_grpc, i) for i in range(24)] + [pool.submit(via_http, i) for i in range(24)]
        assert [f.result() for f in futures] == ["unet"] * 48
    after = scrape(http)

    images = metric(after, "segserve_batch_size_sum", model="unet") - metric(
        before, "segserve_batch_size_sum", model="unet"
    )
    batches = metric(after, "segserve_batch_size_count", model="unet") - metric(
        before, "segserve_batch_size_count", model="unet"
    )
    singles = metric(after, "segserve_batch_size_bucket", model="unet", le="1.0") - metric(
        before, "segserve_batch_size_bucket", model="unet", le="1.0"
    )
    # 48, or more when BentoML's client dropped a connection and a model call was sent again (call_model)
    assert 48 <= images < 96
    assert batches < images and singles < batches  # some batches held more than one request
    for transport in ("grpc", "http"):
        ok = "OK" if transport == "grpc" else "200"
        grew = metric(after, "segserve_requests_total", transport=transport, method="Segment", model="unet", code=ok)
        was = metric(before, "segserve_requests_total", transport=transport, method="Segment", model="unet", code=ok)
        assert grew - was == 24


def test_ensemble_requests_are_batched(stub, http):
    """Concurrent ensemble requests are merged into batches by the model service's ensemble API."""
    before = scrape(http)
    image = png(photo(96, 64))

    def call(model):
        return stub.Segment(pb.SegmentRequest(image=image, model=model)).model

    with cf.ThreadPoolExecutor(16) as pool:
        models = ["ensemble"] * 8 + ["unet"] * 8
        assert list(pool.map(call, models)) == models
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    # at least: a model call dropped by the client's session refresh is sent again (bento/service.py: call_model)
    for model in ("ensemble", "unet"):
        images = grew("segserve_batch_size_sum", model=model)
        assert images >= 8 and grew("segserve_batch_size_count", model=model) < images
    assert grew("segserve_prediction_confidence_count", model="ensemble") == 8
    assert grew("segserve_requests_total", transport="grpc", method="Segment", model="ensemble", code="OK") == 8


def test_metrics_exposition(stub, http):
    """Each series moves by exactly what the requests under test did."""
    before = scrape(http)
    stub.Segment(pb.SegmentRequest(image=png(photo(64, 64))))
    with pytest.raises(grpc.RpcError):
        stub.Segment(pb.SegmentRequest(image=b""))
    text = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    grpc_segment = {"transport": "grpc", "method": "Segment", "model": DEFAULT}
    assert grew("segserve_requests_total", code="OK", **grpc_segment) == 1
    assert grew("segserve_requests_total", code="INVALID_ARGUMENT", **grpc_segment) == 1
    assert grew("segserve_request_duration_seconds_count", **grpc_segment) == 2
    # the model side: once, or twice if BentoML's client dropped the connection and the call was sent again
    assert grew("segserve_model_compute_seconds_count", model=DEFAULT) in (1, 2)
    assert grew("segserve_batch_size_sum", model=DEFAULT) in (1, 2)
    assert grew("segserve_corrosion_asset_ratio_count", model=DEFAULT) == 1
    assert grew("segserve_prediction_confidence_count", model=DEFAULT) == 1
    assert metric(text, "segserve_requests_in_flight", transport="grpc") == 0
    versions = re.findall(
        r'segserve_model_info\{backend="openvino",model="([\w-]+)",precision="(?:f32|bf16)",version="(\w+)"\} 1\.0',
        text,
    )
    assert {m for m, _ in versions} == set(SHIPPED)


def test_readyz_answers_at_once_while_the_server_starts(tiny_store, tmp_path):
    """/readyz answers 503 at once until the models are served, then 200, with gRPC health SERVING; it never
    waits out BentoML's request timeout."""
    slow = tmp_path / "slow"  # the model worker starts 12 s late, as one loading large models does
    slow.mkdir()
    (slow / "sitecustomize.py").write_text('import sys, time\nif "segserve-models" in sys.argv:\n    time.sleep(12)\n')
    server = start_server(tiny_store, tmp_path / "serve.log", pythonpath_first=slow)
    answers: list[tuple[int, float]] = []
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            while time.monotonic() < deadline and not (answers and answers[-1][0] == 200):
                assert server.process.poll() is None, server.log()[-4000:]
                started = time.monotonic()
                try:
                    status = http.get("/readyz").status_code
                except httpx.ConnectError:  # not listening yet
                    time.sleep(0.2)
                    continue
                answers.append((status, time.monotonic() - started))
                time.sleep(0.2)
        assert answers and answers[-1][0] == 200, answers
        assert {status for status, _ in answers} <= {200, 503}, answers
        # BentoML's own check of the model service gives up after 5 s; nothing waits longer
        assert max(seconds for _, seconds in answers) < 7, answers
        with grpc.insecure_channel(server.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            until = time.monotonic() + 10
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                != health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < until, "gRPC health not SERVING after /readyz said ready"
                time.sleep(0.1)
    finally:
        stop_server(server)
