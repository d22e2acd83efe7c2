"""The inspection history in-process, over an Edge with a stand-in predictor: Segment answers kept and read back
over gRPC (a real grpc.aio server) and HTTP (the service's routes), tokens, bad input, history off, and the
writer's promises: never in the way of an answer (a slow or down database, a full queue), failures counted and
retried (a real PostgreSQL server stopped and started again), nothing dropped uncounted, and what is kept
surviving a restart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import cv2
import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from segserve.auth import TokenAuth
from segserve.edge import Edge
from segserve.errors import NotReady
from segserve.history import History, Query
from segserve.history.store import HistoryStore
from segserve.history.writer import HistoryCounters, HistoryWriter
from segserve.http_api import build_app
from segserve.predictor import from_probabilities, pack
from segserve.servicer import create_server
from segserve.settings import Settings
from segserve.telemetry import get_telemetry
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.test_history_store import T0, postgres, record  # noqa: F401 (postgres: a fixture)
from tests.two_models import two_model_settings

MODELS = {name: {"version": "v1", "input_size": 32, "metadata": {}} for name in ("deeplabv3plus", "unet")}
FAST = (0.05, 0.2)  # the writer's pauses between attempts, in seconds


def photo(seed: int = 0, width: int = 640, height: int = 360) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".png", rgb)[1].tobytes()


def banded(share: float):
    """A predictor whose answer is corrosion on the left ``share`` of the image and asset elsewhere."""

    async def predict(name: str, batch: np.ndarray) -> np.ndarray:
        probs = np.zeros((*batch.shape[:3], 3), np.float32)
        split = int(round(share * batch.shape[2]))
        probs[:, :, :split, 0] = 1.0
        probs[:, :, split:, 1] = 1.0
        return pack(from_probabilities(probs))

    return predict


def history_at(tmp_path, store: HistoryStore | None = None, **writer) -> History:
    store = store or HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    options = {"pauses": FAST, "counters": HistoryCounters.from_telemetry(get_telemetry()), **writer}
    history = History(store, HistoryWriter(store, **options))
    history.start()
    assert history.writer.wait_ready(30)
    return history


def edge_for(history: History | None, predict=None, auth: TokenAuth | None = None, settings=None) -> Edge:
    edge = Edge(settings or two_model_settings(), predict or banded(0.25), auth, history=history)
    edge.serve(MODELS)
    return edge


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def http_client(edge: Edge) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(lambda: edge)), base_url="http://test")


# --- both transports ------------------------------------------------------------------------------------------


def test_answers_are_kept_and_read_back_over_both_transports(tmp_path):
    history = history_at(tmp_path)
    edge = edge_for(history, banded(0.25))

    async def run():
        server, port = await create_server(edge)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel, http_client(edge) as http:
                stub = pb_grpc.SegmentationServiceStub(channel)
                by_grpc = await stub.Segment(
                    pb.SegmentRequest(image=photo(1), asset_id="line-7/km-12", labels={"campaign": "spring"})
                )
                form = {"asset_id": "line-7/km-12", "labels": '{"camera": "drone-2"}', "model": "unet"}
                by_http = (await http.post("/segment", files={"image": ("p.png", photo(2))}, data=form)).json()
                assert by_grpc.inspection_id and by_http["inspection_id"]
                assert history.writer.wait_idle(30)

                listed = await stub.ListInspections(pb.ListInspectionsRequest(asset_id="line-7/km-12"))
                assert [i.inspection_id for i in listed.inspections] == [
                    by_http["inspection_id"],
                    by_grpc.inspection_id,
                ]
                newest, oldest = listed.inspections
                assert oldest.corrosion_asset_ratio == by_grpc.corrosion_asset_ratio == 0.25
                assert oldest.rust_grade == by_grpc.rust_grade and oldest.model == "deeplabv3plus"
                assert dict(oldest.labels) == {"campaign": "spring"} and oldest.transport == "grpc"
                assert newest.model == "unet" and dict(newest.labels) == {"camera": "drone-2"}
                assert list(oldest.coverage) == list(by_grpc.coverage)
                assert oldest.mask_png == b"" and not oldest.photo_kept  # a list carries no images
                assert oldest.time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - timedelta(minutes=1)
                assert len(oldest.photo_sha256) == 64 and oldest.photo_bytes == len(photo(1))

                got = await stub.GetInspection(pb.GetInspectionRequest(inspection_id=by_grpc.inspection_id))
                assert got.inspection.mask_png == by_grpc.mask_png  # the answer's mask, byte for byte
                thumbnail = cv2.imdecode(np.frombuffer(got.inspection.overlay_jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert thumbnail.shape == (180, 320, 3)  # 640x360 at most 320 a side
                assert got.inspection.photo == b""

                page = (await http.get("/inspections", params={"asset_id": "line-7/km-12"})).json()
                assert [i["inspection_id"] for i in page["inspections"]] == [
                    i.inspection_id for i in listed.inspections
                ]
                assert page["inspections"][1]["time"].endswith("Z") and page["next_page_token"] == ""
                one = (await http.get(f"/inspections/{by_http['inspection_id']}")).json()["inspection"]
                import base64

                assert base64.b64decode(one["mask_png"]) == base64.b64decode(by_http["mask_png"])
                assert one["corrosion_asset_ratio"] == by_http["corrosion_asset_ratio"]
                review = await http.get("/inspections", params={"needs_review": "false"})
                assert review.status_code == 200
        finally:
            await server.stop(None)

    try:
        asyncio.run(run())
    finally:
        history.stop()


def test_paging_over_both_transports(tmp_path):
    history = history_at(tmp_path)
    history.store.upgrade()
    history.store.write([record(T0 + timedelta(minutes=k), asset="pipe-9") for k in range(5)])
    edge = edge_for(history)

    async def run():
        server, port = await create_server(edge)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel, http_client(edge) as http:
                stub = pb_grpc.SegmentationServiceStub(channel)
                ids, token = [], ""
                while True:
                    page = await stub.ListInspections(
                        pb.ListInspectionsRequest(asset_id="pipe-9", page_size=2, page_token=token)
                    )
                    ids += [i.inspection_id for i in page.inspections]
                    token = page.next_page_token
                    if not token:
                        break
                http_ids, token = [], ""
                while True:
                    params = {"asset_id": "pipe-9", "page_size": "2", **({"page_token": token} if token else {})}
                    page = (await http.get("/inspections", params=params)).json()
                    http_ids += [i["inspection_id"] for i in page["inspections"]]
                    token = page["next_page_token"]
                    if not token:
                        break
                assert len(ids) == 5 and ids == http_ids and len(set(ids)) == 5
                since = pb.ListInspectionsRequest(asset_id="pipe-9")
                since.start_time.FromDatetime(T0 + timedelta(minutes=3))
                assert len((await stub.ListInspections(since)).inspections) == 2
                params = {"asset_id": "pipe-9", "start_time": (T0 + timedelta(minutes=3)).isoformat() + "Z"}
                assert len((await http.get("/inspections", params=params)).json()["inspections"]) == 2
        finally:
            await server.stop(None)

    try:
        asyncio.run(run())
    finally:
        history.stop()


def test_bad_input_and_unknown_ids_get_clear_statuses(tmp_path):
    history = history_at(tmp_path)
    edge = edge_for(history)

    async def run():
        server, port = await create_server(edge)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel, http_client(edge) as http:
                stub = pb_grpc.SegmentationServiceStub(channel)
                cases = [
                    stub.Segment(pb.SegmentRequest(image=photo(), asset_id="x" * 201)),
                    stub.Segment(pb.SegmentRequest(image=photo(), labels={str(k): "v" for k in range(33)})),
                    stub.Segment(pb.SegmentRequest(image=photo(), asset_id="pipe\n1")),
                    stub.ListInspections(pb.ListInspectionsRequest(page_size=5000)),
                    stub.ListInspections(pb.ListInspectionsRequest(page_token="garbage")),
                    stub.GetInspection(pb.GetInspectionRequest(inspection_id="../../etc/passwd")),
                ]
                for call in cases:
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await call
                    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
                unknown = "01890000-0000-7000-8000-000000000000"
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.GetInspection(pb.GetInspectionRequest(inspection_id=unknown))
                assert failed.value.code() == grpc.StatusCode.NOT_FOUND

                for path, params in [
                    ("/inspections", {"start_time": "yesterday"}),
                    ("/inspections", {"needs_review": "maybe"}),
                    ("/inspections", {"page_size": "ten"}),
                    ("/inspections/not-an-id", {}),
                ]:
                    answer = await http.get(path, params=params)
                    assert answer.status_code == 400 and answer.json()["code"] == "InvalidInput", (path, params)
                for labels in ('["a"]', "{not json", '{"a": 1}'):
                    form = {"labels": labels}
                    answer = await http.post("/segment", files={"image": ("p.png", photo())}, data=form)
                    assert answer.status_code == 400, labels
                answer = await http.get(f"/inspections/{unknown}")
                assert answer.status_code == 404 and answer.json()["code"] == "UnknownInspection"
        finally:
            await server.stop(None)

    try:
        asyncio.run(run())
        assert history.store.count() == 0  # refused calls keep nothing
    finally:
        history.stop()


def test_tokens_apply_to_the_history_too(tmp_path):
    history = history_at(tmp_path)
    edge = edge_for(history, auth=TokenAuth(["s3cret"]))

    async def run():
        server, port = await create_server(edge)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel, http_client(edge) as http:
                stub = pb_grpc.SegmentationServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.ListInspections(pb.ListInspectionsRequest())
                assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
                ok = await stub.ListInspections(
                    pb.ListInspectionsRequest(), metadata=(("authorization", "Bearer s3cret"),)
                )
                assert list(ok.inspections) == []
                assert (await http.get("/inspections")).status_code == 401
                assert (await http.get("/inspections/01890000-0000-7000-8000-000000000000")).status_code == 401
                headers = {"authorization": "Bearer s3cret"}
                assert (await http.get("/inspections", headers=headers)).status_code == 200
        finally:
            await server.stop(None)

    try:
        asyncio.run(run())
    finally:
        history.stop()


def test_history_off_keeps_nothing_and_says_so():
    edge = edge_for(None)

    async def run():
        answer = await edge.segment("grpc", None, photo(), asset_id="pipe-1")
        assert answer["inspection_id"] == "" and answer["corrosion_asset_ratio"] == 0.25
        with pytest.raises(NotReady, match="SEGSERVE_HISTORY=off"):
            await edge.list_inspections("grpc", None)
        async with http_client(edge) as http:
            answer = await http.get("/inspections/01890000-0000-7000-8000-000000000000")
            assert answer.status_code == 503

    asyncio.run(run())
    assert History.from_settings(Settings(history=False)) is None


# --- never in the way of an answer ----------------------------------------------------------------------------


class FlakyStore:
    """A HistoryStore whose writes fail while ``down`` is set, or take ``delay`` seconds."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.down = False
        self.delay = 0.0
        self.description = "a flaky store"

    def upgrade(self) -> None:
        self.store.upgrade()

    def write(self, records) -> None:
        time.sleep(self.delay)
        if self.down:
            from sqlalchemy.exc import OperationalError

            raise OperationalError("INSERT", {}, ConnectionRefusedError("the database is down"))
        self.store.write(records)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_slow_database_does_not_slow_the_answers(tmp_path):
    flaky = FlakyStore(HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}"))
    flaky.delay = 3.0
    history = history_at(tmp_path, store=flaky)
    edge = edge_for(history)

    async def run():
        started = time.perf_counter()
        answers = [await edge.segment("http", None, photo(k), asset_id="pipe-1") for k in range(3)]
        return answers, time.perf_counter() - started

    try:
        answers, seconds = asyncio.run(run())
        assert seconds < 2.0, f"three answers took {seconds:.1f} s behind a database taking 3 s a write"
        assert all(a["inspection_id"] for a in answers)
        assert history.writer.wait_idle(30)
        assert flaky.count() == 3
    finally:
        history.stop()


def test_a_full_queue_serves_the_answer_and_counts_the_drop(tmp_path):
    flaky = FlakyStore(HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}"))
    flaky.delay = 2.0
    history = history_at(tmp_path, store=flaky, queue_size=1)
    edge = edge_for(history)
    before = metric("segserve_history_records_dropped_total", reason="queue_full")

    async def run():
        return [await edge.segment("grpc", None, photo(k)) for k in range(4)]

    try:
        answers = asyncio.run(run())
        assert all(a["corrosion_asset_ratio"] == 0.25 for a in answers)
        kept = [a["inspection_id"] for a in answers if a["inspection_id"]]
        dropped = metric("segserve_history_records_dropped_total", reason="queue_full") - before
        assert 1 <= len(kept) <= 2 and dropped == 4 - len(kept)
        assert history.writer.wait_idle(30)
        assert flaky.count() == len(kept)
    finally:
        history.stop()


def test_a_database_down_is_counted_and_its_records_retried_once_it_is_back(tmp_path):
    flaky = FlakyStore(HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}"))
    flaky.upgrade()
    flaky.down = True
    history = history_at(tmp_path, store=flaky, max_attempts=1000)
    edge = edge_for(history)
    failures = metric("segserve_history_write_failures_total")
    written = metric("segserve_history_records_written_total")
    try:
        answers = asyncio.run(edge.segment("grpc", None, photo(5), asset_id="pipe-1"))
        assert answers["inspection_id"]
        deadline = time.monotonic() + 10
        while metric("segserve_history_write_failures_total") - failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric("segserve_history_write_failures_total") - failures >= 3
        assert flaky.count() == 0
        flaky.down = False
        assert history.writer.wait_idle(30)
        assert flaky.count() == 1 and metric("segserve_history_records_written_total") - written == 1
    finally:
        history.stop()


def test_retries_are_bounded_then_counted_as_dropped(tmp_path):
    flaky = FlakyStore(HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}"))
    flaky.upgrade()
    flaky.down = True
    history = history_at(tmp_path, store=flaky, max_attempts=3)
    before = metric("segserve_history_records_dropped_total", reason="retries_exhausted")
    try:
        assert asyncio.run(edge_for(history).segment("grpc", None, photo(6)))["inspection_id"]
        assert history.writer.wait_idle(30)
        assert metric("segserve_history_records_dropped_total", reason="retries_exhausted") - before == 1
        flaky.down = False
        assert flaky.count() == 0
    finally:
        history.stop()


def test_shutdown_writes_what_is_queued_and_counts_what_it_cannot(tmp_path):
    flaky = FlakyStore(HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}"))
    flaky.upgrade()
    flaky.down = True
    history = history_at(tmp_path, store=flaky, max_attempts=1000)
    before = metric("segserve_history_records_dropped_total", reason="shutdown")
    asyncio.run(edge_for(history).segment("grpc", None, photo(7)))
    started = time.monotonic()
    history.stop(timeout=0.5)
    assert time.monotonic() - started < 3
    assert metric("segserve_history_records_dropped_total", reason="shutdown") - before == 1


def test_photos_are_kept_only_when_asked(tmp_path):
    for keep in (False, True):
        history = history_at(tmp_path / str(keep), keep_photos=keep)
        try:
            image = photo(8)
            answer = asyncio.run(edge_for(history).segment("grpc", None, image))
            assert history.writer.wait_idle(30)
            got = history.get(answer["inspection_id"])["inspection"]
            assert got["photo_kept"] is keep and got["photo"] == (image if keep else b"")
        finally:
            history.stop()


def test_what_is_kept_survives_a_restart_and_retention_applies(tmp_path):
    history = history_at(tmp_path)
    old = record(datetime.now(UTC).replace(tzinfo=None) - timedelta(days=40), asset="pipe-1")
    history.store.upgrade()
    history.store.write([old])
    answer = asyncio.run(edge_for(history).segment("http", None, photo(9), asset_id="pipe-1"))
    history.stop()

    again = history_at(tmp_path)
    try:
        assert again.get(answer["inspection_id"])["inspection"]["mask_png"] == answer["mask_png"]
        assert again.store.count() == 2
    finally:
        again.stop()

    expiring = history_at(tmp_path, retention_days=30)
    try:
        deadline = time.monotonic() + 10
        while expiring.store.count() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        page = expiring.list(Query.parse(asset_id="pipe-1"))
        assert [i["inspection_id"] for i in page["inspections"]] == [answer["inspection_id"]]
    finally:
        expiring.stop()


# --- a real PostgreSQL server, down and back ------------------------------------------------------------------


@pytest.mark.slow
def test_postgresql_down_then_back(request):
    """Answers are served while the server is stopped, the failures are counted, and the queued records are written
    once it is started again."""
    server = request.getfixturevalue("postgres")
    store = HistoryStore(server.new_database(), connect_timeout=2)
    history = history_at(None, store=store, max_attempts=1000)
    edge = edge_for(history)
    failures = metric("segserve_history_write_failures_total")
    try:
        first = asyncio.run(edge.segment("grpc", None, photo(10), asset_id="pipe-pg"))
        assert history.writer.wait_idle(30) and store.count() == 1
        server.stop()
        try:
            started = time.perf_counter()
            answers = [asyncio.run(edge.segment("http", None, photo(k), asset_id="pipe-pg")) for k in (11, 12)]
            assert time.perf_counter() - started < 5 and all(a["inspection_id"] for a in answers)
            deadline = time.monotonic() + 20
            while metric("segserve_history_write_failures_total") == failures and time.monotonic() < deadline:
                time.sleep(0.1)
            assert metric("segserve_history_write_failures_total") > failures
            with pytest.raises(NotReady):
                history.get(first["inspection_id"])
        finally:
            server.start()
        assert history.writer.wait_idle(60)
        page = history.list(Query.parse(asset_id="pipe-pg"))
        assert {i["inspection_id"] for i in page["inspections"]} == {first["inspection_id"]} | {
            a["inspection_id"] for a in answers
        }
    finally:
        history.stop()


def test_the_request_path_only_queues_the_answer(tmp_path):
    """With the writer's thread not started, an answer is still complete and carries its id: the request path
    neither touches the database nor hashes, decodes or encodes anything for the history."""
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    writer = HistoryWriter(store)
    answer = asyncio.run(edge_for(History(store, writer)).segment("grpc", None, photo(3), asset_id="pipe-1"))
    assert answer["inspection_id"] and answer["corrosion_asset_ratio"] == 0.25
    (pending,) = writer._queue
    assert pending.inspection_id == answer["inspection_id"] and pending.answer["mask_png"] is answer["mask_png"]
    assert not (tmp_path / "history.sqlite3").exists()


def test_a_campaign_tagged_by_folder_fills_the_history(tmp_path):
    """`segserve inspect --asset-from-folder` sends each photo's folder as its asset_id: the history then lists the
    campaign's photos by asset."""
    import threading

    from segserve import inspection
    from segserve.client import Connection

    for folder, seeds in (("line-7", (1, 2)), ("line-9", (3,))):
        for seed in seeds:
            (tmp_path / "site-a" / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / "site-a" / folder / f"{seed}.png").write_bytes(photo(seed, 64, 48))
    history = history_at(tmp_path)
    edge = edge_for(history)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, port = asyncio.run_coroutine_threadsafe(create_server(edge), loop).result(30)
    try:
        options = inspection.Options(
            paths=[str(tmp_path / "site-a")],
            out=tmp_path / "out",
            asset_from_folder=True,
            history_url="http://inspect.example:3000",
        )
        options.out.mkdir()
        found = inspection.discover(options.paths, options.out)
        outcome = inspection.Inspection(options, Connection(f"127.0.0.1:{port}"), log=lambda text: None).run(found)
        assert outcome.status == 0 and outcome.inspected == 3
        assert history.writer.wait_idle(30)
        rows = inspection.read_rows(options.out)
        report = (options.out / "report.html").read_text()
        for asset, count in (("site-a/line-7", 2), ("site-a/line-9", 1)):
            kept = history.list(Query.parse(asset_id=asset))["inspections"]
            assert len(kept) == count, asset
            # results.csv names each photo's asset and its inspection in the history, and the report links the
            # asset to its trend on the server's history page
            listed = {r["inspection_id"] for r in rows.values() if r["asset_id"] == asset}
            assert listed == {k["inspection_id"] for k in kept}, asset
            assert f"http://inspect.example:3000/ui/history?asset_id={asset.replace('/', '%2F')}" in report
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        history.stop()
