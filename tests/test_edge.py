"""segserve.edge: what both transports get around a call: tokens first, the header read once, admission by
count and pixels, the deadline, and the metrics of the call and of its answer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from segserve import imaging
from segserve.auth import TokenAuth
from segserve.edge import Edge
from segserve.errors import DeadlineExceeded, Overloaded, Unauthenticated, UnknownModel
from segserve.predictor import from_probabilities, pack
from segserve.settings import Settings
from tests.two_models import two_model_settings

MODELS = {name: {"version": "v1", "input_size": 32, "metadata": {}} for name in ("deeplabv3plus", "unet")}
IMAGE = cv2.imencode(".png", np.random.default_rng(0).integers(40, 220, (24, 40, 3), dtype=np.uint8))[1].tobytes()


async def corrosion_everywhere(name: str, batch: np.ndarray) -> np.ndarray:
    probs = np.zeros((*batch.shape[:3], 3), np.float32)
    probs[..., 0] = 1.0
    return pack(from_probabilities(probs))


def edge_for(predict=corrosion_everywhere, settings: Settings | None = None, auth: TokenAuth | None = None) -> Edge:
    edge = Edge(settings or two_model_settings(), predict, auth)
    edge.serve(MODELS)
    return edge


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_header_is_read_once_per_photo(monkeypatch):
    reads = []
    original = imaging.read_header

    def counting(data, *args, **kwargs):
        reads.append(len(data))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(imaging, "read_header", counting)
    asyncio.run(edge_for().segment("grpc", None, IMAGE, "unet"))
    assert reads == [len(IMAGE)]
    truth = cv2.imencode(".png", np.zeros((24, 40), np.uint8))[1].tobytes()
    reads.clear()
    asyncio.run(edge_for().evaluate("grpc", None, IMAGE, truth, "unet"))
    assert reads == [len(IMAGE), len(truth)]  # the photo's once, the ground truth's once


def test_evaluate_reserves_twice_the_photos_pixels():
    seen = []

    async def predict(name, batch):
        seen.append(edge.admission.pixels)
        return await corrosion_everywhere(name, batch)

    edge = edge_for(predict)
    truth = cv2.imencode(".png", np.zeros((24, 40), np.uint8))[1].tobytes()
    asyncio.run(edge.segment("http", None, IMAGE))
    asyncio.run(edge.evaluate("http", None, IMAGE, truth))
    assert seen == [24 * 40, 2 * 24 * 40] and edge.admission.pixels == 0


def test_tokens_are_checked_before_anything_else():
    edge = edge_for(auth=TokenAuth(["s3cret"]))
    before = sample("segserve_requests_total", transport="grpc", method="Segment", model="unet", code="UNAUTHENTICATED")
    with pytest.raises(Unauthenticated):
        asyncio.run(edge.segment("grpc", None, b"not even an image", "unet"))
    after = sample("segserve_requests_total", transport="grpc", method="Segment", model="unet", code="UNAUTHENTICATED")
    assert after - before == 1
    assert asyncio.run(edge.segment("grpc", "Bearer s3cret", IMAGE, "unet"))["model"] == "unet"


def test_an_unknown_model_is_counted_under_unknown():
    before = sample("segserve_requests_total", transport="http", method="Segment", model="unknown", code="404")
    with pytest.raises(UnknownModel):
        asyncio.run(edge_for().segment("http", None, IMAGE, "segnet"))
    assert (
        sample("segserve_requests_total", transport="http", method="Segment", model="unknown", code="404") == before + 1
    )


def test_the_answer_feeds_the_drift_and_review_metrics():
    """Corrosion everywhere: ratio 1.0; the 40x24 photo is too small to judge, which the review flag says."""
    count = sample("segserve_corrosion_asset_ratio_count", model="unet")
    ratio_sum = sample("segserve_corrosion_asset_ratio_sum", model="unet")
    flags = sample("segserve_review_flags_total", model="unet", reason="IMAGE_TOO_SMALL")
    answer = asyncio.run(edge_for().segment("grpc", None, IMAGE, "unet"))
    assert answer["review_reasons"] == ["REVIEW_REASON_IMAGE_TOO_SMALL"]
    assert sample("segserve_corrosion_asset_ratio_count", model="unet") == count + 1
    assert sample("segserve_corrosion_asset_ratio_sum", model="unet") == pytest.approx(ratio_sum + 1.0)
    assert sample("segserve_review_flags_total", model="unet", reason="IMAGE_TOO_SMALL") == flags + 1


def test_the_deadline_bounds_the_whole_call():
    async def slow(name, batch):
        await asyncio.sleep(5)
        return await corrosion_everywhere(name, batch)

    before = sample(
        "segserve_requests_total", transport="grpc", method="Segment", model="unet", code="DEADLINE_EXCEEDED"
    )
    with pytest.raises(DeadlineExceeded, match="Segment did not finish within the call's deadline"):
        asyncio.run(edge_for(slow).segment("grpc", None, IMAGE, "unet", timeout=0.2))
    after = sample(
        "segserve_requests_total", transport="grpc", method="Segment", model="unet", code="DEADLINE_EXCEEDED"
    )
    assert after - before == 1


def test_list_models_takes_a_place_too():
    edge = edge_for(settings=two_model_settings(max_concurrent_requests=1))

    async def run():
        async with edge.admission.admit("grpc"):
            with pytest.raises(Overloaded):
                await edge.list_models("grpc", None)
        assert [m["name"] for m in (await edge.list_models("grpc", None))["models"]][:2] == ["deeplabv3plus", "unet"]

    asyncio.run(run())


def test_the_models_it_is_set_to_serve_are_in_a_gauge_from_the_start():
    """segserve_model_configured is what SegServeModelNotLoaded and SegServeModelAbsent hold the loaded models to."""
    set_to = {}

    class Gauge:
        def labels(self, model):
            return SimpleNamespace(set=lambda value: set_to.__setitem__(model, value))

    Edge(
        two_model_settings(), corrosion_everywhere, telemetry=SimpleNamespace(model_configured=Gauge(), in_flight=None)
    )
    assert set_to == {"deeplabv3plus": 1, "unet": 1}
    Edge(two_model_settings(), corrosion_everywhere)
    assert sample("segserve_model_configured", model="unet") == 1.0


def test_serving_sets_the_model_info_gauge():
    edge = Edge(two_model_settings(), corrosion_everywhere)
    edge.serve({"unet": {**MODELS["unet"], "version": "v9", "backend": "openvino", "precision": "f32"}})
    assert sample("segserve_model_info", model="unet", version="v9", backend="openvino", precision="f32") == 1.0
