"""The load-test tools against a live server: a short Locust run over both transports, and a small benchmark.

Both use the session-scoped ``live_server`` fixture (``http_url``, ``grpc_target``, ``env``) from conftest.py.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_locust_runs_both_transports_without_failures(live_server, tmp_path: Path) -> None:
    env = {**live_server.env, "SEGSERVE_GRPC_TARGET": live_server.grpc_target}
    args = ["-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--only-summary"]
    args += ["--exit-code-on-error", "1", "-u", "4", "-r", "4", "-t", "8s", "--host", live_server.http_url]
    _run([*args, "--csv", str(tmp_path / "locust")], env, timeout=180)

    with open(tmp_path / "locust_stats.csv", newline="") as f:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    for key in [("grpc", "Segment"), ("POST", "/segment")]:
        assert key in stats, f"no {key} entry in {sorted(stats)}"
        assert int(stats[key]["Request Count"]) > 0, key
        assert int(stats[key]["Failure Count"]) == 0, key


@pytest.mark.slow
def test_bench_reports_both_transports_with_batch_sizes(live_server, tmp_path: Path) -> None:
    out = tmp_path / "x.md"
    args = ["-m", "loadtests.bench", "--http", live_server.http_url, "--grpc", live_server.grpc_target]
    _run([*args, "--requests", "8", "--concurrency", "1,4", "--out", str(out)], live_server.env, timeout=300)

    lines = out.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| transport |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith(("| grpc", "| http"))]
    assert sorted((r[0], r[1]) for r in rows) == [("grpc", "1"), ("grpc", "4"), ("http", "1"), ("http", "4")]
    batch = columns.index("mean batch size")
    for row in rows:
        assert float(row[batch]) >= 1.0, row
        assert row[columns.index("errors")] == "0", row
