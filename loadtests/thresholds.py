"""Check a Locust run against a thresholds file: exit 1, naming each breach, when the run misses one.

    python -m loadtests.thresholds --stats loadtests/out/locust_stats.csv --thresholds loadtests/thresholds.json

The thresholds file is JSON: ``min_requests_per_second`` (aggregated throughput over the whole run),
``max_p95_ms`` (aggregated 95th percentile) and ``max_error_ratio`` (failures / requests). Any of them may be
left out. Ops write their own from what their replicas must sustain, and keep a margin below what a quiet
replica measures (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loadtests.harness.stats import read_csv

KNOWN = ("min_requests_per_second", "max_p95_ms", "max_error_ratio")


def measured(stats_csv: Path) -> dict[str, float]:
    """Throughput, p95 and error ratio of the Aggregated row of a Locust ``*_stats.csv``."""
    rows = {row["Name"]: row for row in read_csv(stats_csv)}
    if "Aggregated" not in rows:
        raise ValueError(f"{stats_csv} has no Aggregated row: is it a Locust --csv stats file?")
    row = rows["Aggregated"]
    requests = int(row["Request Count"])
    if requests == 0:
        raise ValueError(f"{stats_csv}: the run made no requests")
    return {
        "requests_per_second": float(row["Requests/s"]),
        "p95_ms": float(row["95%"]),
        "error_ratio": int(row["Failure Count"]) / requests,
        "requests": requests,
    }


def breaches(values: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """Each threshold the measured values miss, as a sentence."""
    unknown = sorted(set(thresholds) - set(KNOWN))
    if unknown:
        raise ValueError(f"unknown thresholds {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    out = []
    if (
        "min_requests_per_second" in thresholds
        and values["requests_per_second"] < thresholds["min_requests_per_second"]
    ):
        out.append(f"throughput {values['requests_per_second']:.2f}/s < {thresholds['min_requests_per_second']}/s")
    if "max_p95_ms" in thresholds and values["p95_ms"] > thresholds["max_p95_ms"]:
        out.append(f"p95 {values['p95_ms']:.0f} ms > {thresholds['max_p95_ms']} ms")
    if "max_error_ratio" in thresholds and values["error_ratio"] > thresholds["max_error_ratio"]:
        out.append(f"error ratio {values['error_ratio']:.4f} > {thresholds['max_error_ratio']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.thresholds", description=__doc__.split("\n")[0])
    parser.add_argument("--stats", type=Path, required=True, help="Locust's <prefix>_stats.csv")
    parser.add_argument("--thresholds", type=Path, default=Path(__file__).with_name("thresholds.json"))
    args = parser.parse_args(argv)
    try:
        values = measured(args.stats)
        found = breaches(values, json.loads(args.thresholds.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{values['requests']} requests: {values['requests_per_second']:.2f}/s, p95 {values['p95_ms']:.0f} ms, "
        f"error ratio {values['error_ratio']:.4f} (thresholds: {args.thresholds})"
    )
    for line in found:
        print(f"BREACH: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
