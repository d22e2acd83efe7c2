"""`segserve inspect`: which files are photos, what a rerun sends again, the client's connection, and runs against
a scripted gRPC server (retry hints, deadlines, bounded concurrency, Ctrl-C) and against a real server (a corrupt
file, a text file and a 40-megapixel photo; a rerun that does no work; a report whose numbers are the CSV's, in
headless Chromium)."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace

import cv2
import grpc
import numpy as np
import pytest

from segserve import inspection, inspection_report
from segserve.client import Connection, retry_pushback
from segserve.errors import RETRY_PUSHBACK
from segserve.settings import Settings
from segserve.v1 import segmentation_pb2 as pb
from segserve.v1 import segmentation_pb2_grpc as pb_grpc
from tests.servers import ROOT
from tests.test_http_face import CHROMIUM_FLAGS, chromium  # noqa: F401  (the Chromium fixture)


def write_photo(path: Path, seed: int = 0, size: tuple[int, int] = (48, 64)) -> Path:
    """A small photo whose left part is reddish (the scripted server calls it corrosion) by a seeded amount."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :, 1] = 120
    image[:, : int(w * rng.uniform(0.05, 0.9)), 2] = 220  # BGR: red on the left
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(out: Path) -> dict[str, dict[str, str]]:
    with (out / inspection.RESULTS).open(newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


# --------------------------------------------------------------------------------------------- the photos


def test_discover_names_photos_under_their_folder_and_skips_the_rest(tmp_path):
    root = tmp_path / "site-a"
    for name in ("a.JPG", "b.png", "deep/c.tiff", "deep/d.webp", "e.bmp", "f.jpeg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")  # named as a photo: sent, whatever it holds
    (root / "notes.txt").write_text("x")
    (root / "README").write_text("x")
    (root / ".hidden.png").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "g.png").write_bytes(b"x")
    out = root / "report-out"  # the output folder inside the input is passed over
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "old.jpg").write_bytes(b"x")
    found = inspection.discover([root], out)
    names = {f.name: f.reason for f in found}
    assert names == {
        "site-a/a.JPG": "",
        "site-a/b.png": "",
        "site-a/deep/c.tiff": "",
        "site-a/deep/d.webp": "",
        "site-a/e.bmp": "",
        "site-a/f.jpeg": "",
        "site-a/notes.txt": "not a photo (.txt)",
        "site-a/README": "not a photo (no extension)",
    }
    # two folders of the same name stay apart; a file given alone is named under its folder
    other = tmp_path / "x" / "site-a"
    write_photo(other / "b.png")
    found = inspection.discover([root / "b.png", other], tmp_path / "out")
    assert [f.name for f in found] == ["site-a/b.png", "site-a-2/b.png"]
    with pytest.raises(inspection.InspectError, match="does not exist"):
        inspection.discover([tmp_path / "nowhere"], tmp_path / "out")


def test_a_rerun_skips_answered_and_refused_photos_whose_content_is_unchanged(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "m.png").write_bytes(b"m")
    row = {"sha256": "abc", "status": "ok", "model": "unet", "mask_file": "masks/m.png", "overlay_file": ""}
    assert inspection.done_already(row, "abc", "", out)
    assert inspection.done_already(row, "abc", "unet", out)
    assert not inspection.done_already(row, "abc", "deeplabv3plus", out)  # another model asked for
    assert not inspection.done_already(row, "changed", "", out)  # new content
    assert not inspection.done_already({**row, "mask_file": "masks/gone.png"}, "abc", "", out)
    assert inspection.done_already({**row, "status": "refused"}, "abc", "", out)
    assert not inspection.done_already({**row, "status": "unanswered"}, "abc", "", out)
    assert not inspection.done_already(None, "abc", "", out)


def test_rows_round_trip_and_a_foreign_csv_is_refused(tmp_path):
    row = {c: "" for c in inspection.COLUMNS} | {"name": "a/b.png", "status": "skipped", "error": 'say "hi", x'}
    inspection.write_rows(tmp_path, {"a/b.png": row})
    assert inspection.read_rows(tmp_path) == {"a/b.png": row}
    (tmp_path / "results.csv").write_text("x,y\n1,2\n")
    with pytest.raises(inspection.InspectError, match="not a segserve inspect results file"):
        inspection.read_rows(tmp_path)


def test_the_report_bins_and_orders_worst_first():
    assert [inspection_report.ratio_bin(r) for r in (0.0, 0.099, 0.1, 0.55, 0.999, 1.0)] == [0, 0, 1, 5, 9, 9]
    rows = [
        {"name": n, "status": "ok", "needs_review": flag, "corrosion_asset_ratio": r}
        for n, flag, r in (("a", "false", "0.9"), ("b", "true", "0.1"), ("c", "true", "0.5"), ("d", "false", "0.2"))
    ]
    assert [r["name"] for r in inspection_report.worst_first(rows + [{"name": "x", "status": "refused"}])] == [
        "c",
        "b",
        "a",
        "d",
    ]


# --------------------------------------------------------------------------------------------- the client


def test_the_connection_defaults_to_the_servers_settings(tmp_path):
    cert = tmp_path / "server.crt"
    cert.write_text("pem")
    settings = Settings(grpc_port=50123, auth_tokens="first,second", tls_cert_file=str(cert), tls_key_file="k")
    connection = Connection.from_settings(settings)
    assert connection.target == "localhost:50123" and connection.token == "first"
    assert connection.tls and connection.ca_file == str(cert)
    assert connection.metadata == (("authorization", "Bearer first"),)
    plain = Connection.from_settings(Settings(), target="10.0.0.2:9000", token="")
    assert (plain.target, plain.tls, plain.metadata) == ("10.0.0.2:9000", False, ())
    assert Connection.from_settings(Settings(), ca_file=str(cert)).tls  # a CA turns TLS on
    bad = Connection.from_settings(Settings(), target="nowhere", cert_file=str(cert), ca_file="/no/ca.pem")
    problems = "; ".join(bad.problems())
    assert "needs both" in problems and "/no/ca.pem cannot be read" in problems and "not HOST:PORT" in problems


class _RpcError(grpc.RpcError):
    def __init__(self, trailing):
        self._trailing = trailing

    def trailing_metadata(self):
        return self._trailing


def test_the_retry_hint_is_read_from_the_trailing_metadata():
    assert retry_pushback(_RpcError(((RETRY_PUSHBACK, "1500"),))) == 1.5
    assert retry_pushback(_RpcError(())) is None
    assert retry_pushback(_RpcError(((RETRY_PUSHBACK, "soon"),))) is None


@pytest.mark.parametrize(
    ("given", "server", "expected"),
    [
        (None, None, "http://localhost:3000"),
        (None, "inspect.example:50051", "http://inspect.example:3000"),
        (None, "[::1]:50051", "http://[::1]:3000"),
        ("https://segserve.example/", "x:1", "https://segserve.example"),
        ("none", None, ""),
    ],
)
def test_the_report_links_assets_to_the_servers_history_page(given, server, expected):
    from segserve.inspection import history_url
    from segserve.settings import Settings

    assert history_url(given, server, Settings()) == expected


def test_bad_options_exit_2_with_a_message(tmp_path, capsys):
    from segserve import cli

    for argv, message in (
        (["inspect", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "does not exist"),
        (["inspect", str(tmp_path), "--out", str(tmp_path / "o"), "--concurrency", "0"], "--concurrency"),
        (["inspect", str(tmp_path), "--out", str(tmp_path / "o"), "--tls-client-cert-file", "c"], "needs both"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------- against a scripted server


class ScriptedServer(pb_grpc.SegmentationServiceServicer):
    """Answers like segserve (corrosion where a pixel is red), refusing as told: the first call for a photo
    RESOURCE_EXHAUSTED with a retry hint (``busy``), a photo named in ``slow`` after ``slow_seconds``."""

    def __init__(self, busy: bool = False, pushback_ms: int = 300, delay: float = 0.0) -> None:
        self.busy, self.pushback_ms, self.delay = busy, pushback_ms, delay
        self.slow: set[str] = set()
        self.slow_seconds = 0.0
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, str]] = []  # (time, the photo's SHA-256, answer)
        self.in_flight = self.max_in_flight = 0
        self.refused_once: set[str] = set()
        self.arrivals: list[float] = []

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[pb.ModelInfo(name="deeplabv3plus", version="v1", is_default=True)])

    def Segment(self, request, context):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._segment(request, context)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _segment(self, request, context):
        key = hashlib.sha256(request.image).hexdigest()
        self.arrivals.append(time.monotonic())
        image = cv2.imdecode(np.frombuffer(request.image, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            self.calls.append((time.monotonic(), key, "INVALID_ARGUMENT"))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is not a photo")
        if self.busy and key not in self.refused_once:
            self.refused_once.add(key)
            self.calls.append((time.monotonic(), key, "RESOURCE_EXHAUSTED"))
            context.set_trailing_metadata(((RETRY_PUSHBACK, str(self.pushback_ms)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests in flight")
        time.sleep(self.slow_seconds if key in self.slow else self.delay)
        self.calls.append((time.monotonic(), key, "OK"))
        mask = np.where(image[:, :, 2] > 128, 0, 1).astype(np.uint8)
        pixels = np.bincount(mask.ravel(), minlength=3)
        h, w = mask.shape
        ratio = float(pixels[0] / max(1, pixels[0] + pixels[1]))
        coverage = [
            pb.ClassCoverage(class_id=i, name=n, pixels=int(pixels[i]), fraction=float(pixels[i] / (h * w)))
            for i, n in enumerate(("corrosion", "asset", "background"))
        ]
        return pb.SegmentResponse(
            model=request.model or "deeplabv3plus",
            model_version="v1",
            width=w,
            height=h,
            mask_png=cv2.imencode(".png", mask)[1].tobytes(),
            overlay_jpeg=cv2.imencode(".jpg", image)[1].tobytes(),
            coverage=coverage,
            corrosion_asset_ratio=ratio,
            rust_grade=0 if ratio > 0.5 else 3,
            mean_confidence=0.9,
            needs_review=ratio > 0.5,
            review_reasons=[pb.REVIEW_REASON_LOW_CONFIDENCE] if ratio > 0.5 else [],
        )


@pytest.fixture
def scripted():
    """A scripted server on a free loopback port: (servicer, "127.0.0.1:PORT")."""
    servicer = ScriptedServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_mutual_tls_with_a_client_certificate(tmp_path, monkeypatch, capsys):
    from tests.certificates import Authority

    ca = Authority(tmp_path, "plant-ca")
    server_pem, client_pem = ca.issue("segserve", server=True), ca.issue("inspector", server=False)
    credentials = grpc.ssl_server_credentials(
        [(server_pem.key, server_pem.cert)], root_certificates=ca.pem.cert, require_client_auth=True
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SegmentationServiceServicer_to_server(ScriptedServer(), server)
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    write_photo(tmp_path / "in" / "p.png")
    monkeypatch.setattr(inspection, "CONNECT_TIMEOUT", 2.0)
    try:
        tls = {"tls_ca_file": str(ca.pem.cert_path)}
        args = inspect_args([tmp_path / "in"], tmp_path / "out", f"localhost:{port}", **tls)
        assert inspection.main(args) == 1  # no client certificate: the handshake fails
        assert "no segserve server answers" in capsys.readouterr().err
        mutual = tls | {"tls_client_cert_file": str(client_pem.cert_path)}
        mutual |= {"tls_client_key_file": str(client_pem.key_path)}
        assert inspection.main(inspect_args([tmp_path / "in"], tmp_path / "out", f"localhost:{port}", **mutual)) == 0
        assert read_csv(tmp_path / "out")["in/p.png"]["status"] == "ok"
    finally:
        server.stop(0)


def inspect_args(paths, out, server, **options) -> SimpleNamespace:
    args = dict(server=server, model="", concurrency=4, timeout=10.0, retries=8, token=None, tls_ca_file=None)
    args |= dict(tls_client_cert_file="", tls_client_key_file="")
    return SimpleNamespace(paths=[str(p) for p in paths], out=str(out), **(args | options))


def test_retry_hints_are_honoured_and_concurrency_is_bounded(scripted, tmp_path):
    servicer, target = scripted
    photos = [write_photo(tmp_path / "in" / f"p{i}.png", seed=i, size=(40 + i, 64)) for i in range(6)]
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    servicer.delay = 0.2
    assert inspection.main(inspect_args([tmp_path / "in"], tmp_path / "first", target, concurrency=2)) == 0
    assert servicer.max_in_flight == 2  # the bound, reached

    # a busy server: every photo's first call is refused with a retry hint of 300 ms
    servicer.busy, servicer.delay, servicer.calls, servicer.arrivals = True, 0.0, [], []
    out = tmp_path / "out"
    assert inspection.main(inspect_args([tmp_path / "in"], out, target, concurrency=1)) == 0
    rows = read_csv(out)
    assert [rows[f"in/{p.name}"]["status"] for p in photos] == ["ok"] * 6
    assert rows["in/broken.jpg"]["status"] == "refused" and rows["in/broken.jpg"]["error_code"] == "INVALID_ARGUMENT"
    for key in {digest(p) for p in photos}:
        times = {answer: t for t, k, answer in servicer.calls if k == key}
        assert times["OK"] - times["RESOURCE_EXHAUSTED"] >= 0.3  # retried no sooner than the server asked
    # nor is any other photo sent before then
    refusals = [t for t, _, a in servicer.calls if a == "RESOURCE_EXHAUSTED"]
    assert len(refusals) == 6
    for refused in refusals:
        assert not [t for t in servicer.arrivals if refused < t < refused + 0.3], refused
    for p in photos:
        row = rows[f"in/{p.name}"]
        mask = cv2.imread(str(out / row["mask_file"]), cv2.IMREAD_UNCHANGED)
        assert int((mask == 0).sum()) == int(row["corrosion_pixels"]) and (out / row["overlay_file"]).exists()
        corrosion, asset = int(row["corrosion_pixels"]), int(row["asset_pixels"])
        assert float(row["corrosion_asset_ratio"]) == pytest.approx(corrosion / (corrosion + asset))

    # a rerun sends nothing, and the server is not needed for it
    calls = len(servicer.calls)
    assert inspection.main(inspect_args([tmp_path / "in"], out, "127.0.0.1:1")) == 0
    assert len(servicer.calls) == calls and read_csv(out) == rows
    # a changed photo is sent again, alone
    write_photo(photos[0], seed=99)
    assert inspection.main(inspect_args([tmp_path / "in"], out, target)) == 0
    assert len([c for c in servicer.calls[calls:] if c[2] == "OK"]) == 1
    assert read_csv(out)[f"in/{photos[0].name}"]["sha256"] != rows[f"in/{photos[0].name}"]["sha256"]


def test_a_call_past_its_deadline_is_recorded_and_the_run_goes_on(scripted, tmp_path, capsys):
    servicer, target = scripted
    photos = [write_photo(tmp_path / "in" / f"p{i}.png", seed=i, size=(40 + i, 64)) for i in range(3)]
    servicer.slow, servicer.slow_seconds = {digest(photos[1])}, 3.0
    out = tmp_path / "out"
    assert inspection.main(inspect_args([tmp_path / "in"], out, target, timeout=1.0)) == 1
    rows = read_csv(out)
    assert rows["in/p1.png"]["status"] == "unanswered" and rows["in/p1.png"]["error_code"] == "DEADLINE_EXCEEDED"
    assert rows["in/p0.png"]["status"] == rows["in/p2.png"]["status"] == "ok"
    assert "rerun the same command to retry" in capsys.readouterr().err
    servicer.slow = set()  # a rerun sends the unanswered photo again, only it
    calls = len(servicer.calls)
    assert inspection.main(inspect_args([tmp_path / "in"], out, target)) == 0
    assert len(servicer.calls) == calls + 1 and read_csv(out)["in/p1.png"]["status"] == "ok"


def test_an_unreachable_server_is_named(tmp_path, capsys, monkeypatch):
    write_photo(tmp_path / "in" / "p.png")
    args = inspect_args([tmp_path / "in"], tmp_path / "out", "127.0.0.1:1")
    monkeypatch.setattr(inspection, "CONNECT_TIMEOUT", 1.0)
    assert inspection.main(args) == 1
    assert "no segserve server answers at 127.0.0.1:1" in capsys.readouterr().err


# Ctrl-C raises KeyboardInterrupt as at a terminal, even when the suite runs in the background (which ignores
# SIGINT, and a child inherits that). Set by the child itself: a preexec_fn would run Python in a fork of this
# process, whose gRPC threads it does not have (gRPC's fork handlers then break the child).
AT_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
SEGSERVE = AT_A_TERMINAL + "import sys\nfrom segserve.cli import main\nmain(sys.argv[1:])"


def _segserve(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", SEGSERVE, "inspect", *args],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


CTRL_C_FLAG = (
    AT_A_TERMINAL
    + """
import os, signal, sys
from segserve.inspection import ctrl_c_flag

with ctrl_c_flag() as interrupted:
    os.kill(os.getpid(), signal.SIGINT)  # the first sets the flag; the code it interrupts goes on
    print("flag", interrupted.is_set(), flush=True)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        print("no raise")
    except KeyboardInterrupt:
        print("second raises", flush=True)
print("restored", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored SIGINT (a run in the background) stays ignored
with ctrl_c_flag() as interrupted:
    os.kill(os.getpid(), signal.SIGINT)
print("ignored", interrupted.is_set(), signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
"""
)


def test_ctrl_c_sets_a_flag_and_a_second_one_raises():
    """In its own process: a signal raised in the test runner's would reach the runner."""
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_FLAG],
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["flag True", "second raises", "restored True", "ignored False True"]


def test_ctrl_c_stops_cleanly_and_keeps_what_is_done(scripted, tmp_path):
    servicer, target = scripted
    servicer.delay = 0.4
    for i in range(8):
        write_photo(tmp_path / "in" / f"p{i}.png", seed=i, size=(40 + i, 64))
    out = tmp_path / "out"
    process = _segserve(str(tmp_path / "in"), *("--out", str(out), "--server", target, "--concurrency", "1"))

    def written() -> int:  # photos answered and recorded by the client, not only answered by the server
        try:
            return sum(r["status"] == "ok" for r in read_csv(out).values())
        except (OSError, KeyError, ValueError):
            return 0

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and written() < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted:" in err
    rows = read_csv(out)
    done = [n for n, r in rows.items() if r["status"] == "ok"]
    assert 2 <= len(done) < 8
    assert (out / "report.html").exists() and 'id="count-left"' in (out / "report.html").read_text()
    while servicer.in_flight:  # the call cancelled by Ctrl-C still finishes on the server
        time.sleep(0.05)
    calls = len(servicer.calls)
    process = _segserve(str(tmp_path / "in"), "--out", str(out), "--server", target)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert len(servicer.calls) - calls == 8 - len(done)  # only what was not done
    assert all(r["status"] == "ok" for r in read_csv(out).values())


# ------------------------------------------------------------------------------------ against a real server


@pytest.mark.slow
def test_a_folder_with_a_corrupt_file_a_text_file_and_a_40_megapixel_photo(live_server, chromium, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "plant"
    for i in range(4):
        write_photo(folder / ("north" if i % 2 else "") / f"pipe{i}.{'jpg' if i % 2 else 'png'}", i, (120, 160))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    (folder / "notes.txt").write_text("site notes")
    big = np.zeros((5000, 8000, 3), np.uint8)
    big[1500:3500, :, 0] = 160
    big[1500:3500, :3000, 2] = 220
    cv2.imwrite(str(folder / "big.png"), big)
    out = tmp_path / "out"
    port = live_server.grpc_target.rsplit(":", 1)[1]
    env = {"SEGSERVE_GRPC_PORT": port}  # the default address, localhost:$SEGSERVE_GRPC_PORT, as beside make serve
    process = _segserve(str(folder), "--out", str(out), env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "7 files: 6 photos to inspect" in err
    rows = read_csv(out)
    assert len(rows) == 7
    assert rows["plant/big.png"]["status"] == "ok"
    assert (rows["plant/big.png"]["width"], rows["plant/big.png"]["height"]) == ("8000", "5000")
    assert rows["plant/corrupt.jpg"]["status"] == "refused"
    assert rows["plant/corrupt.jpg"]["error_code"] == "INVALID_ARGUMENT" and rows["plant/corrupt.jpg"]["error"]
    assert rows["plant/notes.txt"]["status"] == "skipped" and "not a photo" in rows["plant/notes.txt"]["error"]
    answered = [r for r in rows.values() if r["status"] == "ok"]
    assert len(answered) == 5
    for row in answered:
        mask = cv2.imread(str(out / row["mask_file"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (int(row["height"]), int(row["width"]))
        corrosion, asset = int(row["corrosion_pixels"]), int(row["asset_pixels"])
        assert int((mask == 0).sum()) == corrosion
        assert float(row["corrosion_asset_ratio"]) == pytest.approx(corrosion / max(1, corrosion + asset))

    # the same photo through the API answers the same numbers
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        image = (folder / "pipe0.png").read_bytes()
        api = pb_grpc.SegmentationServiceStub(channel).Segment(pb.SegmentRequest(image=image), timeout=60)
    assert float(rows["plant/pipe0.png"]["corrosion_asset_ratio"]) == api.corrosion_asset_ratio
    assert int(rows["plant/pipe0.png"]["rust_grade"]) == api.rust_grade

    # a rerun does no work: nothing to send, so no server is needed
    again = _segserve(str(folder), "--out", str(out), "--server", "127.0.0.1:1")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "6 photos to inspect" not in err and "0 photos to inspect" in err
    assert read_csv(out) == rows

    report = out / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(report.as_uri())
            assert all(url == report.as_uri() or url.startswith("data:") for url in requested), requested
            queue = [r for r in answered if r["needs_review"] == "true"]
            assert page.inner_text("#count-photos") == "5" and page.inner_text("#count-failed") == "1"
            assert page.inner_text("#count-review") == str(len(queue)) and page.inner_text("#count-skipped") == "1"
            bins = page.eval_on_selector_all(
                "#ratio-histogram g.bar", "bars => bars.map(b => [+b.dataset.low, +b.dataset.count])"
            )
            assert sum(n for _, n in bins) == 5
            for low, count in bins:
                ratios = [float(r["corrosion_asset_ratio"]) for r in answered]
                assert count == sum(inspection_report.ratio_bin(x) == round(low * 10) for x in ratios)
            grades = page.eval_on_selector_all(
                "#grade-chart g.bar", "bars => bars.map(b => [+b.dataset.grade, +b.dataset.count])"
            )
            assert dict(grades) == {g: sum(int(r["rust_grade"]) == g for r in answered) for g in range(11)}
            shown = page.eval_on_selector_all(
                "#review-queue tr.photo, #other-photos tr.photo",
                "rows => rows.map(r => [r.dataset.name, r.querySelector('.ratio').innerText, "
                "r.querySelector('.image-share').innerText, r.querySelector('.grade').innerText, "
                "r.querySelector('.confidence').innerText, !!r.querySelector('img')])",
            )
            expected = inspection_report.worst_first(list(rows.values()))
            assert [name for name, *_ in shown] == [r["name"] for r in expected]
            for (name, ratio, share, grade, confidence, image), row in zip(shown, expected, strict=True):
                assert ratio == f"{100 * float(row['corrosion_asset_ratio']):.2f}%", name
                assert share == f"{100 * float(row['corrosion_fraction']):.2f}%", name
                assert grade == row["rust_grade"] and image, name
                assert confidence == f"{100 * float(row['mean_confidence']):.1f}%", name
            assert page.inner_text("#failures").count("plant/corrupt.jpg") == 1
            assert "not a photo (.txt)" in page.inner_text("#skipped")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
