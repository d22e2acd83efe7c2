"""The inspection history on a real `bentoml serve` with its default settings (history on, SQLite under the data
directory): Segment calls with an asset id over both transports are listed for that asset with the same corroded
share and grade, GetInspection returns the mask the answer carried, and all of it is still there after the server
restarts."""

from __future__ import annotations

import time
import uuid

import grpc
import httpx
import pytest

from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import start_server, stop_server, wait_until_serving
from tests.test_prometheus import photo_png

pytestmark = pytest.mark.slow


def listed(server, asset: str, expected: int, timeout: float = 60) -> list[pb.Inspection]:
    """ListInspections for ``asset`` once it lists ``expected`` inspections (the writer works off the request path)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        while True:
            page = stub.ListInspections(pb.ListInspectionsRequest(asset_id=asset), timeout=30)
            if len(page.inspections) >= expected or time.monotonic() > deadline:
                return list(page.inspections)
            time.sleep(0.5)


def test_history_with_the_defaults_survives_a_restart(tiny_store, tmp_path):
    asset = f"line-7/km-{uuid.uuid4().hex[:8]}"
    server = start_server(tiny_store, tmp_path / "first.log")
    answers: dict[str, tuple[float, int, bytes]] = {}
    try:
        wait_until_serving(server)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)
            for model, size in (("deeplabv3plus", (96, 64)), ("unet", (80, 60))):
                answer = stub.Segment(
                    pb.SegmentRequest(image=photo_png(*size), model=model, asset_id=asset, labels={"run": "bar"}),
                    timeout=60,
                )
                answers[answer.inspection_id] = (answer.corrosion_asset_ratio, answer.rust_grade, answer.mask_png)
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            form = {"asset_id": asset, "labels": '{"run": "bar"}'}
            body = http.post("/segment", files={"image": ("p.png", photo_png(64, 48))}, data=form).json()
            import base64

            answers[body["inspection_id"]] = (
                body["corrosion_asset_ratio"],
                body["rust_grade"],
                base64.b64decode(body["mask_png"]),
            )
        assert all(answers) and len(answers) == 3

        first = listed(server, asset, 3)
        assert {i.inspection_id for i in first} == set(answers)
        for inspection in first:
            ratio, grade, _ = answers[inspection.inspection_id]
            assert (inspection.corrosion_asset_ratio, inspection.rust_grade) == (ratio, grade)
            assert dict(inspection.labels) == {"run": "bar"}
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            metrics = http.get("/metrics").text
            assert "segserve_history_records_written_total" in metrics
            assert http.get("/ui/history").status_code == 200
        # the default store: SQLite under $BENTOML_HOME/segserve/data
        assert (tiny_store / "segserve" / "data" / "history.sqlite3").exists()
    finally:
        stop_server(server)

    again = start_server(tiny_store, tmp_path / "second.log")
    try:
        wait_until_serving(again)
        after = listed(again, asset, 3, timeout=5)
        assert [i.inspection_id for i in after] == [i.inspection_id for i in first]  # newest first, all there
        with grpc.insecure_channel(again.grpc_target) as channel:
            stub = pb_grpc.SegmentationServiceStub(channel)
            for inspection_id, (ratio, grade, mask) in answers.items():
                got = stub.GetInspection(pb.GetInspectionRequest(inspection_id=inspection_id), timeout=30).inspection
                assert got.mask_png == mask and got.corrosion_asset_ratio == ratio and got.rust_grade == grade
                assert got.overlay_jpeg.startswith(b"\xff\xd8")
        with httpx.Client(base_url=again.http_url, timeout=60) as http:
            page = http.get("/inspections", params={"asset_id": asset}).json()
            assert [i["inspection_id"] for i in page["inspections"]] == [i.inspection_id for i in first]
    finally:
        stop_server(again)
