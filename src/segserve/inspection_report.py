"""The report of ``segserve inspect``: one self-contained HTML page (``DIR/report.html``) made from the rows of
``DIR/results.csv``, so that its numbers are the CSV's.

The page holds the run's summary (photos answered, failures, the review queue, photos not yet inspected), the
distribution of the corroded share of the asset (a histogram of ten 10-point bins) and of the rust grades (a bar
chart), then the answered photos worst first (highest corroded share), the review queue on top, each with a
thumbnail of its overlay (embedded) linking to the full overlay beside the page and, for a photo sent with an
asset id, a link to that asset's trend in the server's history (``/ui/history``), then the failures and the
skipped files. Nothing is fetched from elsewhere: styles inline, images as data URIs, charts as inline SVG.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

REPORT = "report.html"
OVERLAYS, THUMBNAILS = "overlays", "thumbnails"
# A photo's status in results.csv (see segserve.inspection).
OK, REFUSED, UNANSWERED, SKIPPED = "ok", "refused", "unanswered", "skipped"
THUMBNAIL_SIDE = 360
RATIO_BINS = 10
GRADES = tuple(range(11))
# ASTM D610: the largest rusted share of each grade, 10 down to 1; grade 0 is more than half rusted.
D610_SCALE = (
    "ASTM D610 rust grade: 10 = no rust to speak of (at most 0.01% of the asset rusted), 9 &le; 0.03%, "
    "8 &le; 0.1%, 7 &le; 0.3%, 6 &le; 1%, 5 &le; 3%, 4 &le; 10%, 3 &le; 16%, 2 &le; 33%, 1 &le; 50%, "
    "0 = more than half of the asset rusted. Lower is worse."
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f6f7f9; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.cards div { background: #fff; padding: .6rem 1rem; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
.big { font-size: 1.6rem; font-weight: 600; display: block; }
figure { background: #fff; padding: .6rem; border-radius: 8px; box-shadow: 0 1px 3px #0002; margin: 0; }
.charts { display: flex; gap: 1rem; flex-wrap: wrap; }
table { border-collapse: collapse; background: #fff; margin-top: .5rem; }
td, th { border: 1px solid #ccd; padding: .3rem .6rem; text-align: right; vertical-align: middle; }
th { background: #eef; } td.text, th.text { text-align: left; }
td img { max-width: 180px; max-height: 180px; display: block; }
.review { color: #8a5300; font-weight: 600; }
.note { font-size: .85rem; color: #445; max-width: 60rem; }
"""


def _pct(value: str, digits: int = 2) -> str:
    """A share from the CSV as a percentage, as the page shows it (``n/a`` when empty)."""
    return f"{100 * float(value):.{digits}f}%" if value not in ("", None) else "n/a"


def _reasons(value: str) -> str:
    """``REVIEW_REASON_LOW_CONFIDENCE;REVIEW_REASON_NO_ASSET`` -> ``low confidence, no asset``."""
    return ", ".join(r.removeprefix("REVIEW_REASON_").lower().replace("_", " ") for r in value.split(";") if r)


def ratio_bin(ratio: float) -> int:
    """The histogram bin (0-9, 10 points wide) of a corroded share; 1.0 falls in the last."""
    return min(RATIO_BINS - 1, int(ratio * RATIO_BINS))


def worst_first(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Answered rows, the review queue first, each part by corroded share, highest first (then by name)."""
    answered = [r for r in rows if r["status"] == OK]
    return sorted(answered, key=lambda r: (r["needs_review"] != "true", -float(r["corrosion_asset_ratio"]), r["name"]))


def _chart(chart_id: str, title: str, bars: list[tuple[str, int, dict[str, str]]], x_label: str) -> str:
    """A bar chart as inline SVG: one ``g.bar`` per bar with its ``data-*`` attributes and ``data-count``."""
    width, height, pad = 40 * len(bars) + 40, 200, 30
    top = max([count for _, count, _ in bars] + [1])
    parts = [
        f'<figure id="{chart_id}"><figcaption>{html.escape(title)}</figcaption>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 2 * pad}" role="img" '
        f'aria-label="{html.escape(title)}">',
    ]
    for i, (label, count, attrs) in enumerate(bars):
        x = 30 + 40 * i
        h = round(height * count / top)
        data = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in attrs.items())
        parts.append(
            f'<g class="bar" {data} data-count="{count}"><title>{html.escape(label)}: {count}</title>'
            f'<rect x="{x}" y="{pad + height - h}" width="30" height="{h}" fill="#c0392b"></rect>'
            f'<text x="{x + 15}" y="{pad + height - h - 4}" text-anchor="middle" font-size="11">{count}</text>'
            f'<text x="{x + 15}" y="{pad + height + 14}" text-anchor="middle" font-size="10">'
            f"{html.escape(label)}</text>"
            "</g>"
        )
    parts.append(
        f'<text x="{width / 2}" y="{height + 2 * pad - 2}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)}</text></svg></figure>"
    )
    return "".join(parts)


def ratio_histogram(rows: Sequence[dict[str, str]]) -> str:
    """The distribution of the corroded share of the asset over the answered photos."""
    counts = [0] * RATIO_BINS
    for row in rows:
        counts[ratio_bin(float(row["corrosion_asset_ratio"]))] += 1
    bars = [
        (f"{10 * i}-{10 * (i + 1)}", n, {"low": str(i / RATIO_BINS), "high": str((i + 1) / RATIO_BINS)})
        for i, n in enumerate(counts)
    ]
    return _chart("ratio-histogram", "Corroded share of the asset", bars, "share of the asset corroded (%)")


def grade_chart(rows: Sequence[dict[str, str]]) -> str:
    """How many answered photos have each rust grade, 0 (worst) to 10."""
    counts = {g: 0 for g in GRADES}
    for row in rows:
        counts[int(row["rust_grade"])] += 1
    bars = [(str(g), counts[g], {"grade": str(g)}) for g in GRADES]
    return _chart("grade-chart", "Rust grade (ASTM D610, 0 worst, 10 best)", bars, "rust grade")


def make_thumbnail(jpeg: bytes, path: Path, width: int) -> None:
    """A small JPEG of an overlay for the report (at most THUMBNAIL_SIDE pixels a side); nothing if it cannot
    be decoded. ``width``: the overlay's width, so that a large one is decoded at a fraction of its size."""
    import cv2
    import numpy as np

    flag = cv2.IMREAD_COLOR
    for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4)):
        if width >= factor * THUMBNAIL_SIDE:
            flag = reduced
            break
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
    if image is None:
        return
    h, w = image.shape[:2]
    scale = THUMBNAIL_SIDE / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if ok:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())


def _thumbnail(out_dir: Path, row: dict[str, str]) -> str:
    """The overlay's thumbnail as a data URI (made from the overlay file when missing), or empty."""
    thumb = out_dir / THUMBNAILS / f"{row['name']}.jpg"
    overlay = out_dir / row["overlay_file"] if row.get("overlay_file") else None
    if not thumb.exists() and overlay is not None and overlay.exists():
        make_thumbnail(overlay.read_bytes(), thumb, int(row.get("width") or 0))
    if not thumb.exists():
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(thumb.read_bytes()).decode("ascii")


def trend_link(asset_id: str, history_url: str) -> str:
    """A photo's asset, linked to its trend in the server's history page when the server's address is known."""
    if not asset_id:
        return ""
    name = html.escape(asset_id)
    if not history_url:
        return f'<br><small class="asset">asset {name}</small>'
    href = html.escape(f"{history_url}/ui/history?{urllib.parse.urlencode({'asset_id': asset_id})}")
    return f'<br><small class="asset">asset <a href="{href}">{name}: its trend</a></small>'


def photo_table(table_id: str, rows: Sequence[dict[str, str]], out_dir: Path, history_url: str = "") -> str:
    """Answered photos, one row each: the overlay, the shares, the grade, the confidence, the review; a photo
    sent with an asset id links to that asset's trend at ``history_url``/ui/history."""
    head = (
        f'<table id="{table_id}"><thead><tr><th class="text">overlay</th><th class="text">photo</th>'
        "<th>corroded share of the asset</th><th>corrosion share of the image</th><th>rust grade</th>"
        '<th>mean confidence</th><th class="text">review</th></tr></thead><tbody>'
    )
    body = []
    for row in rows:
        name = html.escape(row["name"])
        src = _thumbnail(out_dir, row)
        link = html.escape(row.get("overlay_file") or f"{OVERLAYS}/{row['name']}.jpg")
        image = f'<a href="{link}"><img src="{src}" alt="overlay of {name}"></a>' if src else ""
        review = (
            f"needs review: {html.escape(_reasons(row['review_reasons']))}" if row["needs_review"] == "true" else ""
        )
        body.append(
            f'<tr class="photo" data-name="{name}"><td class="text">{image}</td>'
            f'<td class="text name"><a href="{link}">{name}</a><br><small>{html.escape(row["model"])} '
            f"{html.escape(row['model_version'])}, {row['width']}x{row['height']}</small>"
            f"{trend_link(row.get('asset_id', ''), history_url)}</td>"
            f'<td class="ratio">{_pct(row["corrosion_asset_ratio"])}</td>'
            f'<td class="image-share">{_pct(row["corrosion_fraction"])}</td>'
            f'<td class="grade">{row["rust_grade"]}</td>'
            f'<td class="confidence">{_pct(row["mean_confidence"], 1)}</td>'
            f'<td class="text review">{review}</td></tr>'
        )
    return head + "".join(body) + "</tbody></table>"


def _problem_table(table_id: str, rows: Sequence[dict[str, str]], with_code: bool) -> str:
    head = '<th class="text">photo</th>' + (
        '<th class="text">status</th><th class="text">code</th>' if with_code else ""
    )
    cells = []
    for row in rows:
        code = (
            f'<td class="text status">{row["status"]}</td><td class="text code">{html.escape(row["error_code"])}</td>'
            if with_code
            else ""
        )
        cells.append(
            f'<tr data-name="{html.escape(row["name"])}"><td class="text">{html.escape(row["name"])}</td>{code}'
            f'<td class="text error">{html.escape(row["error"])}</td></tr>'
        )
    what = "error" if with_code else "reason"
    head += f'<th class="text">{what}</th>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(cells)}</tbody></table>'


def render(rows: dict[str, dict[str, str]], out_dir: Path, left: int = 0, history_url: str = "") -> str:
    """The report page for the rows of results.csv (by name); ``left``: photos not inspected yet (interrupted);
    ``history_url``: the server's HTTP address, where each asset's trend is."""
    every = [rows[name] for name in sorted(rows)]
    answered = worst_first(every)
    queue = [r for r in answered if r["needs_review"] == "true"]
    others = [r for r in answered if r["needs_review"] != "true"]
    failed = [r for r in every if r["status"] in (REFUSED, UNANSWERED)]
    skipped = [r for r in every if r["status"] == SKIPPED]
    models = sorted({f"{r['model']} {r['model_version']}" for r in answered})
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    interrupted = (
        f'<p class="review" id="left">Interrupted: <span id="count-left">{left}</span> photos are not inspected yet; '
        "rerun the same command to continue.</p>"
        if left
        else ""
    )
    cards = (
        '<div class="cards" id="summary">'
        f'<div>Photos answered<span class="big" id="count-photos">{len(answered)}</span></div>'
        f'<div>Review queue<span class="big" id="count-review">{len(queue)}</span></div>'
        f'<div>Failures<span class="big" id="count-failed">{len(failed)}</span></div>'
        f'<div>Skipped (not photos)<span class="big" id="count-skipped">{len(skipped)}</span></div>'
        "</div>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>segserve inspection: {len(answered)} photos</title><style>{STYLE}</style></head><body>"
        f"<h1>Inspection of {len(answered) + len(failed)} photos</h1>"
        f'<p class="note">Written {html.escape(when)} by <code>segserve inspect</code> from results.csv beside '
        f"this page; model{'s' if len(models) > 1 else ''}: {html.escape(', '.join(models) or 'none')}.</p>"
        f"{interrupted}{cards}"
        '<h2>Distribution</h2><div class="charts">'
        f"{ratio_histogram(answered)}{grade_chart(answered)}</div>"
        f'<p class="note">The corroded share of the asset is corrosion pixels / (corrosion + asset pixels); the '
        f"corrosion share of the image is corrosion pixels / all pixels. {D610_SCALE} A photo is in the review "
        "queue when the server flagged its answer (needs_review): low confidence, no pipe found, or a photo too "
        "small, dark or blurred. An answer without the flag can still be wrong: what the flag is worth for a "
        "model (how many bad answers it caught when it was calibrated) is in GET /models' review_calibration and "
        "on the /ui page.</p>"
        f"<h2>Review queue ({len(queue)}), worst first</h2>{photo_table('review-queue', queue, out_dir, history_url)}"
        f"<h2>Other photos ({len(others)}), worst first</h2>{photo_table('other-photos', others, out_dir, history_url)}"
        f"<h2>Failures ({len(failed)})</h2>{_problem_table('failures', failed, True)}"
        f"<h2>Skipped ({len(skipped)})</h2>{_problem_table('skipped', skipped, False)}"
        "</body></html>\n"
    )


def write_report(out_dir: Path, rows: dict[str, dict[str, str]], left: int = 0, history_url: str = "") -> Path:
    """Write ``DIR/report.html`` for the rows of results.csv; returns its path."""
    path = Path(out_dir) / REPORT
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(rows, Path(out_dir), left, history_url), encoding="utf-8")
    tmp.replace(path)
    return path
