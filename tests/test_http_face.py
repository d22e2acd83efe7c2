"""The HTTP face: the OpenAPI spec describes this service, and the page at /ui works in a real headless
Chromium (driven by Playwright) and shows what the API answers for the same photo."""

from __future__ import annotations

import base64
import csv
import io
import shutil
import subprocess
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from segserve import inspection
from segserve.architectures import DEFAULT, SHIPPED
from segserve.errors import STATUSES
from segserve.metrics import rust_grade
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


def shown(percent: float, digits: int) -> set[str]:
    """How a percentage may read on the page: rounded to ``digits``, either way when it lies on a half (the page's
    JavaScript and Python round the same binary value's ties differently)."""
    return {f"{percent + nudge:.{digits}f}%" for nudge in (-1e-9, 0.0, 1e-9)}


def test_openapi_spec_describes_this_service(live_server):
    spec = httpx.get(f"{live_server.http_url}/docs.json", timeout=30).json()
    assert spec["info"]["title"] == "segserve" and spec["info"]["version"] == package_version() != "None"
    assert "corrosion" in spec["info"]["description"] and "created with BentoML" not in spec["info"]["description"]
    paths = spec["paths"]
    assert {"/segment", "/evaluate", "/models", "/ui", "/livez", "/readyz", "/metrics"} <= set(paths)
    assert {"/inspections", "/inspections/{inspection_id}", "/ui/history"} <= set(paths)
    listing = paths["/inspections"]["get"]
    assert [p["name"] for p in listing["parameters"]] == [
        "asset_id",
        "start_time",
        "end_time",
        "needs_review",
        "page_size",
        "page_token",
    ]
    assert {"200", "400", "401", "503"} <= set(listing["responses"])
    assert {"200", "400", "404"} <= set(paths["/inspections/{inspection_id}"]["get"]["responses"])
    form = paths["/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"asset_id", "labels"} <= set(form)
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


def photo_file(tmp_path: Path, name: str = "pipe.png", shift: int = 0) -> Path:
    y, x = np.mgrid[0:180, 0:240]
    image = np.dstack([(x + y + shift) % 256, (2 * x) % 256, (3 * y + shift) % 256]).astype(np.uint8)
    path = tmp_path / name
    cv2.imwrite(str(path), image)
    return path


# What GET /models says of unet's review flag in the page test (the tiny models carry no calibration).
CALIBRATION = {
    "split": "val",
    "n_images": 22,
    "flagged": 8,
    "unflagged": 14,
    "ratio_mae": 0.1832,
    "flagged_ratio_mae": 0.3289,
    "unflagged_ratio_mae": 0.0999,
    "flagged_share_of_ratio_error": 0.653,
    "held_out": {"flagged": 5, "unflagged": 17, "flagged_share_of_ratio_error": 0.2742},
    "large_error": {"threshold": 0.1, "photos": 9, "flagged": 6, "held_out_flagged": 3},
}


def test_the_page_shows_what_the_api_answers(live_server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    paths = [photo_file(tmp_path), photo_file(tmp_path, "second.jpg", 60)]
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    answers = []
    for path in paths:
        files = {"image": (path.name, path.read_bytes(), "image/png")}
        data = {"model": "unet", "include_overlay": "true"}
        answers.append(httpx.post(f"{live_server.http_url}/segment", files=files, data=data, timeout=60).json())
    api = answers[0]
    listed = httpx.get(f"{live_server.http_url}/models", timeout=30).json()["models"]
    assert all(m["review_calibration"] == {} for m in listed)  # the tiny models carry no calibration

    def with_calibration(route):
        response = route.fetch()
        body = response.json()
        for model in body["models"]:
            model["review_calibration"] = CALIBRATION if model["name"] == "unet" else {}
        route.fulfill(response=response, json=body)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/models", with_calibration)
            page.goto(f"{live_server.http_url}/ui")
            page.wait_for_function(f"document.querySelectorAll('#model option').length === {len(SHIPPED) + 1}")
            assert page.locator("#model option").all_inner_texts() == [
                *(f"{n} (default)" if n == DEFAULT else n for n in sorted(SHIPPED)),
                "ensemble",
            ]
            assert page.inner_text("#engines") == "Served: " + "; ".join(
                f"{m['name']} {m['version']} on {m['backend']} {m['precision']}" for m in listed if m["backend"]
            )
            page.select_option("#model", "unet")
            page.set_input_files("#photo", [str(paths[0]), str(text), str(paths[1])])
            page.click("#submit")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=90_000)
            assert page.inner_text("#status") == (
                f"Done: 2 segmented, {sum(a['needs_review'] for a in answers)} need review, 1 not segmented."
            )
            # the results table: one row a photo, the failure named
            for index, answer in ((0, answers[0]), (2, answers[1])):
                row = page.locator(f"#row-{index}")
                corrosion = next(c for c in answer["coverage"] if c["name"] == "corrosion")
                assert row.locator(".ratio").inner_text() in shown(100 * answer["corrosion_asset_ratio"], 2)
                assert row.locator(".image-share").inner_text() in shown(100 * corrosion["fraction"], 2)
                assert row.locator(".grade").inner_text() == str(answer["rust_grade"])
                assert row.locator(".confidence").inner_text() in shown(100 * answer["mean_confidence"], 1)
            assert page.inner_text("#row-1").startswith("notes.txt\tnot segmented: image is not")

            # the first photo in detail, both shares labelled apart, the grade with its scale
            page.wait_for_selector("#result:not([hidden])")
            assert page.inner_text("#ratio") in shown(100 * api["corrosion_asset_ratio"], 2)
            corrosion = next(c for c in api["coverage"] if c["name"] == "corrosion")
            assert page.inner_text("#image-share") in shown(100 * corrosion["fraction"], 2)
            summary = page.inner_text(".summary")
            assert "Corroded share of the asset" in summary and "Corrosion share of the image" in summary
            assert "corrosion ÷ (corrosion + asset)" in summary and "corrosion ÷ all pixels" in summary
            assert page.inner_text("#grade") == str(api["rust_grade"])
            assert "10 = no rust" in summary and "0 = more than half rusted" in summary
            assert page.inner_text("#confidence") in shown(100 * api["mean_confidence"], 1)
            for c in api["coverage"]:
                row = page.locator(f"#coverage-{c['name']}")
                assert row.locator(".pixels").inner_text() == str(c["pixels"])
                assert row.locator(".fraction").inner_text() in shown(100 * c["fraction"], 2)
            review = page.inner_text("#review")
            assert review.startswith("needs review") == api["needs_review"]
            meaning = page.inner_text("#review-meaning")
            assert "22 val photos" in meaning and "65%" in meaning and "27% on photos held out" in meaning
            assert "flagged 6 of the 9 answers whose corroded share was off by more than 10 points" in meaning
            if not api["needs_review"]:
                assert "Not flagged does not mean right" in meaning and "10.0 points on average" in meaning
            no_calibration = page.evaluate("reviewMeaning({model: 'deeplabv3plus', needs_review: false})")
            assert "carries no calibration" in no_calibration
            assert page.locator("#agreement-box").is_hidden()
            # the images are shown and the mask downloads as the API's PNG
            assert page.evaluate("document.getElementById('overlay').naturalWidth") == 240
            assert page.evaluate("document.getElementById('original').naturalWidth") == 240
            href = page.get_attribute("#download-mask", "href")
            assert base64.b64decode(href.split(",", 1)[1]) == base64.b64decode(api["mask_png"])

            # every grade's meaning agrees with the grading the server does (segserve.metrics.rust_grade)
            for grade in range(11):
                words = page.evaluate(f"gradeMeaning({grade})")
                if grade in (0, 10):
                    assert words.startswith(f"{grade}: ") and rust_grade(0.5001 if grade == 0 else 0.0) == grade
                    continue
                low, high = (float(x) / 100 for x in words.split(": ")[1].split("%")[0].split("-"))
                assert rust_grade(high) == grade and rust_grade(low) == grade + 1 and rust_grade(low + 1e-9) == grade

            # the CSV download holds the table's photos with the API's numbers, in results.csv's columns
            with page.expect_download() as download:
                page.click("#download-csv")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert [r["name"] for r in rows] == ["pipe.png", "notes.txt", "second.jpg"]
            assert set(rows[0]) <= set(inspection.COLUMNS)
            assert rows[1]["status"] == "refused" and rows[1]["error_code"] == "InvalidInput"
            for row, answer in ((rows[0], answers[0]), (rows[2], answers[1])):
                assert row["status"] == "ok" and float(row["corrosion_asset_ratio"]) == answer["corrosion_asset_ratio"]
                assert int(row["rust_grade"]) == answer["rust_grade"]
                assert row["needs_review"] == str(answer["needs_review"]).lower()
                corrosion = next(c for c in answer["coverage"] if c["name"] == "corrosion")
                assert float(row["corrosion_fraction"]) == corrosion["fraction"]
            page.click("#row-2")  # a row shows its photo
            assert page.inner_text("#result-name") == "second.jpg"
            assert page.inner_text("#ratio") in shown(100 * answers[1]["corrosion_asset_ratio"], 2)
            page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
