"""The screenshot of the /ui page in docs/api.md, taken in headless Chromium from a running server.

python docs/make_screenshot.py --url http://127.0.0.1:3000 --image PHOTO [--model ensemble] [--out docs/ui.png]
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", default="ensemble")
    parser.add_argument("--out", default="docs/ui.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Chromium is not installed: make browser-tools")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 820})
        page.goto(f"{args.url}/ui")
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")
        page.select_option("#model", args.model)
        page.set_input_files("#photo", args.image)
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
