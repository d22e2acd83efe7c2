"""The load-test tools against a live server: a short Locust run over both transports, and a small benchmark.

Both use the session-scoped ``live_server`` fixture (``http_url``, ``grpc_target``, ``env``) from conftest.py.
"""

from __future__ import annotations

import csv
import json
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
def test_bench_reports_raw_naive_and_served_side_by_side(live_server, tmp_path: Path) -> None:
    out = tmp_path / "x.md"
    args = ["-m", "loadtests.bench", "--http", live_server.http_url, "--grpc", live_server.grpc_target]
    args += ["--requests", "8", "--concurrency", "1,8", "--raw-batches", "1,2", "--raw-seconds", "0.2"]
    _run([*args, "--out", str(out)], live_server.env, timeout=300)

    text = out.read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| transport |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith(("| grpc", "| http"))]
    assert sorted((r[0], r[1]) for r in rows) == [("grpc", "1"), ("grpc", "8"), ("http", "1"), ("http", "8")]
    batch = columns.index("mean batch size")
    for row in rows:
        assert row[columns.index("errors")] == "0", row
        assert float(row[columns.index("requests")]) == 8
        expected = 1.0 if row[1] == "1" else None  # one request at a time is never batched with another
        if expected is not None:
            assert float(row[batch]) == expected, row
        else:
            assert 1.0 <= float(row[batch]) <= 8.0, row
    raw = [line for line in lines if line.startswith(("| onnxruntime float32", "| tensorflow float32", "| naive"))]
    assert [r.split("|")[1].strip() for r in raw] == [
        "onnxruntime float32",
        "onnxruntime float32",
        "tensorflow float32",
        "tensorflow float32",
        "onnxruntime float32, spinning threads",
        "onnxruntime float32, spinning threads",
        "naive: Keras model.predict, one image per call",
    ]
    assert "## Against the targets" in text
    assert sum(line.startswith("| served gRPC c=8 /") for line in lines) == 2
    assert any(line.startswith("| p99 gRPC c=1") for line in lines)


def _stats_csv(path: Path, requests: int, failures: int, rps: float, p95: float) -> Path:
    header = "Type,Name,Request Count,Failure Count,Requests/s,95%\n"
    path.write_text(header + f",Aggregated,{requests},{failures},{rps},{p95}\n")
    return path


@pytest.mark.parametrize(
    ("thresholds", "exit_code"),
    [
        ({"min_requests_per_second": 5, "max_p95_ms": 900, "max_error_ratio": 0.01}, 0),
        ({"min_requests_per_second": 11}, 1),
        ({"max_p95_ms": 700}, 1),
        ({"max_error_ratio": 0.0}, 1),
        ({"p99": 1}, 2),
    ],
)
def test_thresholds_check(tmp_path: Path, thresholds, exit_code) -> None:
    from loadtests import thresholds as check

    stats = _stats_csv(tmp_path / "s.csv", requests=200, failures=1, rps=10.0, p95=800)
    (tmp_path / "t.json").write_text(json.dumps(thresholds))
    assert check.main(["--stats", str(stats), "--thresholds", str(tmp_path / "t.json")]) == exit_code


@pytest.mark.slow
def test_stepped_locust_run_fails_on_a_threshold_the_server_cannot_meet(live_server, tmp_path: Path) -> None:
    env = {
        **live_server.env,
        "SEGSERVE_GRPC_TARGET": live_server.grpc_target,
        "LOADTEST_STEPS": "1,2",
        "LOADTEST_STEP_SECONDS": "3",
    }
    args = ["-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--only-summary"]
    _run([*args, "--csv", str(tmp_path / "locust"), "--host", live_server.http_url], env, timeout=120)
    stats = tmp_path / "locust_stats.csv"
    impossible = tmp_path / "impossible.json"
    impossible.write_text(json.dumps({"max_p95_ms": 0.001, "max_error_ratio": 0.0}))
    reachable = tmp_path / "reachable.json"
    reachable.write_text(json.dumps({"min_requests_per_second": 0.1, "max_error_ratio": 0.0}))
    cmd = [sys.executable, "-m", "loadtests.thresholds", "--stats", str(stats), "--thresholds"]
    failed = subprocess.run([*cmd, str(impossible)], cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode == 1 and "BREACH: p95" in failed.stderr
    passed = subprocess.run([*cmd, str(reachable)], cwd=ROOT, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr


def test_flop_count_of_a_small_model(tmp_path: Path) -> None:
    """3x3 conv 3->4 then 1x1 conv 4->3 at 32x32: 2 * 1024 * (4*3*3*3 + 3*4) = 245,760 FLOPs."""
    from loadtests.raw import model_flops
    from segserve.predictor import export_onnx
    from tests.servers import tiny_model

    path = export_onnx(tiny_model("tiny"), tmp_path / "tiny.onnx", 32)
    assert model_flops(path, 32) == 2 * 32 * 32 * (4 * 3 * 3 * 3 + 3 * 4)
