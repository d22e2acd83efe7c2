"""The gRPC servicer on an in-process grpc.aio server: status codes, admission control, health and draining.

The model is replaced by a NumPy function here (the real model path runs in test_service.py), so that the
timing of a prediction can be held and released by the test.
"""

from __future__ import annotations

import asyncio

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segserve.segmenter import Segmenter
from segserve.servicer import create_server
from segserve.settings import Settings
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

MODELS = {name: {"version": "v1", "input_size": 32, "metadata": {}} for name in ("deeplabv3plus", "unet")}
IMAGE = cv2.imencode(".png", np.full((24, 40, 3), 90, np.uint8))[1].tobytes()


def corrosion_everywhere(batch: np.ndarray) -> np.ndarray:
    probs = np.zeros((*batch.shape[:3], 3), np.float32)
    probs[..., 0] = 1.0
    return probs


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


async def wait_in_flight(segmenter: Segmenter, count: int) -> None:
    while segmenter._in_flight.get("grpc", 0) < count:
        await asyncio.sleep(0.01)


async def with_server(segmenter: Segmenter, body) -> None:
    server, port = await create_server(segmenter)
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

    asyncio.run(with_server(Segmenter(predict, MODELS, Settings()), body))


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
        segmenter.set_models(MODELS)
        await server.set_serving(True)
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        assert (await stub.Segment(pb.SegmentRequest(image=IMAGE))).model == "deeplabv3plus"

    segmenter = Segmenter(predict, {}, Settings())
    asyncio.run(with_server(segmenter, body))


def test_overload_is_resource_exhausted_and_recovers():
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        held = [asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=IMAGE))) for _ in range(2)]
        await wait_in_flight(segmenter, 2)
        try:
            await stub.Segment(pb.SegmentRequest(image=IMAGE))
            raise AssertionError("a third request was admitted over the limit of 2")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "busy" in exc.details()
        predict.release()
        assert [(await f).width for f in held] == [40, 40]
        assert (await stub.Segment(pb.SegmentRequest(image=IMAGE))).width == 40

    segmenter = Segmenter(predict, MODELS, Settings(max_concurrent_requests=2))
    asyncio.run(with_server(segmenter, body))


def test_draining_reports_not_serving_and_finishes_calls_in_flight():
    predict = HeldPredictor()

    async def body(server, channel, stub):
        predict.arm()
        await server.set_serving(True)
        in_flight = asyncio.ensure_future(stub.Segment(pb.SegmentRequest(image=IMAGE)))
        await wait_in_flight(segmenter, 1)
        stopping = asyncio.ensure_future(server.stop(grace=10))
        await asyncio.sleep(0.05)
        assert server.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
        predict.release()
        assert (await in_flight).width == 40  # the call in flight was allowed to finish
        await stopping

    segmenter = Segmenter(predict, MODELS, Settings())
    asyncio.run(with_server(segmenter, body))


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

    asyncio.run(with_server(Segmenter(predict, MODELS, Settings()), body))
