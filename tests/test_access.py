"""Closed to strangers, on the real served stack: TLS on both transports, mutual TLS on gRPC, bearer tokens,
/metrics behind a token, and probes left open."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.certificates import Authority
from tests.servers import LiveServer, start_server, stop_server

pytestmark = pytest.mark.slow
TOKEN = "field-devices-2026"
GOOD = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority(folder, "plant-ca"), Authority(folder, "other-ca")
    return {
        "ca": ca.pem,
        "server": ca.issue("segserve", server=True),
        "client": ca.issue("frontend", server=False),
        "stranger": stranger.issue("stranger", server=False),
    }


def secure_channel(server: LiveServer, pki: dict, client: str | None) -> grpc.Channel:
    pem = pki[client] if client else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].cert,
        private_key=pem.key if pem else None,
        certificate_chain=pem.cert if pem else None,
    )
    return grpc.secure_channel(server.grpc_target, credentials)


@pytest.fixture(scope="module")
def secured(tiny_store: Path, pki: dict, tmp_path_factory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("secured") / "serve.log"
    server = start_server(
        tiny_store,
        log,
        tls_cert_file=pki["server"].cert_path,
        tls_key_file=pki["server"].key_path,
        tls_client_ca_file=pki["ca"].cert_path,
        auth_tokens=TOKEN,
        metrics_public="false",
    )
    server.http_url = server.http_url.replace("http://", "https://")
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{server.log()[-4000:]}")
            try:
                with secure_channel(server, pki, "client") as channel:
                    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"secured server not serving:\n{server.log()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        stop_server(server)


def photo() -> bytes:
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def test_grpc_refuses_a_plaintext_client(secured):
    with grpc.insecure_channel(secured.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.SegmentationServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=GOOD, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("client", [None, "stranger"], ids=["no-client-certificate", "certificate-of-another-ca"])
def test_grpc_refuses_a_client_without_a_certificate_of_the_plant_ca(secured, pki, client):
    with secure_channel(secured, pki, client) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.SegmentationServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=GOOD, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_with_the_plant_certificate_needs_a_token_and_health_stays_open(secured, pki):
    with secure_channel(secured, pki, "client") as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Segment(pb.SegmentRequest(image=photo()), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.Segment(pb.SegmentRequest(image=photo()), metadata=GOOD, timeout=30).width == 80
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_http_is_tls_only_and_needs_a_token_but_probes_stay_open(secured, pki):
    with pytest.raises(httpx.HTTPError):
        httpx.get(secured.http_url.replace("https://", "http://") + "/livez", timeout=5)
    with httpx.Client(base_url=secured.http_url, verify=str(pki["ca"].cert_path), timeout=60) as http:
        files = {"image": ("p.png", photo(), "image/png")}
        refused = http.post("/segment", files=files)
        assert refused.status_code == 401 and refused.json()["code"] == "Unauthenticated"
        assert http.get("/models").status_code == 401
        answer = http.post("/segment", files=files, headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.json()["width"] == 80
        assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
        assert http.get("/metrics").status_code == 401
        metrics = http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert metrics.status_code == 200 and "segserve_requests_total" in metrics.text
