"""The HTTP transport in-process (the service's routes from segserve.http_api.build_app over an Edge, no
BentoML): statuses, forms, tokens, retry hints, the metrics of every call, and failures inside the server."""

from __future__ import annotations

import logging

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from segserve.auth import TokenAuth
from segserve.edge import Edge
from segserve.http_api import ErrorAnswer, MetricsGuard, build_app
from segserve.predictor import from_probabilities, pack
from segserve.settings import Settings
from tests.two_models import two_model_settings

MODELS = {name: {"version": "v1", "input_size": 32, "metadata": {}} for name in ("deeplabv3plus", "unet")}
IMAGE = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))[1].tobytes()


async def corrosion_everywhere(name: str, batch: np.ndarray) -> np.ndarray:
    probs = np.zeros((*batch.shape[:3], 3), np.float32)
    probs[..., 0] = 1.0
    return pack(from_probabilities(probs))


def edge_for(predict, models=MODELS, settings: Settings | None = None, auth: TokenAuth | None = None) -> Edge:
    edge = Edge(settings or two_model_settings(), predict, auth)
    edge.serve(models)
    return edge


def app_for(edge: Edge | None) -> ASGIApp:
    """The service's HTTP routes over ``edge``, behind the /metrics guard, with a stand-in /metrics."""

    async def metrics(request):
        return PlainTextResponse("segserve_requests_total 1\n")

    app = build_app(lambda: edge)
    app.router.routes.append(Route("/metrics", metrics))
    return MetricsGuard(app, lambda: edge)


def client(edge: Edge | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(edge)), base_url="http://test")


def count(code: str, model: str = "deeplabv3plus") -> float:
    labels = {"transport": "http", "method": "Segment", "model": model, "code": code}
    return REGISTRY.get_sample_value("segserve_requests_total", labels) or 0.0


async def post(edge: Edge, headers: dict[str, str] | None = None, model: str = "") -> httpx.Response:
    async with client(edge) as c:
        return await c.post("/segment", files={"image": ("p.png", IMAGE)}, data={"model": model}, headers=headers)


@pytest.mark.anyio
async def test_answer_and_its_count():
    before = count("200")
    r = await post(edge_for(corrosion_everywhere))
    assert r.status_code == 200 and r.json()["corrosion_asset_ratio"] == 1.0
    assert count("200") - before == 1


@pytest.mark.anyio
async def test_loading_models_answer_503_with_a_retry_hint_and_are_counted():
    before = count("503")
    r = await post(edge_for(corrosion_everywhere, {}))
    assert r.status_code == 503 and r.json()["code"] == "NotReady"
    assert r.headers["retry-after"] == "2"
    assert count("503") - before == 1


@pytest.mark.anyio
async def test_a_failure_inside_the_server_is_a_500_with_a_request_id_and_no_stack_trace(caplog):
    async def broken(name, batch):
        return np.zeros((1, 2), np.uint8)  # not what the model service answers: unpacking fails

    before = count("500")
    with caplog.at_level(logging.ERROR, logger="segserve"):
        r = await post(edge_for(broken))
    assert r.status_code == 500 and r.json()["code"] == "Internal"
    message = r.json()["error"]
    request_id = message.split("request id ")[1].split(")")[0]
    assert "Traceback" not in message and "IndexError" not in message
    assert request_id in caplog.text and "Traceback" in caplog.text
    assert count("500") - before == 1


@pytest.mark.anyio
async def test_tokens_are_required_when_configured_and_several_are_accepted():
    edge = edge_for(corrosion_everywhere, auth=TokenAuth(["old-token", "new-token"]))
    before = count("401")
    assert (await post(edge)).status_code == 401
    assert (await post(edge, {"authorization": "Bearer wrong"})).json()["code"] == "Unauthenticated"
    assert (await post(edge, {"authorization": "Basic new-token"})).status_code == 401
    assert count("401") - before == 3
    for token in ("old-token", "new-token"):
        assert (await post(edge, {"authorization": f"Bearer {token}"})).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("public", [True, False])
async def test_metrics_open_or_behind_a_token(public):
    settings = Settings(metrics_public=public)
    edge = edge_for(corrosion_everywhere, settings=settings, auth=TokenAuth(["t0k"]))
    async with client(edge) as c:
        assert (await c.get("/metrics")).status_code == (200 if public else 401)
        assert (await c.get("/metrics", headers={"authorization": "Bearer t0k"})).status_code == 200


def test_tokens_from_the_environment_and_a_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# rotated 2026-11\nfile-token\n\n")
    auth = TokenAuth.from_settings(Settings(auth_tokens="env-a, env-b", auth_tokens_file=str(path)))
    for token in ("env-a", "env-b", "file-token"):
        auth.check(f"Bearer {token}")
    assert not TokenAuth.from_settings(Settings()).enabled
    with pytest.raises(ValueError, match="cannot be read"):
        TokenAuth.from_settings(Settings(auth_tokens_file=str(tmp_path / "missing")))


@pytest.mark.anyio
async def test_evaluate_and_models_routes():
    truth = cv2.imencode(".png", np.zeros((96, 128), np.uint8))[1].tobytes()  # class ids: corrosion everywhere
    async with client(edge_for(corrosion_everywhere)) as c:
        r = await c.post("/evaluate", files={"image": ("p.png", IMAGE), "ground_truth": ("t.png", truth)})
        assert r.status_code == 200 and r.json()["pixel_accuracy"] == 1.0
        listed = (await c.get("/models")).json()
        assert [m["name"] for m in listed["models"]] == ["deeplabv3plus", "unet", "ensemble"]
        page = await c.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        docs = await c.get("/docs", follow_redirects=False)
        assert docs.status_code == 307 and docs.headers["location"] == "/"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ({}, {}, "the form needs a file field 'image'"),
        ({"image": ("p.png", IMAGE)}, {"include_overlay": "maybe"}, "include_overlay must be true or false"),
        ({"image": ("p.png", b"")}, {}, "image is empty"),
        ({"image": ("p.png", IMAGE)}, {"model": "segnet"}, "unknown model 'segnet'"),
    ],
)
async def test_bad_forms_are_clear_errors(files, data, message):
    async with client(edge_for(corrosion_everywhere)) as c:
        r = await c.post("/segment", files=files or None, data=data)
    assert r.status_code in (400, 404) and message in r.json()["error"]


@pytest.mark.anyio
async def test_overlay_is_sent_only_when_asked():
    async with client(edge_for(corrosion_everywhere)) as c:
        plain = (await c.post("/segment", files={"image": ("p.png", IMAGE)})).json()
        with_overlay = (
            await c.post("/segment", files={"image": ("p.png", IMAGE)}, data={"include_overlay": "true"})
        ).json()
    assert plain["overlay_jpeg"] == "" and with_overlay["overlay_jpeg"].startswith("/9j/")  # base64 of a JPEG


@pytest.mark.anyio
async def test_a_starting_service_answers_503():
    async with client(None) as c:
        r = await c.post("/segment", files={"image": ("p.png", IMAGE)})
    assert r.status_code == 503 and r.json()["code"] == "NotReady"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def failing_app(started: bool) -> ASGIApp:
    """Routes that raise (BentoML's /readyz when its check of the model service times out, a bug elsewhere);
    with ``started`` they raise after the answer began."""

    async def app(scope, receive, send):
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise TimeoutError()

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "status", "code", "message"),
    [
        ("/readyz", 503, "NotReady", "not ready: the readiness check failed (TimeoutError)"),
        ("/segment", 500, "Internal", "internal error (request id "),
    ],
)
async def test_an_escaped_exception_is_answered_at_once(path, status, code, message, caplog):
    transport = httpx.ASGITransport(app=ErrorAnswer(failing_app(started=False)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level(logging.WARNING, logger="segserve"):
            r = await http.get(path)
    assert r.status_code == status
    assert r.json()["code"] == code and r.json()["error"].startswith(message)
    assert "TimeoutError" in caplog.text


@pytest.mark.anyio
async def test_an_exception_after_the_answer_began_is_not_answered_twice():
    transport = httpx.ASGITransport(app=ErrorAnswer(failing_app(started=True)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.raises(TimeoutError):
            await http.get("/segment")
