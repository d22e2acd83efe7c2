"""The HTTP face: the OpenAPI spec describes this service, and the page at /ui works in a real headless
Chromium (driven by Playwright) and shows what the API answers for the same photo."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from segserve.errors import STATUSES
from segserve.openapi import package_version
from tests.servers import ROOT

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_openapi_spec_describes_this_service(live_server):
    spec = httpx.get(f"{live_server.http_url}/docs.json", timeout=30).json()
    assert spec["info"]["title"] == "segserve" and spec["info"]["version"] == package_version() != "None"
    assert "corrosion" in spec["info"]["description"] and "created with BentoML" not in spec["info"]["description"]
    paths = spec["paths"]
    assert {"/segment", "/evaluate", "/models", "/ui", "/livez", "/readyz", "/metrics"} <= set(paths)
    assert "get" in paths["/models"] and "post" in paths["/segment"]
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "code"]
    assert set(error["properties"]["code"]["enum"]) == {kind.__name__ for kind in STATUSES}
    responses = paths["/segment"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429", "503"} <= set(responses)
    assert responses["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert not {"InvalidArgument", "NotFound", "InternalServerError"} & set(spec["components"]["schemas"])
    # the error body the spec promises is the one the route sends
    r = httpx.post(f"{live_server.http_url}/segment", files={"image": ("x", b"")}, timeout=30)
    assert r.status_code == 400 and set(r.json()) == {"error", "code"}
    docs = httpx.get(f"{live_server.http_url}/docs", timeout=30, follow_redirects=False)
    assert docs.status_code in (302, 307) and docs.headers["location"].endswith("/")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium; `make browser-tools` installs it when missing, else the test fails saying how."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["make", "browser-tools"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("Chromium is not installed and `make browser-tools` could not install it: apt-get install chromium")
    return found


def photo_file(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:180, 0:240]
    image = np.dstack([(x + y) % 256, (2 * x) % 256, (3 * y) % 256]).astype(np.uint8)
    path = tmp_path / "pipe.png"
    cv2.imwrite(str(path), image)
    return path


def test_the_page_shows_what_the_api_answers(live_server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    path = photo_file(tmp_path)
    files = {"image": ("pipe.png", path.read_bytes(), "image/png")}
    api = httpx.post(f"{live_server.http_url}/segment", files=files, data={"model": "unet"}, timeout=60).json()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{live_server.http_url}/ui")
            page.wait_for_function("document.querySelectorAll('#model option').length === 3")
            assert page.locator("#model option").all_inner_texts() == ["deeplabv3plus (default)", "unet", "ensemble"]
            listed = httpx.get(f"{live_server.http_url}/models", timeout=30).json()["models"]
            assert page.inner_text("#engines") == "Served: " + "; ".join(
                f"{m['name']} {m['version']} on {m['backend']} {m['precision']}" for m in listed if m["backend"]
            )
            page.select_option("#model", "unet")
            page.set_input_files("#photo", str(path))
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert page.inner_text("#ratio") == f"{100 * api['corrosion_asset_ratio']:.2f}%"
            assert page.inner_text("#grade") == str(api["rust_grade"])
            assert page.inner_text("#confidence") == f"{100 * api['mean_confidence']:.1f}%"
            for c in api["coverage"]:
                row = page.locator(f"#coverage-{c['name']}")
                assert row.locator(".pixels").inner_text() == str(c["pixels"])
                assert row.locator(".fraction").inner_text() == f"{100 * c['fraction']:.2f}%"
            review = page.inner_text("#review")
            assert review.startswith("needs review") == api["needs_review"]
            assert page.locator("#agreement-box").is_hidden()
            # the images are shown and the mask downloads as the API's PNG
            assert page.evaluate("document.getElementById('overlay').naturalWidth") == 240
            assert page.evaluate("document.getElementById('original').naturalWidth") == 240
            href = page.get_attribute("#download-mask", "href")
            assert base64.b64decode(href.split(",", 1)[1]) == base64.b64decode(api["mask_png"])
            page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
