"""``SegmentClient``: Segment and ListModels over gRPC and HTTP against one ``Target``.

One gRPC channel and one httpx.Client per client, both made on first use and shared by the threads that use
it. A call never raises for what the server or the network did: it returns an ``Outcome`` whose code is "OK",
a gRPC status name ("RESOURCE_EXHAUSTED"), "HTTP <status>" ("HTTP 429"), or the exception's class name when
no answer came ("ConnectError").

Under Locust, call ``grpc.experimental.gevent.init_gevent()`` before the first client is made.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from loadtests.harness.target import Target
from segserve.client import retry_pushback
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc

TRANSPORTS = ("grpc", "http")
OK = "OK"
# Codes of a call the server refused for now (too much in flight, or not ready): a later retry may succeed.
REFUSED = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "HTTP 429", "HTTP 503")
# The answers each transport names its calls by, for reports (Locust's request type and name).
CALL_NAMES = {
    ("grpc", "Segment"): ("grpc", "Segment"),
    ("grpc", "ListModels"): ("grpc", "ListModels"),
    ("http", "Segment"): ("POST", "/segment"),
    ("http", "ListModels"): ("GET", "/models"),
}


@dataclass
class Outcome:
    """One call: its transport and method, its code, how long it took, and the answer when there is one."""

    transport: str
    method: str
    code: str
    seconds: float
    answer: Any = None  # the protobuf message (gRPC) or the JSON object (HTTP)
    size: int = 0  # bytes of the answer
    retry_after: float | None = None  # seconds, when a refusal says when to retry
    detail: str = ""  # the error's message

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def refused(self) -> bool:
        """The server refused the call for now (a retry may succeed)."""
        return self.code in REFUSED

    def check(self) -> Outcome:
        """This outcome; raise RuntimeError if the call failed."""
        if not self.ok:
            raise RuntimeError(f"{self.transport} {self.method} failed: {self.code} {self.detail}".rstrip())
        return self


class SegmentClient:
    """Segment and ListModels over both transports of one server, with its token and TLS."""

    def __init__(self, target: Target, timeout: float = 60.0, connections: int = 64) -> None:
        self.target = target
        self.timeout = timeout
        self.connections = connections
        self.metadata = target.authorization
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.SegmentationServiceStub | None = None
        self._http: httpx.Client | None = None

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel (TLS when the target has it), with the server's message-size limit."""
        return self._grpc_pair()[0]

    @property
    def stub(self) -> pb_grpc.SegmentationServiceStub:
        """The SegmentationService stub on ``channel``."""
        return self._grpc_pair()[1]

    @property
    def http(self) -> httpx.Client:
        """The HTTP client (verifying the server against the target's CA file under TLS), with the token."""
        with self._lock:
            if self._http is None:
                self._http = self._make_http()
            return self._http

    def _grpc_pair(self) -> tuple[grpc.Channel, pb_grpc.SegmentationServiceStub]:
        with self._lock:
            if self._channel is None or self._stub is None:
                self._channel = self._make_channel()
                self._stub = pb_grpc.SegmentationServiceStub(self._channel)
            return self._channel, self._stub

    def _make_channel(self) -> grpc.Channel:
        return self.target.connection.channel()

    def _make_http(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.target.tls and self.target.ca_file:
            verify = ssl.create_default_context(cafile=self.target.ca_file)
        if self.target.client_cert_file and self.target.client_key_file:
            verify = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
            verify.load_cert_chain(self.target.client_cert_file, self.target.client_key_file)
        limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
        return httpx.Client(
            base_url=self.target.http_url,
            timeout=self.timeout,
            limits=limits,
            verify=verify,
            headers=dict(self.metadata),
        )

    def close(self) -> None:
        """Close the channel and the HTTP client, if they were made."""
        with self._lock:
            http, channel = self._http, self._channel
            self._http = self._channel = self._stub = None
        if http is not None:
            http.close()
        if channel is not None:
            channel.close()

    def __enter__(self) -> SegmentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def segment(
        self,
        transport: str,
        image: bytes,
        model: str = "",
        include_overlay: bool = False,
        filename: str = "image",
    ) -> Outcome:
        """One Segment call over ``transport`` ("grpc" or "http")."""
        if transport == "grpc":
            request = pb.SegmentRequest(image=image, model=model, include_overlay=include_overlay)
            return self._grpc_call("Segment", self.stub.Segment, request)
        files = {"image": (filename, image, "application/octet-stream")}
        data = {"model": model, "include_overlay": "true" if include_overlay else "false"}
        return self._http_call("Segment", "POST", "/segment", files=files, data=data)

    def list_models(self, transport: str) -> Outcome:
        """One ListModels call (HTTP: GET /models)."""
        if transport == "grpc":
            return self._grpc_call("ListModels", self.stub.ListModels, pb.ListModelsRequest())
        return self._http_call("ListModels", "GET", "/models")

    def _grpc_call(self, method: str, call, request) -> Outcome:
        started = time.perf_counter()
        try:
            answer = call(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            seconds = time.perf_counter() - started
            retry = retry_pushback(exc)
            return Outcome("grpc", method, exc.code().name, seconds, retry_after=retry, detail=exc.details() or "")
        return Outcome("grpc", method, OK, time.perf_counter() - started, answer, answer.ByteSize())

    def _http_call(self, method: str, verb: str, path: str, **kwargs: Any) -> Outcome:
        started = time.perf_counter()
        try:
            response = self.http.request(verb, path, **kwargs)
        except httpx.HTTPError as exc:
            return Outcome("http", method, type(exc).__name__, time.perf_counter() - started, detail=str(exc))
        seconds = time.perf_counter() - started
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            retry = response.headers.get("retry-after")
            detail = answer.get("error", "") if isinstance(answer, dict) else response.text[:200]
            code = f"HTTP {response.status_code}"
            return Outcome("http", method, code, seconds, answer, len(response.content), _seconds(retry), detail)
        return Outcome("http", method, OK, seconds, answer, len(response.content))

    def models(self) -> list[dict]:
        """The served models (GET /models); raises on any failure."""
        return self.http.get("/models").raise_for_status().json()["models"]

    def model_info(self, name: str = "") -> dict:
        """The served model ``name`` as GET /models describes it (default: the server's default model); raises
        LookupError if it is not served."""
        models = {m["name"]: m for m in self.models()}
        name = name or next((n for n, m in models.items() if m.get("is_default")), "")
        if name not in models:
            raise LookupError(f"model {name!r} is not served; the server has {', '.join(sorted(models))}")
        return models[name]

    def wait_for_grpc(self, timeout: float) -> None:
        """Wait until the gRPC channel connects; raise grpc.FutureTimeoutError if it does not in time."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def serving(self, timeout: float = 2.0) -> bool:
        """HTTP /readyz answers 200 and gRPC health says SERVING."""
        try:
            if self.http.get("/readyz", timeout=timeout).status_code != 200:
                return False
            health = health_pb2_grpc.HealthStub(self.channel)
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except (httpx.HTTPError, grpc.RpcError):
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def batch_size_totals(self, model: str) -> tuple[float, float]:
        """(segserve_batch_size_sum, segserve_batch_size_count) of ``model`` on /metrics."""
        text = self.http.get("/metrics").raise_for_status().text
        totals = {"segserve_batch_size_sum": 0.0, "segserve_batch_size_count": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in totals and sample.labels.get("model") == model:
                    totals[sample.name] += sample.value
        return totals["segserve_batch_size_sum"], totals["segserve_batch_size_count"]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
