"""Write the segserve Grafana dashboard, segserve-dashboard.json, beside this script.

    python deploy/grafana/make_dashboard.py           # rewrite the JSON
    python deploy/grafana/make_dashboard.py --check   # exit 1 if the JSON differs from what this script writes

Import the JSON in Grafana (Dashboards > New > Import) and pick a Prometheus data source that scrapes segserve
(deploy/prometheus/prometheus.yml). Every query uses ``$__rate_interval``; tests/test_deploy.py checks that each
expression parses with promtool and names only metrics that segserve.telemetry defines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).with_name("segserve-dashboard.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
ADMISSION_LIMIT = 16  # SEGSERVE_MAX_CONCURRENT_REQUESTS, per transport and pod
PHOTO_METHODS = 'method=~"Segment|Evaluate"'


def target(expr: str, legend: str, ref: str, **extra) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def quantiles(metric: str, by: str, selector: str = "") -> list[dict]:
    """p50, p95 and p99 of a histogram, per ``by`` label."""
    return [
        target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def mean(metric: str, by: str) -> str:
    """The mean of a histogram's observations per ``by`` label: rate of the sum over rate of the count."""
    return (
        f"sum by ({by}) (rate({metric}_sum[$__rate_interval])) / sum by ({by}) (rate({metric}_count[$__rate_interval]))"
    )


def timeseries(title: str, description: str, targets: list[dict], unit: str, **defaults) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def panels() -> list[dict]:
    in_flight_thresholds = {
        "mode": "absolute",
        "steps": [
            {"color": "green", "value": None},
            {"color": "orange", "value": 0.8 * ADMISSION_LIMIT},
            {"color": "red", "value": ADMISSION_LIMIT},
        ],
    }
    return [
        timeseries(
            "Requests by transport and code",
            "Answered requests per second. HTTP codes are status numbers, gRPC codes are names.",
            [
                target(
                    "sum by (transport, code) (rate(segserve_requests_total[$__rate_interval]))",
                    "{{transport}} {{code}}",
                    "A",
                )
            ],
            "reqps",
        ),
        timeseries(
            "Server error share",
            "HTTP 5xx and gRPC UNAVAILABLE/INTERNAL/UNKNOWN as a share of answers (alert SegServeHighErrorRatio: 5%).",
            [
                target(
                    'sum by (transport) (rate(segserve_requests_total{code=~"5..|UNAVAILABLE|INTERNAL|UNKNOWN"}'
                    "[$__rate_interval])) / sum by (transport) (rate(segserve_requests_total[$__rate_interval]))",
                    "{{transport}}",
                    "A",
                )
            ],
            "percentunit",
        ),
        timeseries(
            "Latency percentiles (Segment, Evaluate)",
            "p50, p95 and p99 of the time from receiving a request to answering it, per transport.",
            quantiles("segserve_request_duration_seconds", "transport", PHOTO_METHODS),
            "s",
        ),
        timeseries(
            "Requests in flight",
            f"Requests being served now, per transport. Admission refuses past {ADMISSION_LIMIT} per transport"
            " and pod (RESOURCE_EXHAUSTED / 429).",
            [target("sum by (transport) (segserve_requests_in_flight)", "{{transport}}", "A")],
            "short",
            thresholds=in_flight_thresholds,
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        timeseries(
            "Batch size",
            "Images per model call after adaptive batching: the mean and p95 per model.",
            [
                target(mean("segserve_batch_size", "model"), "mean {{model}}", "A"),
                target(
                    "histogram_quantile(0.95, sum by (model, le) (rate(segserve_batch_size_bucket[$__rate_interval])))",
                    "p95 {{model}}",
                    "B",
                ),
            ],
            "short",
        ),
        timeseries(
            "Model compute time per batch",
            "Time the model took for one batch, per model.",
            quantiles("segserve_model_compute_seconds", "model"),
            "s",
        ),
        {
            "type": "heatmap",
            "title": "Corroded share of the asset",
            "description": "Answers per bucket of corrosion / (corrosion + asset); the buckets are the ASTM D610"
            " rust grade limits.",
            "datasource": DATASOURCE,
            "targets": [
                target(
                    "sum by (le) (increase(segserve_corrosion_asset_ratio_bucket[$__rate_interval]))",
                    "{{le}}",
                    "A",
                    format="heatmap",
                )
            ],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {
                "calculate": False,
                "yAxis": {"unit": "percentunit"},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "tooltip": {"show": True, "yHistogram": True},
            },
        },
        timeseries(
            "Mean prediction confidence per model",
            "Mean top-class probability of the answers, per model. A lasting fall means the photos have drifted"
            " (alert SegServeConfidenceDrop).",
            [target(mean("segserve_prediction_confidence", "model"), "{{model}}", "A")],
            "percentunit",
            min=0,
            max=1,
        ),
        timeseries(
            "Answers flagged for review",
            "Answers flagged for review per second, by model and reason.",
            [
                target(
                    "sum by (model, reason) (rate(segserve_review_flags_total[$__rate_interval]))",
                    "{{model}} {{reason}}",
                    "A",
                )
            ],
            "reqps",
        ),
        {
            "type": "stat",
            "title": "Models loaded",
            "description": "Models per server: loaded (segserve_model_info) and set to serve"
            " (segserve_model_configured); a ready server has loaded them all.",
            "datasource": DATASOURCE,
            "targets": [
                target("count by (instance) (segserve_model_info == 1)", "{{instance}} loaded", "A"),
                target("count by (instance) (segserve_model_configured == 1)", "{{instance}} set to serve", "B"),
            ],
            "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        },
    ]


def layout(items: list[dict]) -> list[dict]:
    """Number the panels and place them two to a row, 12 columns wide and 8 high each."""
    placed = []
    for i, panel in enumerate(items):
        grid = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
        placed.append({"id": i + 1, "gridPos": grid, **panel})
    return placed


def dashboard() -> dict:
    return {
        "uid": "segserve",
        "title": "segserve",
        "description": "Corrosion segmentation service: traffic, latency, batching, load and model behaviour.",
        "tags": ["segserve", "bentoml", "grpc"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if OUTPUT.read_text() != render():
            print(f"{OUTPUT} is stale: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
