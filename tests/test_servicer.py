"""The gRPC servicer on an in-process grpc.aio server: status codes, admission control, health and draining.

The model is replaced by a NumPy function here (the real model path runs in test_service.py), so that the
timing of a prediction can be held and released by the test.
"""

from __future__ import annotations

import asyncio
import time

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from segserve.edge import Edge
from segserve.predictor import from_probabilities, pack
from segserve.servicer import create_server
from segserve.settings import Settings
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.two_models import two_model_settings

MODELS = {name: {"version": "v1", "input_size": 32, "metadata": {}} for name in ("deeplabv3plus", "unet")}
IMAGE = cv2.imencode(".png", np.full((24, 40, 3), 90, np.uint8))[1].tobytes()


def corrosion_everywhere(batch: np.ndarray) -> np.ndarray:
    """The model service's answer (segserve.predictor.pack) for a batch: corrosion everywhere, fully confident."""
    probs = np.zeros((*batch.shape[:3], 3), np.float32)
    probs[..., 0] = 1.0
    return pack(from_probabilities(probs))


class HeldPredictor:
    """A predictor whose answers wait until the test calls ``release()``."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None

    async def __call__(self, name: str, batch: np.ndarray) -> np.ndarray:
        await self.event.wait()
        return corrosion_everywhere(batch)

    def arm(self) -> None:
        self.event = asyncio.Event()  # created inside the test's event loop

    def release(self) -> None:
        self.event.set()


def edge_for(predict, models=MODELS, settings: Settings | None = None, auth=None) -> Edge:
    """An edge over ``predict`` serving ``models`` (none: still loading)."""
    edge = Edge(settings or two_model_settings(), predict, auth)
    edge.serve(models)
    return edge


async def wait_in_flight(edge: Edge, count: int) -> None:
    while edge.admission.requests.get("grpc", 0) < count:
        await asyncio.sleep(0.01)


async def with_server(edge: Edge, body) -> None:
    server, port = await create_server(edge)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await body(server, channel, pb_grpc.SegmentationServiceStub(channel))
    finally:
        await server.stop(0)


def test_segment_answers_from_the_predictor():
    async def predict(name, batch):
        return corrosion_everywhere(batch)

    async def body(server, channel, stub):
        answer = await stub.Segment(pb.SegmentRequest(image=IMAGE, model="unet"))
        assert (answer.model, answer.model_version, answer.width, answer.height) == ("unet", "v1", 40, 24)
        assert answer.corrosion_asset_ratio == 1.0 and answer.rust_grade == 0
        assert [c.pixels for c in answer.coverage] == [960, 0, 0]

    asyncio.run(with_server(edge_for(predict), body))


def test_not_ready_until_models_are_set_then_serving():
    async def predict(name, batch):
        return corrosion_everywhere(batch)

    async def body(server, channel, stub):
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="segserve.v1.SegmentationService")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        for call in (stub.Segment(pb.SegmentRequest(image=IMAGE)), stub.ListModels(pb.ListModelsRequest())):
            try:
                await call
                raise AssertionError("answered before the models were loaded")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
        edge.serve(MODELS)
        await server.set_serving(True)
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        assert (await stub.Segment(pb.SegmentRequest(image=IMAGE))).model == "deeplabv3plus"

    edge = edge_for(predict, {})
    asyncio.run(with_server(edge, body))


def test_overload_is_resource_exhausted_and_recovers():
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        held = [asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=IMAGE))) for _ in range(2)]
        await wait_in_flight(edge, 2)
        try:
            await stub.Segment(pb.SegmentRequest(image=IMAGE))
            raise AssertionError("a third request was admitted over the limit of 2")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "busy" in exc.details()
        predict.release()
        assert [(await f).width for f in held] == [40, 40]
        assert (await stub.Segment(pb.SegmentRequest(image=IMAGE))).width == 40

    edge = edge_for(predict, settings=two_model_settings(max_concurrent_requests=2))
    asyncio.run(with_server(edge, body))


def test_draining_reports_not_serving_and_finishes_calls_in_flight():
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        await server.set_serving(True)
        in_flight = asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=IMAGE)))
        await wait_in_flight(edge, 1)
        stopping = asyncio.ensure_future(server.stop(grace=10))
        await asyncio.sleep(0.05)
        assert server.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
        predict.release()
        assert (await in_flight).width == 40  # the call in flight was allowed to finish
        await stopping

    edge = edge_for(predict)
    asyncio.run(with_server(edge, body))


def test_a_failing_prediction_does_not_take_the_server_down():
    calls = 0

    async def predict(name, batch):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model service unreachable")
        return corrosion_everywhere(batch)

    async def body(server, channel, stub):
        try:
            await stub.Segment(pb.SegmentRequest(image=IMAGE))
            raise AssertionError("no error")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert (await stub.Segment(pb.SegmentRequest(image=IMAGE))).width == 40

    asyncio.run(with_server(edge_for(predict), body))


def grpc_count(method: str, code: str, model: str = "deeplabv3plus") -> float:
    labels = {"transport": "grpc", "method": method, "model": model, "code": code}
    return REGISTRY.get_sample_value("segserve_requests_total", labels) or 0.0


def in_flight_gauge() -> float:
    return REGISTRY.get_sample_value("segserve_requests_in_flight", {"transport": "grpc"}) or 0.0


async def rpc_error(call) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def test_not_ready_is_counted_with_the_model_named():
    async def body(server, channel, stub):
        before = grpc_count("Segment", "UNAVAILABLE")
        exc = await rpc_error(stub.Segment(pb.SegmentRequest(image=IMAGE)))
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(exc.trailing_metadata())["grpc-retry-pushback-ms"] == "2000"
        assert grpc_count("Segment", "UNAVAILABLE") - before == 1

    asyncio.run(with_server(edge_for(HeldPredictor(), {}), body))


def test_a_failure_inside_the_server_is_internal_and_counted_as_such():
    async def broken(name, batch):
        return np.zeros((1, 2), np.uint8)  # not a packed prediction: building the answer fails

    async def body(server, channel, stub):
        before, ok = grpc_count("Segment", "INTERNAL"), grpc_count("Segment", "OK")
        exc = await rpc_error(stub.Segment(pb.SegmentRequest(image=IMAGE)))
        assert exc.code() == grpc.StatusCode.INTERNAL
        assert "request id" in exc.details() and "IndexError" not in exc.details()
        assert grpc_count("Segment", "INTERNAL") - before == 1
        assert grpc_count("Segment", "OK") == ok  # not counted as a success

    asyncio.run(with_server(edge_for(broken), body))


def test_the_server_enforces_the_deadline_and_spares_the_model():
    """A deadline longer than decoding and shorter than inference: the server answers DEADLINE_EXCEEDED itself."""
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        before = grpc_count("Segment", "DEADLINE_EXCEEDED")
        exc = await rpc_error(stub.Segment(pb.SegmentRequest(image=IMAGE), timeout=0.5))
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(100):  # the server counts its own DEADLINE_EXCEEDED once its handler gives up
            if grpc_count("Segment", "DEADLINE_EXCEEDED") - before == 1:
                break
            await asyncio.sleep(0.02)
        assert grpc_count("Segment", "DEADLINE_EXCEEDED") - before == 1
        assert in_flight_gauge() == 0

    asyncio.run(with_server(edge_for(predict), body))


def test_a_client_that_goes_away_leaves_nothing_in_flight():
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        before = grpc_count("Segment", "CANCELLED")
        call = stub.Segment(pb.SegmentRequest(image=IMAGE))
        await wait_in_flight(edge, 1)
        call.cancel()
        for _ in range(100):
            if edge.admission.requests["grpc"] == 0:
                break
            await asyncio.sleep(0.02)
        assert edge.admission.requests["grpc"] == 0 and in_flight_gauge() == 0
        assert grpc_count("Segment", "CANCELLED") - before == 1

    edge = edge_for(predict)
    asyncio.run(with_server(edge, body))


def test_tokens_on_grpc_and_health_stays_open():
    from segserve.auth import TokenAuth

    async def predict(name, batch):
        return corrosion_everywhere(batch)

    async def run():
        server, port = await create_server(edge_for(predict, auth=TokenAuth(["s3cret"])))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.SegmentationServiceStub(channel)
                for metadata in (None, (("authorization", "Bearer nope"),)):
                    exc = await rpc_error(stub.ListModels(pb.ListModelsRequest(), metadata=metadata))
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                good = (("authorization", "Bearer s3cret"),)
                assert (await stub.Segment(pb.SegmentRequest(image=IMAGE), metadata=good)).width == 40
                health = health_pb2_grpc.HealthStub(channel)
                await health.Check(health_pb2.HealthCheckRequest(service=""))  # no token needed
        finally:
            await server.stop(0)

    asyncio.run(run())


def big_png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


def test_pixel_budget_queues_large_photos_and_lets_small_ones_through():
    """Two large photos cannot be in flight together: the second waits, then is refused; small ones flow."""
    predict = HeldPredictor()
    settings = two_model_settings(
        max_image_pixels=4_000_000, max_pixels_in_flight=5_000_000, admission_wait_seconds=0.3
    )

    async def body(server, channel, stub):
        predict.arm()
        large = big_png(2000, 2000)  # 4 megapixels
        first = asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=large)))
        while edge.admission.pixels == 0:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        exc = await rpc_error(stub.Segment(pb.SegmentRequest(image=large)))
        waited = time.monotonic() - started
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "decoded pixels" in exc.details()
        assert dict(exc.trailing_metadata())["grpc-retry-pushback-ms"] == "1000"
        assert waited >= 0.25  # it queued for admission_wait_seconds before the refusal
        small = asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=IMAGE)))
        while edge.admission.pixels != 4_000_000 + 40 * 24:
            await asyncio.sleep(0.01)  # admitted beside the large one, waiting for the model
        predict.release()
        assert (await first).width == 2000 and (await small).width == 40
        assert edge.admission.pixels == 0

    edge = edge_for(predict, settings=settings)
    asyncio.run(with_server(edge, body))
