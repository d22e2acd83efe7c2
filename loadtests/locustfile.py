"""Locust load test of a running segserve server over both transports.

    locust -f loadtests/locustfile.py --headless -u 8 -r 2 -t 60s --host http://127.0.0.1:3000

HttpSegmentUser posts /segment (and sometimes GETs /models) to --host; GrpcSegmentUser calls Segment (and sometimes
ListModels) over gRPC. Both use the harness's SegmentClient, so the address, message size, token and TLS come from
the server's SEGSERVE_* settings (``loadtests.harness.target``: SEGSERVE_GRPC_TARGET, else 127.0.0.1 and
SEGSERVE_GRPC_PORT; without --host, SEGSERVE_HTTP_PORT). The image is LOADTEST_IMAGE, or a synthetic 640x480 PNG;
the model is LOADTEST_MODEL (empty: the server's default). LOADTEST_STEPS (for example 1,2,4,8,16) runs a stepped
load, LOADTEST_STEP_SECONDS (30) each, instead of -u/-r/-t.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent
from locust import LoadTestShape, User, between, task

from loadtests.harness.client import CALL_NAMES, Outcome, SegmentClient
from loadtests.harness.images import image_or_synthetic
from loadtests.harness.target import Target

grpc_gevent.init_gevent()  # let gRPC calls yield to other users' greenlets instead of blocking the process

TIMEOUT_S = 60.0
TARGET = Target.from_env()
MODEL = os.environ.get("LOADTEST_MODEL", "")
IMAGE, _ = image_or_synthetic(Path(os.environ["LOADTEST_IMAGE"]) if os.environ.get("LOADTEST_IMAGE") else None)


class SegmentUser(User):
    """Segment over one transport, with an occasional ListModels; every call is reported to Locust as a request
    (type "grpc" and the method's name over gRPC, the HTTP method and path over HTTP)."""

    abstract = True
    transport = ""
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        target = TARGET
        if self.transport == "http" and self.host:
            target = dataclasses.replace(TARGET, http_url=self.host.rstrip("/"))
        self.client = SegmentClient(target, TIMEOUT_S, connections=1)

    def on_stop(self) -> None:
        self.client.close()

    def report(self, outcome: Outcome, failure: str = "") -> None:
        """Fire Locust's request event for one call; ``failure`` fails an answered call."""
        request_type, name = CALL_NAMES[(outcome.transport, outcome.method)]
        if not outcome.ok:
            failure = f"{outcome.code}: {outcome.detail}"
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=outcome.seconds * 1000,
            response_length=outcome.size,
            response=outcome.answer,
            context={},
            exception=RuntimeError(failure) if failure else None,
        )

    @task(10)
    def segment(self) -> None:
        outcome = self.client.segment(self.transport, IMAGE, MODEL, filename="image.png")
        answered = outcome.ok and (self.transport == "grpc" or "mask_png" in (outcome.answer or {}))
        self.report(outcome, "" if answered else "answer has no mask_png")

    @task(1)
    def list_models(self) -> None:
        self.report(self.client.list_models(self.transport))


class GrpcSegmentUser(SegmentUser):
    """Segment over gRPC, with an occasional ListModels."""

    transport = "grpc"


class HttpSegmentUser(SegmentUser):
    """POST /segment over HTTP, with an occasional GET /models (to --host, default the settings' HTTP address)."""

    transport = "http"
    host = TARGET.http_url


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
