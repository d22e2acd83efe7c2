"""Locust load test of a running segserve server over both transports.

    locust -f loadtests/locustfile.py --headless -u 8 -r 2 -t 60s --host http://127.0.0.1:3000

HttpSegmentUser posts /segment (and sometimes GETs /models) to --host; GrpcSegmentUser calls Segment (and sometimes
ListModels) on SEGSERVE_GRPC_TARGET (default 127.0.0.1:$SEGSERVE_GRPC_PORT, else 127.0.0.1:50051). The image is
LOADTEST_IMAGE, or a synthetic 640x480 PNG; the model is LOADTEST_MODEL (empty: the server's default).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import HttpUser, LoadTestShape, User, between, task

from loadtests.images import synthetic_png
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()  # let gRPC calls yield to other users' greenlets instead of blocking the process

TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_TARGET = os.environ.get("SEGSERVE_GRPC_TARGET") or f"127.0.0.1:{os.environ.get('SEGSERVE_GRPC_PORT', '50051')}"
MODEL = os.environ.get("LOADTEST_MODEL", "")


IMAGE = Path(os.environ["LOADTEST_IMAGE"]).read_bytes() if os.environ.get("LOADTEST_IMAGE") else synthetic_png()


class GrpcClient:
    """A SegmentationService stub whose calls are reported to Locust as request events (type "grpc")."""

    def __init__(self, target: str, environment) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)
        self.environment = environment

    def call(self, method: str, request):
        started = time.perf_counter()
        response, exception = None, None
        try:
            response = getattr(self.stub, method)(request, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=method,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=response.ByteSize() if response is not None else 0,
            response=response,
            context={},
            exception=exception,
        )
        return response

    def close(self) -> None:
        self.channel.close()


class GrpcSegmentUser(User):
    """Segment over gRPC, with an occasional ListModels."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.client = GrpcClient(GRPC_TARGET, self.environment)

    def on_stop(self) -> None:
        self.client.close()

    @task(10)
    def segment(self) -> None:
        self.client.call("Segment", pb.SegmentRequest(image=IMAGE, model=MODEL))

    @task(1)
    def list_models(self) -> None:
        self.client.call("ListModels", pb.ListModelsRequest())


class HttpSegmentUser(HttpUser):
    """POST /segment over HTTP, with an occasional GET /models."""

    wait_time = between(0.1, 0.5)

    @task(10)
    def segment(self) -> None:
        files = {"image": ("image.png", IMAGE, "application/octet-stream")}
        data = {"model": MODEL, "include_overlay": "false"}
        with self.client.post("/segment", files=files, data=data, timeout=TIMEOUT_S, catch_response=True) as resp:
            if resp.ok and "mask_png" not in resp.json():
                resp.failure("answer has no mask_png")

    @task(1)
    def models(self) -> None:
        self.client.get("/models", timeout=TIMEOUT_S)


STEPS = [int(u) for u in os.environ.get("LOADTEST_STEPS", "").split(",") if u.strip()]
STEP_SECONDS = float(os.environ.get("LOADTEST_STEP_SECONDS", "30"))

if STEPS:  # only then does Locust run this shape instead of its -u/-r/-t options

    class SteppedLoad(LoadTestShape):
        """LOADTEST_STEPS users (for example 1,2,4,8,16), each step LOADTEST_STEP_SECONDS long, then stop."""

        def tick(self):
            step = int(self.get_run_time() // STEP_SECONDS)
            if step >= len(STEPS):
                return None
            return STEPS[step], STEPS[step]
