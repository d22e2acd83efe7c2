"""The load harness (``loadtests.harness``) and the load-test tools.

Fast tests cover the harness: percentiles by hand, tables and CSV, the target read from the server's settings, the
client against in-process fakes of both transports (token, message size, TLS, refusals), the launcher's SIGKILL
fallback, the memory sampler on known child processes, the drivers and the soak plot. Slow tests run the tools
against the session-scoped ``live_server`` fixture (``http_url``, ``grpc_target``, ``env``) from conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import psutil
import pytest

from loadtests.harness import stats
from loadtests.harness.client import SegmentClient
from loadtests.harness.drive import fixed_count, for_seconds, open_loop
from loadtests.harness.launcher import LiveServer, free_port, stop_process, stop_server, wait_until_serving
from loadtests.harness.processes import MemorySample, MemorySampler, role_of, total_rss, tree_rss
from loadtests.harness.target import Target
from segserve import engines as engines_module
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.certificates import Authority
from tests.servers import ROOT

MB = 2**20
BIG_ANSWER = 5 * MB  # over gRPC's default 4 MiB receive limit
PHOTO = b"\x89PNG not really"


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


# Stats -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ((1, 2, 3, 4), 0, 1.0),
        ((1, 2, 3, 4), 25, 1.75),  # rank 0.25 * 3 = 0.75: 1 + 0.75 * (2 - 1)
        ((1, 2, 3, 4), 50, 2.5),
        ((1, 2, 3, 4), 90, 3.7),  # rank 2.7: 3 + 0.7 * (4 - 3)
        ((1, 2, 3, 4), 100, 4.0),
        ((3, 1, 2), 50, 2.0),  # unsorted input
        ((10,), 99, 10.0),
        (tuple(range(1, 21)), 95, 19.05),  # rank 18.05: 19 + 0.05
        ((), 50, None),
    ],
)
def test_percentile_by_hand(values, q, expected) -> None:
    assert stats.percentile(values, q) == (pytest.approx(expected) if expected is not None else None)


def test_percentiles_and_their_bounds() -> None:
    assert stats.percentiles([1, 2, 3, 4], (50, 90)) == {"p50": 2.5, "p90": pytest.approx(3.7)}
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_markdown_table_csv_and_numbers(tmp_path: Path) -> None:
    table = stats.markdown_table(["name", "ms"], [["grpc", stats.fmt(3.14159, 2)], ["http", stats.fmt(None)]])
    assert table.splitlines() == ["| name | ms |", "| --- | ---: |", "| grpc | 3.14 |", "| http | - |"]
    assert stats.markdown_table(["a", "b"], [], align="rl").splitlines()[1] == "| ---: | --- |"
    assert stats.fmt(float("nan")) == "-"
    with pytest.raises(ValueError):
        stats.markdown_table(["a", "b"], [["only one"]])
    stats.write_csv(tmp_path / "rows.csv", [{"t": 1.5, "code": "OK"}, {"t": 2, "code": "HTTP 429"}])
    assert stats.read_csv(tmp_path / "rows.csv") == [{"t": "1.5", "code": "OK"}, {"t": "2", "code": "HTTP 429"}]
    stats.write_csv(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == ""


# Target: the server's settings -------------------------------------------------------------------------------------


def test_target_defaults_are_the_servers() -> None:
    target = Target.from_env({})
    assert target == Target("http://127.0.0.1:3000", "127.0.0.1:50051", 64 * MB, "", False, "", "", "")
    assert target.authorization == ()


def test_target_reads_ports_message_size_and_token_by_the_servers_names(tmp_path: Path) -> None:
    env = {
        "SEGSERVE_HTTP_PORT": "3100",
        "SEGSERVE_GRPC_PORT": "50100",
        "SEGSERVE_GRPC_MAX_MESSAGE_BYTES": "1048576",
        "SEGSERVE_AUTH_TOKENS": " first , second",
    }
    target = Target.from_env(env)
    assert (target.http_url, target.grpc_target) == ("http://127.0.0.1:3100", "127.0.0.1:50100")
    assert target.max_message_bytes == MB
    assert target.authorization == (("authorization", "Bearer first"),)
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated monthly\n\n  from-file \nnext\n")
    assert Target.from_env({"SEGSERVE_AUTH_TOKENS_FILE": str(tokens)}).token == "from-file"


def test_target_host_and_overrides() -> None:
    assert Target.from_env({"SEGSERVE_GRPC_HOST": "10.1.2.3"}).http_url == "http://10.1.2.3:3000"
    assert Target.from_env({"SEGSERVE_GRPC_HOST": "0.0.0.0"}).grpc_target == "127.0.0.1:50051"
    assert Target.from_env({"SEGSERVE_GRPC_TARGET": "grpc.plant:443"}).grpc_target == "grpc.plant:443"
    target = Target.from_env({"SEGSERVE_GRPC_TARGET": "ignored:1"}, http="http://h:8000/", grpc="g:9")
    assert (target.http_url, target.grpc_target) == ("http://h:8000", "g:9")
    with pytest.raises(ValueError, match="SEGSERVE_GRPC_PORT"):
        Target.from_env({"SEGSERVE_GRPC_PORT": "fifty"})


def test_target_tls_from_the_servers_certificate_or_a_ca() -> None:
    env = {"SEGSERVE_TLS_CERT_FILE": "/pki/server.crt", "SEGSERVE_TLS_KEY_FILE": "/pki/server.key"}
    target = Target.from_env(env)
    assert target.tls and target.http_url == "https://127.0.0.1:3000" and target.ca_file == "/pki/server.crt"
    env |= {
        "LOADTEST_TLS_CA_FILE": "/pki/ca.crt",
        "LOADTEST_TLS_CERT_FILE": "/c.crt",
        "LOADTEST_TLS_KEY_FILE": "/c.key",
    }
    target = Target.from_env(env)
    assert (target.ca_file, target.client_cert_file, target.client_key_file) == ("/pki/ca.crt", "/c.crt", "/c.key")


# Client, against in-process fakes of both transports ---------------------------------------------------------------


class FakeSegmentation(pb_grpc.SegmentationServiceServicer):
    """Answers Segment with a 5 MiB mask; model "busy" is refused with a retry hint. Records the metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def Segment(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if request.model == "busy":
            context.set_trailing_metadata((("grpc-retry-pushback-ms", "250"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too much in flight")
        return pb.SegmentResponse(width=len(request.image), mask_png=b"\0" * BIG_ANSWER)

    def ListModels(self, request, context):
        return pb.ListModelsResponse()


def _grpc_server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, FakeSegmentation, int]:
    limit = 64 * MB
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    server = grpc.server(futures.ThreadPoolExecutor(2), options=options)
    servicer = FakeSegmentation()
    pb_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, servicer, port


@pytest.fixture(scope="module")
def fake_grpc() -> Iterator[tuple[FakeSegmentation, int]]:
    server, servicer, port = _grpc_server()
    yield servicer, port
    server.stop(None)


class FakeHttp(BaseHTTPRequestHandler):
    """POST /segment: 429 with Retry-After for model "busy", else a JSON answer; GET /models. Records headers."""

    seen: list[dict[str, str]] = []

    def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        form = self.rfile.read(int(self.headers["Content-Length"]))
        FakeHttp.seen.append(dict(self.headers))
        if b'name="model"\r\n\r\nbusy' in form:
            self._answer(429, {"error": "too much in flight", "code": "ResourceExhausted"}, {"Retry-After": "2"})
        else:
            self._answer(200, {"mask_png": "", "width": 1})

    def do_GET(self) -> None:
        FakeHttp.seen.append(dict(self.headers))
        self._answer(200, {"models": [{"name": "unet", "is_default": True, "version": "v1"}]})

    def log_message(self, *args: object) -> None:
        pass


def _http_server(context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHttp)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def fake_http() -> Iterator[int]:
    server = _http_server()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_client_grpc_sends_the_token_and_takes_answers_up_to_the_message_size(fake_grpc) -> None:
    servicer, port = fake_grpc
    target = Target.from_env({"SEGSERVE_GRPC_PORT": str(port), "SEGSERVE_AUTH_TOKENS": "tok"})
    with SegmentClient(target, timeout=30) as client:
        outcome = client.segment("grpc", PHOTO)
    assert outcome.ok and outcome.answer.width == len(PHOTO) and outcome.size > BIG_ANSWER
    assert servicer.metadata[-1]["authorization"] == "Bearer tok"

    small = Target.from_env({"SEGSERVE_GRPC_PORT": str(port), "SEGSERVE_GRPC_MAX_MESSAGE_BYTES": str(MB)})
    with SegmentClient(small, timeout=30) as client:
        assert client.segment("grpc", PHOTO).code == "RESOURCE_EXHAUSTED"  # the answer is over the client's limit
        assert "authorization" not in servicer.metadata[-1]


def test_client_grpc_refusal_carries_the_retry_hint(fake_grpc) -> None:
    _, port = fake_grpc
    with SegmentClient(Target.from_env({"SEGSERVE_GRPC_PORT": str(port)}), timeout=30) as client:
        outcome = client.segment("grpc", PHOTO, model="busy")
    assert (outcome.code, outcome.refused, outcome.retry_after) == ("RESOURCE_EXHAUSTED", True, 0.25)
    assert outcome.detail == "too much in flight"
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        outcome.check()


def test_client_http_answers_refusals_and_no_server(fake_http) -> None:
    env = {"SEGSERVE_HTTP_PORT": str(fake_http), "SEGSERVE_AUTH_TOKENS": "tok"}
    with SegmentClient(Target.from_env(env), timeout=30) as client:
        answered = client.segment("http", PHOTO)
        assert (answered.code, answered.answer) == ("OK", {"mask_png": "", "width": 1})
        assert FakeHttp.seen[-1]["authorization"] == "Bearer tok"
        refused = client.segment("http", PHOTO, model="busy")
        assert (refused.code, refused.refused, refused.retry_after) == ("HTTP 429", True, 2.0)
        assert refused.detail == "too much in flight"
        assert client.model_info()["name"] == "unet"
        with pytest.raises(LookupError):
            client.model_info("deeplabv3plus")
    with SegmentClient(Target.from_env({"SEGSERVE_HTTP_PORT": str(free_port())}), timeout=5) as client:
        assert client.segment("http", PHOTO).code == "ConnectError"


def test_client_tls_and_mutual_tls_on_both_transports(tmp_path: Path) -> None:
    ca = Authority(tmp_path, "plant-ca")
    server_pem, client_pem = ca.issue("segserve", server=True), ca.issue("frontend", server=False)
    credentials = grpc.ssl_server_credentials(
        [(server_pem.key, server_pem.cert)], root_certificates=ca.pem.cert, require_client_auth=True
    )
    grpc_server, _, grpc_port = _grpc_server(credentials)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_pem.cert_path, server_pem.key_path)
    http_server = _http_server(context)
    env = {
        "SEGSERVE_HTTP_PORT": str(http_server.server_address[1]),
        "SEGSERVE_GRPC_PORT": str(grpc_port),
        "SEGSERVE_TLS_CERT_FILE": str(server_pem.cert_path),
        "SEGSERVE_TLS_KEY_FILE": str(server_pem.key_path),
        "SEGSERVE_TLS_CLIENT_CA_FILE": str(ca.pem.cert_path),
        "LOADTEST_TLS_CA_FILE": str(ca.pem.cert_path),
    }
    try:
        with SegmentClient(Target.from_env(env), timeout=30) as client:
            assert client.segment("http", PHOTO).ok
            assert client.segment("grpc", PHOTO).code == "UNAVAILABLE"  # no client certificate
        env |= {"LOADTEST_TLS_CERT_FILE": str(client_pem.cert_path), "LOADTEST_TLS_KEY_FILE": str(client_pem.key_path)}
        with SegmentClient(Target.from_env(env), timeout=30) as client:
            assert client.segment("grpc", PHOTO).ok
    finally:
        grpc_server.stop(None)
        http_server.shutdown()
        http_server.server_close()


# Drivers -----------------------------------------------------------------------------------------------------------


def test_drivers_number_their_calls() -> None:
    results, seconds = fixed_count(lambda k: k * k, 10, 3)
    assert results == [k * k for k in range(10)] and seconds >= 0

    def slow(k: int) -> tuple[int, str]:
        time.sleep(0.01)
        return k, threading.current_thread().name

    calls, seconds = for_seconds(slow, 2, 0.2)
    by_thread: dict[str, list[int]] = {}
    for k, name in calls:
        by_thread.setdefault(name, []).append(k)
    assert len(by_thread) == 2 and seconds >= 0.2
    for ks in by_thread.values():  # worker w: w, w + 2, w + 4, ... however many it got through
        assert sorted(ks) == list(range(ks[0] % 2, ks[0] % 2 + 2 * len(ks), 2))
    assert {ks[0] % 2 for ks in by_thread.values()} == {0, 1}

    t0 = time.monotonic()
    scheduled = open_loop(lambda k, due: (k, due - t0, time.monotonic() - t0), rate=50, seconds=0.2, t0=t0, workers=4)
    assert [k for k, _, _ in scheduled] == list(range(10))
    assert [due for _, due, _ in scheduled] == pytest.approx([k / 50 for k in range(10)])
    assert all(sent >= due - 1e-3 for _, due, sent in scheduled)


# Launcher: stopping, with the SIGKILL fallback ---------------------------------------------------------------------

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "600"])  # inherits the ignored SIGTERM
print(child.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_server_kills_a_server_that_ignores_sigterm_and_its_group(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(process.stdout.readline())
    server = LiveServer("http://127.0.0.1:1", "127.0.0.1:1", {}, process, tmp_path / "log")
    started = time.monotonic()
    assert stop_server(server, timeout=1.0) == -signal.SIGKILL
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the server's child outlived it"
    process.stdout.close()


ESCAPER = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"], start_new_session=True)  # a worker in a session of its own
print(child.pid, flush=True)
time.sleep(600)
"""


def test_stop_server_kills_a_worker_that_left_the_servers_group(tmp_path: Path) -> None:
    """A worker outside the server's process group is not reached by killpg: it is killed as a descendant."""
    process = subprocess.Popen(
        [sys.executable, "-c", ESCAPER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(process.stdout.readline())
    server = LiveServer("http://127.0.0.1:1", "127.0.0.1:1", {}, process, tmp_path / "log")
    assert stop_server(server, timeout=5.0) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "a worker in its own session outlived the server"
    process.stdout.close()


def test_stop_process_lets_a_well_behaved_server_exit_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    process.stdout.readline()
    assert stop_process(process, timeout=20) == -signal.SIGTERM
    assert stop_process(process) == -signal.SIGTERM  # stopping a stopped process changes nothing
    process.stdout.close()


def test_wait_until_serving_reports_a_server_that_exits(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", "print('no models'); raise SystemExit(3)"], stdout=out)
    env = {"SEGSERVE_HTTP_PORT": str(free_port()), "SEGSERVE_GRPC_PORT": str(free_port())}
    server = LiveServer("http://127.0.0.1:1", "127.0.0.1:1", env, process, log)
    with pytest.raises(RuntimeError, match="exited with 3") as caught:
        wait_until_serving(server, timeout=60)
    assert "no models" in str(caught.value)


# Processes: RSS of a known process tree ----------------------------------------------------------------------------

HOLD = """
import os, subprocess, sys, time
block = b"\\x01" * (int(sys.argv[1]) << 20)  # written, so resident
pids = [str(os.getpid())]
if len(sys.argv) > 2:
    child = subprocess.Popen([sys.executable, __file__, sys.argv[2]], stdout=subprocess.PIPE, text=True)
    pids += child.stdout.readline().split()
print(" ".join(pids), flush=True)
time.sleep(600)
"""


def test_memory_sampler_on_a_known_process_tree(tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    process = subprocess.Popen(
        [sys.executable, str(script), "64", "32"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        parent, child = (int(p) for p in process.stdout.readline().split())
        assert parent == process.pid
        own = {pid: psutil.Process(pid).memory_info().rss for pid in (parent, child)}
        assert own[parent] >= 64 * MB and own[child] >= 32 * MB
        assert tree_rss(parent) == pytest.approx(sum(own.values()), abs=8 * MB)
        assert tree_rss(child) == pytest.approx(own[child], abs=4 * MB)

        with MemorySampler(parent, period=0.05) as sampler:
            time.sleep(0.5)
        assert {s.pid for s in sampler.samples} == {parent, child}
        assert min(s.rss_mb for s in sampler.samples if s.pid == parent) >= 64
        assert min(s.rss_mb for s in sampler.samples if s.pid == child) >= 32
        totals = sampler.totals()
        assert len(totals) >= 3 and min(totals.values()) >= 96
        assert sampler.peak_mb == max(totals.values())
    finally:
        stop_process(process, timeout=5)
        process.stdout.close()


def test_total_rss_sums_processes_per_sample_time() -> None:
    samples = [MemorySample(0.0, 1, "a", 10.0), MemorySample(0.0, 2, "b", 5.0), MemorySample(5.0, 1, "a", 12.0)]
    assert total_rss(samples) == {0.0: 15.0, 5.0: 12.0}
    assert total_rss(samples, lo=1.0) == {5.0: 12.0}


def test_role_of_names_a_bentoml_service_worker() -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)", "--service-name", "segserve-models"]
    process = subprocess.Popen(cmd)
    try:
        proc = psutil.Process(process.pid)
        deadline = time.monotonic() + 10
        while "--service-name" not in proc.cmdline() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert role_of(proc) == "segserve-models"
    finally:
        process.kill()
        process.wait()


# The soak plot ------------------------------------------------------------------------------------------------------


def _soak_rows_and_memory() -> tuple[list[dict], list[MemorySample], float]:
    """Ten one-minute windows, three of warm-up; gRPC and HTTP p95 identical (one line on top of the other);
    a model worker at 1000 MB growing to 1060 MB over warm-up and 30 MB more after, beside two flat processes."""
    warmup = 180.0
    rows = [
        {
            "start_s": 60.0 * i,
            "end_s": 60.0 * (i + 1),
            "phase": "warm-up" if i < 3 else "soak",
            "full": True,
            "p95_ms": 50.0 + i,
            "grpc_p95_ms": 50.0 + i,
            "http_p95_ms": 50.0 + i,
        }
        for i in range(10)
    ]
    memory = []
    for t in range(0, 601, 30):
        model = 1000.0 + 60.0 * min(t, warmup) / warmup + 30.0 * max(0.0, t - warmup) / 420.0
        memory += [MemorySample(float(t), 11, "segserve-models", model), MemorySample(float(t), 12, "segserve", 200.0)]
        memory.append(MemorySample(float(t), 10, "bentoml-serve", 110.0))
    return rows, memory, warmup


def test_soak_plot_shows_both_transports_and_memory_growth_on_its_own_axis(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from loadtests import soak

    rows, memory, warmup = _soak_rows_and_memory()
    fig = soak.draw(rows, memory, warmup)
    try:
        latency, total, change = fig.axes
        lines = {line.get_label(): line for line in latency.get_lines()}
        assert set(lines) == {"both transports", "gRPC", "HTTP", "drift windows (+11.3%)"}  # (59 - 53) / 53
        grpc_line, http_line, both = lines["gRPC"], lines["HTTP"], lines["both transports"]
        assert list(grpc_line.get_ydata()) == list(http_line.get_ydata())  # the same numbers...
        assert grpc_line.get_linestyle() != http_line.get_linestyle()  # ...drawn so that both show
        assert grpc_line.get_marker() != http_line.get_marker() and http_line.get_markerfacecolor() == "none"
        assert grpc_line.get_color() != http_line.get_color()
        assert both.get_linewidth() > 2 * max(grpc_line.get_linewidth(), http_line.get_linewidth())

        assert soak.memory_growth(memory, warmup) == 30.0
        assert len(total.get_lines()) == 1  # the total, alone on its axis
        low, high = total.get_ylim()
        assert (low, high) == pytest.approx((1370.0 - 4.5, 1400.0 + 4.5))  # the range after warm-up, padded 15%
        assert any(text.get_text() == "growth after warm-up: +30.0 MB" for text in total.texts)

        grown = {line.get_label(): line.get_ydata()[-1] for line in change.get_lines() if "(" in line.get_label()}
        assert grown == {
            "segserve-models (11): +30.0 MB": pytest.approx(30.0),
            "segserve (12): +0.0 MB": 0.0,
            "bentoml-serve (10): +0.0 MB": 0.0,
        }
        styles = {line.get_linestyle() for line in change.get_lines() if "(" in line.get_label()}
        assert len(styles) == 3  # the two flat processes' lines, one on the other, told apart
        assert change.get_xlim()[0] <= 0 and change.get_xlim()[1] >= 10
    finally:
        plt.close(fig)

    soak.plot(tmp_path / "soak.png", rows, memory, warmup)
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Locust, gevent-compatible gRPC ------------------------------------------------------------------------------------


def test_locustfile_lists_both_users() -> None:
    args = ["-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--list"]
    listed = _run(args, {"PYTHONPATH": str(ROOT)}, timeout=120).stdout.split()
    assert "GrpcSegmentUser" in listed and "HttpSegmentUser" in listed and "SegmentUser" not in listed


# Against a live server ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_locust_runs_both_transports_without_failures(live_server, tmp_path: Path) -> None:
    args = ["-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--only-summary"]
    args += ["--exit-code-on-error", "1", "-u", "4", "-r", "4", "-t", "8s", "--host", live_server.http_url]
    _run([*args, "--csv", str(tmp_path / "locust")], live_server.env, timeout=180)

    stats_rows = stats.read_csv(tmp_path / "locust_stats.csv")
    by_key = {(row["Type"], row["Name"]): row for row in stats_rows}
    for key in [("grpc", "Segment"), ("POST", "/segment")]:
        assert key in by_key, f"no {key} entry in {sorted(by_key)}"
        assert int(by_key[key]["Request Count"]) > 0, key
        assert int(by_key[key]["Failure Count"]) == 0, key


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
    assert sorted((r[0], r[1]) for r in rows) == [
        ("grpc", "1"),
        ("grpc", "1 (after load)"),
        ("grpc", "8"),
        ("http", "1"),
        ("http", "1 (after load)"),
        ("http", "8"),
    ]
    batch = columns.index("mean batch size")
    for row in rows:
        assert row[columns.index("errors")] == "0", row
        assert float(row[columns.index("requests")]) == 8
        expected = 1.0 if row[1].startswith("1") else None  # one request at a time is never batched with another
        if expected is not None:
            assert float(row[batch]) == expected, row
        else:
            assert 1.0 <= float(row[batch]) <= 8.0, row
    raw = [line for line in lines if line.startswith(("| onnxruntime", "| openvino", "| tensorflow", "| naive"))]
    engines = ["onnxruntime f32", "onnxruntime f32, spinning threads", "openvino f32"]
    engines += ["openvino bf16"] * engines_module.native_bf16() + ["tensorflow f32"]
    assert [r.split("|")[1].strip() for r in raw] == [e for e in engines for _ in (1, 2)] + [
        "naive: Keras model.predict, one image per call"
    ]
    # the store holds stand-in models: their parity is measured on the val photos, whichever way it goes
    assert all(r.split("|")[-2].strip() in ("passes", "fails") for r in raw[:-1])
    assert "## Against the targets" in text
    assert f"cores, {engines_module.usable_cpus()} usable" in text  # the machine, with the CPUs a pass may use
    assert sum(line.startswith("| served gRPC c=8 /") for line in lines) == 2
    assert sum(line.startswith("| p99 gRPC c=1") for line in lines) == 2  # fresh and after load


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

    stats_file = _stats_csv(tmp_path / "s.csv", requests=200, failures=1, rps=10.0, p95=800)
    (tmp_path / "t.json").write_text(json.dumps(thresholds))
    assert check.main(["--stats", str(stats_file), "--thresholds", str(tmp_path / "t.json")]) == exit_code


@pytest.mark.slow
def test_stepped_locust_run_fails_on_a_threshold_the_server_cannot_meet(live_server, tmp_path: Path) -> None:
    # No --host: the HTTP users go where the server's SEGSERVE_HTTP_PORT says, as the gRPC users do.
    env = {**live_server.env, "LOADTEST_STEPS": "1,2", "LOADTEST_STEP_SECONDS": "3"}
    args = ["-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--only-summary"]
    _run([*args, "--csv", str(tmp_path / "locust")], env, timeout=120)
    stats_file = tmp_path / "locust_stats.csv"
    impossible = tmp_path / "impossible.json"
    impossible.write_text(json.dumps({"max_p95_ms": 0.001, "max_error_ratio": 0.0}))
    reachable = tmp_path / "reachable.json"
    reachable.write_text(json.dumps({"min_requests_per_second": 0.1, "max_error_ratio": 0.0}))
    cmd = [sys.executable, "-m", "loadtests.thresholds", "--stats", str(stats_file), "--thresholds"]
    failed = subprocess.run([*cmd, str(impossible)], cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode == 1 and "BREACH: p95" in failed.stderr
    passed = subprocess.run([*cmd, str(reachable)], cwd=ROOT, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr


@pytest.mark.slow
def test_harness_client_and_memory_sampler_on_the_live_server(live_server) -> None:
    """The launcher's server answers the harness client over both transports, and its tree's RSS is sampled."""
    with live_server.client(timeout=60) as client:
        assert client.serving()
        for transport in ("grpc", "http"):
            assert client.segment(transport, _png()).ok, transport
            assert client.list_models(transport).ok, transport
    with MemorySampler(live_server.process.pid, period=0.1) as sampler:
        time.sleep(0.3)
    assert len({s.pid for s in sampler.samples}) >= 3  # bentoml serve, the entry and the model workers
    assert sampler.peak_mb > 100


def _png() -> bytes:
    from loadtests.harness.images import synthetic_png

    return synthetic_png(80, 60)


def test_flop_count_of_a_small_model(tmp_path: Path) -> None:
    """3x3 conv 3->4 then 1x1 conv 4->3 at 32x32: 2 * 1024 * (4*3*3*3 + 3*4) = 245,760 FLOPs."""
    from benchmarks.raw import model_flops
    from segserve.predictor import export_onnx
    from tests.servers import tiny_model

    path = export_onnx(tiny_model("tiny"), tmp_path / "tiny.onnx", 32)
    assert model_flops(path, 32) == 2 * 32 * 32 * (4 * 3 * 3 * 3 + 3 * 4)


# ------------------------------------------------------------------------------------------------ the profile


def test_profile_stages_go_by_the_innermost_known_frame_and_history_takes_all_its_work(tmp_path):
    from loadtests import profile

    engine = "run (asyncio:1);segment (segserve/pipeline.py:90);predict_on_batch (segserve/predictor.py:121)"
    encode = "to_thread (asyncio:2);segment_answer (segserve/pipeline.py:190);encode_png (segserve/imaging.py:241)"
    # a JPEG encoded by the history's writer thread is the history's work, not the answer's
    history = "run (threading:1);_write (segserve/history/writer.py:80);encode_jpeg (segserve/imaging.py:260)"
    idle = "run (threading:1);wait (threading.py:300)"
    assert profile.stage_of(engine) == "forward pass (the engine)"
    assert profile.stage_of(encode) == "PNG/JPEG encoding, colours, overlay"
    assert profile.stage_of(history) == profile.HISTORY[0]
    assert profile.stage_of(idle) is None
    assert profile.stage_of("main (somewhere.py:1)") == "other Python"
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{engine} 30\n{history} 5\n{idle} 400\n{encode} 2\n")
    assert profile.summarise(raw) == {
        "forward pass (the engine)": 30,
        profile.HISTORY[0]: 5,
        "PNG/JPEG encoding, colours, overlay": 2,
    }


def test_overload_level_calls_the_named_model_and_counts_refusals():
    from loadtests import overload
    from loadtests.harness.client import Outcome

    calls = []

    class Client:
        def segment(self, transport, image, model=""):
            calls.append((transport, model))
            code = "RESOURCE_EXHAUSTED" if len(calls) % 2 else "OK"
            return Outcome(transport, "Segment", code, 0.01, retry_after=0.0)

    level = overload.run_level(Client(), b"photo", concurrency=2, seconds=0.2, model="deeplabv3plus")
    assert calls and set(calls) == {("grpc", "deeplabv3plus")}
    assert level["concurrency"] == 2 and level["failures"] == 0
    assert 0.3 < level["refused_share"] < 0.7 and level["accepted_per_s"] > 0
