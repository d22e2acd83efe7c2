"""``segserve inspect PATH... --out DIR``: every photo under some folders, segmented by a running server over
gRPC, into a CSV, masks, overlays and one HTML report (``segserve.inspection_report``).

The photos are the files under the paths, recursively, whose names end in .jpg, .jpeg, .png, .tif, .tiff,
.bmp or .webp (any case); any other file is listed as skipped with its reason; hidden files and folders (a name
starting with a dot) and the output folder are passed over. Each photo is read, hashed (SHA-256) and sent as a
SegmentRequest with its overlay, at most ``--concurrency`` at once, each call with a deadline of ``--timeout``
seconds. A refusal that carries the server's retry hint (``grpc-retry-pushback-ms``: RESOURCE_EXHAUSTED when
too much is in flight, UNAVAILABLE while the models load) is retried after that long, and no new photo is sent
before then; a lost connection is retried with a growing wait; at most ``--retries`` retries a photo.

Each photo gets one row in ``DIR/results.csv`` (``COLUMNS``), appended as soon as it is done, so that an
interrupted run keeps its work; a photo that fails is recorded with its error and the run goes on. Its status:

- ``ok``: answered; the class-id mask is ``DIR/masks/<name>.png``, the overlay ``DIR/overlays/<name>.jpg``;
- ``refused``: the server answered that it cannot segment the photo as it is (not an image, corrupt, over the
  size limits); a rerun does not send it again while its content is unchanged;
- ``unanswered``: no answer (the server was down, busy past the retries, or the deadline passed); a rerun
  sends it again;
- ``skipped``: not a photo (its reason in ``error``), never sent.

``<name>`` is the photo's path under the folder given, prefixed by that folder's name (``site-a/pipe/1.jpg``).
A rerun with the same ``--out`` sends only the photos without an ``ok`` or ``refused`` row of the same
content hash (and the same ``--model`` when one is given): a rerun over the same photos sends nothing and does
not need the server. Ctrl-C stops the run: calls in flight are cancelled, what is done is kept, and the CSV and
the report are written for it. Exit status: 0 when every photo was answered, refused or skipped; 1 when some
photo got no answer (rerun to retry them) or the server cannot be reached; 2 for bad arguments; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import os
import posixpath
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from segserve.architectures import ENSEMBLE, NAMES
from segserve.classes import CLASS_NAMES
from segserve.inspection_report import (
    OK,
    OVERLAYS,
    REFUSED,
    REPORT,
    SKIPPED,
    THUMBNAILS,
    UNANSWERED,
    make_thumbnail,
    write_report,
)
from segserve.settings import Settings, get_settings

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
RESULTS = "results.csv"
MASKS = "masks"
# The CSV's columns, named as the contract's fields (SegmentResponse, ClassCoverage) where there is one.
COLUMNS = (
    "name",
    "path",
    "status",
    "inspection_id",
    "asset_id",
    "sha256",
    "bytes",
    "width",
    "height",
    "model",
    "model_version",
    "corrosion_asset_ratio",
    "rust_grade",
    *(f"{c}_{k}" for c in CLASS_NAMES for k in ("pixels", "fraction")),
    "mean_confidence",
    "low_confidence_fraction",
    "needs_review",
    "review_reasons",
    "models_agreement",
    "model_seconds",
    "mask_file",
    "overlay_file",
    "error_code",
    "error",
)
# Status codes of a refusal that a rerun of the same photo cannot change (a too-large photo is
# RESOURCE_EXHAUSTED without a retry hint).
REFUSING = ("INVALID_ARGUMENT",)
MAX_BACKOFF_SECONDS = 30.0
CONNECT_TIMEOUT = 10.0  # seconds to wait for the server before giving up


class InspectError(Exception):
    """Bad arguments or an unusable output folder: the message says what to change."""


class ServerUnreachable(InspectError):
    """No server answers at the address, or it refuses to list its models."""


# ----------------------------------------------------------------------------------------------- the photos


@dataclass
class Found:
    """A file under the paths: its path as found, its name in the output, and why it is skipped (empty: a photo)."""

    path: Path
    name: str
    reason: str = ""


def _hidden(part: str) -> bool:
    return part.startswith(".") and part not in (".", "..")


def discover(paths: Sequence[str | Path], out_dir: str | Path) -> list[Found]:
    """Every file under ``paths`` (recursively, in name order), each named ``<folder name>/<path under it>``;
    files that are not photos carry their reason. InspectError for a path that does not exist."""
    out = Path(out_dir).resolve()
    found: list[Found] = []
    labels: dict[str, Path] = {}

    def label_of(root: Path) -> str:
        resolved = root.resolve()
        base = resolved.name or "root"
        label, n = base, 1
        while label in labels and labels[label] != resolved:
            n += 1
            label = f"{base}-{n}"
        labels[label] = resolved
        return label

    def add(path: Path, name: str) -> None:
        suffix = path.suffix.lower()
        reason = "" if suffix in PHOTO_SUFFIXES else f"not a photo ({suffix or 'no extension'})"
        found.append(Found(path, name, reason))

    for given in paths:
        root = Path(given)
        if not root.exists():
            raise InspectError(f"{root} does not exist")
        if root.is_file():
            add(root, f"{label_of(root.parent)}/{root.name}")
            continue
        label = label_of(root)
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not _hidden(d) and (here / d).resolve() != out)
            for file in sorted(files):
                if not _hidden(file):
                    path = here / file
                    add(path, f"{label}/{path.relative_to(root).as_posix()}")
    return found


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- the output


def read_rows(out_dir: Path) -> dict[str, dict[str, str]]:
    """The rows of ``DIR/results.csv`` by name (the last row of a name wins); empty when there is none."""
    path = out_dir / RESULTS
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "name" not in reader.fieldnames:
            raise InspectError(f"{path} is not a segserve inspect results file (no name column); choose another --out")
        return {row["name"]: {c: row.get(c) or "" for c in COLUMNS} for row in reader if row.get("name")}


def write_rows(out_dir: Path, rows: dict[str, dict[str, str]]) -> Path:
    """Rewrite ``DIR/results.csv`` with ``rows`` in name order (atomically)."""
    path = out_dir / RESULTS
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows[name] for name in sorted(rows))
    tmp.replace(path)
    return path


def output_file(out_dir: Path, folder: str, name: str, suffix: str) -> Path:
    """Where a photo's mask, overlay or thumbnail goes: ``DIR/<folder>/<name><suffix>``."""
    return out_dir / folder / f"{name}{suffix}"


def done_already(row: dict[str, str] | None, sha: str, model: str, out_dir: Path) -> bool:
    """Whether a photo's existing row stands for its content ``sha``: answered (with its files) or refused, by
    the model asked for (any, when ``model`` is empty)."""
    if row is None or row.get("sha256") != sha:
        return False
    if row["status"] == REFUSED:
        return True
    if row["status"] != OK or (model and row.get("model") != model):
        return False
    return all((out_dir / row[k]).is_file() for k in ("mask_file", "overlay_file") if row.get(k))


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))


def answer_row(found: Found, sha: str, size: int, answer: Any, out_dir: Path, asset_id: str = "") -> dict[str, str]:
    """The CSV row of an answered photo (a SegmentResponse) sent with ``asset_id``, writing its mask, overlay and
    thumbnail."""
    mask = output_file(out_dir, MASKS, found.name, ".png")
    overlay = output_file(out_dir, OVERLAYS, found.name, ".jpg")
    for path, data in ((mask, answer.mask_png), (overlay, answer.overlay_jpeg)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    make_thumbnail(answer.overlay_jpeg, output_file(out_dir, THUMBNAILS, found.name, ".jpg"), answer.width)
    row = {c: "" for c in COLUMNS}
    row.update(
        name=found.name,
        path=str(found.path),
        status=OK,
        inspection_id=answer.inspection_id,
        asset_id=asset_id,
        sha256=sha,
        bytes=str(size),
        width=str(answer.width),
        height=str(answer.height),
        model=answer.model,
        model_version=answer.model_version,
        corrosion_asset_ratio=_number(answer.corrosion_asset_ratio),
        rust_grade=str(answer.rust_grade),
        mean_confidence=_number(answer.mean_confidence),
        low_confidence_fraction=_number(answer.low_confidence_fraction),
        needs_review="true" if answer.needs_review else "false",
        review_reasons=";".join(reason_names(answer.review_reasons)),
        models_agreement=_number(answer.models_agreement) if answer.HasField("models_agreement") else "",
        model_seconds=_number(answer.model_seconds),
        mask_file=mask.relative_to(out_dir).as_posix(),
        overlay_file=overlay.relative_to(out_dir).as_posix(),
    )
    for c in answer.coverage:
        if c.name in CLASS_NAMES:
            row[f"{c.name}_pixels"] = str(c.pixels)
            row[f"{c.name}_fraction"] = _number(c.fraction)
    return row


def reason_names(reasons: Sequence[int]) -> list[str]:
    """ReviewReason values as the contract names them (``REVIEW_REASON_LOW_CONFIDENCE``)."""
    from segserve.v1 import segmentation_pb2 as pb

    return [pb.ReviewReason.Name(r) for r in reasons]


def failure_row(
    found: Found, status: str, code: str, message: str, sha: str = "", size: int | None = None
) -> dict[str, str]:
    """The CSV row of a photo that was skipped, refused or not answered."""
    row = {c: "" for c in COLUMNS}
    row.update(name=found.name, path=str(found.path), status=status, sha256=sha, error_code=code, error=message)
    if size is not None:
        row["bytes"] = str(size)
    return row


# ------------------------------------------------------------------------------------------------- Ctrl-C


@contextmanager
def ctrl_c_flag() -> Iterator[threading.Event]:
    """Within the block, Ctrl-C (SIGINT) sets the event it yields instead of raising KeyboardInterrupt
    wherever the main thread happens to be (inside gRPC's own locks, say); a second Ctrl-C raises at once.
    Where Python's own handler is not in place (SIGINT ignored, or not the main thread) nothing changes."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return

    def handle(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    signal.signal(signal.SIGINT, handle)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ------------------------------------------------------------------------------------------------ progress


class Progress:
    """Photos done, rate and time left: a rich progress bar on a terminal, else a plain line every few seconds."""

    def __init__(self, total: int, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.total, self.done, self.every = total, 0, every
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()
        self.bar = None
        if total and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("inspecting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self.task = self.bar.add_task("inspect", total=total, rate="")
            self.bar.start()

    def rate(self) -> float:
        """Photos per second so far."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """``12/194 photos, 1.9 photos/s, about 1m30s left``."""
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = f", about {_duration(left)} left" if left is not None and self.done < self.total else ""
        return f"{self.done}/{self.total} photos, {rate:.2f} photos/s{eta}"

    def advance(self, note: str = "") -> None:
        """One photo more; ``note`` is printed as a line of its own (a failure)."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=f"{self.rate():.2f} photos/s")
            if note:
                self.bar.console.print(note, markup=False, highlight=False)
            return
        if note:
            print(note, file=self.stream, flush=True)
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# ------------------------------------------------------------------------------------------------- the run


@dataclass(order=True)
class Task:
    """A photo to send: when it may be sent (a retry waits), and what is known of it."""

    ready: float
    seq: int
    found: Found = field(compare=False)
    sha: str = field(compare=False)
    size: int = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class Options:
    """What ``segserve inspect`` was asked to do."""

    paths: list[str]
    out: Path
    model: str = ""
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 8
    connect_timeout: float = 10.0
    asset_from_folder: bool = False  # each photo's asset_id: its folder, as in its name (site-a/line-7)
    history_url: str = ""  # the server's HTTP address: the report links each asset to its trend at /ui/history


@dataclass
class Outcome:
    """The end of a run: what it did and the exit status it calls for."""

    inspected: int = 0
    kept: int = 0
    refused: int = 0
    unanswered: int = 0
    skipped: int = 0
    left: int = 0
    interrupted: bool = False

    @property
    def status(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.unanswered else 0


class Inspection:
    """One run of ``segserve inspect``: send the photos that need it, record each one as soon as it is done."""

    def __init__(self, options: Options, connection: Any, log: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.connection = connection
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.rows: dict[str, dict[str, str]] = {}
        self.results: TextIO | None = None

    # -- bookkeeping

    def record(self, row: dict[str, str]) -> None:
        """Keep a row and append it to results.csv at once (a rerun after a crash reads it)."""
        self.rows[row["name"]] = row
        if self.results is not None:
            csv.DictWriter(self.results, fieldnames=COLUMNS).writerow(row)
            self.results.flush()

    def plan(self, found: list[Found]) -> tuple[list[Task], Outcome]:
        """The photos to send (the others' rows kept), and the outcome so far."""
        out = self.options.out
        previous = read_rows(out)
        outcome, tasks = Outcome(), []
        for item in found:
            if item.reason:
                self.rows[item.name] = failure_row(item, SKIPPED, "", item.reason)
                outcome.skipped += 1
                continue
            try:
                sha, size = sha256_of(item.path), item.path.stat().st_size
            except OSError as exc:
                self.rows[item.name] = failure_row(item, UNANSWERED, "UNREADABLE", f"cannot be read: {exc}")
                outcome.unanswered += 1
                continue
            if done_already(previous.get(item.name), sha, self.options.model, out):
                self.rows[item.name] = {**previous[item.name], "path": str(item.path)}
                outcome.kept += 1
                continue
            tasks.append(Task(0.0, len(tasks), item, sha, size))
        return tasks, outcome

    # -- the calls

    def check_server(self, channel: Any) -> None:
        """Wait until the server answers ListModels, and check that ``--model`` is served; InspectError if not."""
        import grpc

        from segserve.v1 import segmentation_pb2 as pb
        from segserve.v1 import segmentation_pb2_grpc as pb_grpc

        target = self.connection.target
        try:
            grpc.channel_ready_future(channel).result(timeout=self.options.connect_timeout)
        except grpc.FutureTimeoutError as exc:
            raise ServerUnreachable(
                f"no segserve server answers at {target} (start one with `make serve`, or give --server HOST:PORT"
                f"{' and the TLS options' if not self.connection.tls else ''})"
            ) from exc
        stub = pb_grpc.SegmentationServiceStub(channel)
        deadline = time.monotonic() + max(self.options.timeout, self.options.connect_timeout)
        while True:
            try:
                listed = stub.ListModels(
                    pb.ListModelsRequest(), timeout=self.options.connect_timeout, metadata=self.connection.metadata
                )
                break
            except grpc.RpcError as exc:
                from segserve.client import retry_pushback

                wait = retry_pushback(exc)
                if wait is not None and time.monotonic() + wait < deadline:  # the models are still loading
                    time.sleep(wait)
                    continue
                raise ServerUnreachable(
                    f"the server at {target} refused ListModels: {exc.code().name} {exc.details()}"
                ) from exc
        served = [m.name for m in listed.models]
        if self.options.model and self.options.model not in served:
            raise InspectError(f"the server at {target} does not serve {self.options.model!r}; it serves {served}")
        default = next((m for m in listed.models if m.is_default), None)
        chosen = self.options.model or (default.name if default else "the default model")
        version = next((m.version for m in listed.models if m.name == chosen), "")
        self.log(f"server {target}: {chosen} {version}".rstrip())

    def asset_id(self, task: Task) -> str:
        """The asset_id a photo is sent with: its folder with --asset-from-folder, else none."""
        return posixpath.dirname(task.found.name) if self.options.asset_from_folder else ""

    def send(self, stub: Any, task: Task, done: queue.Queue) -> Any:
        """Start one Segment call (a future); its completion lands in ``done``."""
        from segserve.v1 import segmentation_pb2 as pb

        image = task.found.path.read_bytes()
        request = pb.SegmentRequest(
            image=image, model=self.options.model, include_overlay=True, asset_id=self.asset_id(task)
        )
        future = stub.Segment.future(request, timeout=self.options.timeout, metadata=self.connection.metadata)
        future.add_done_callback(done.put)
        return future

    def settle(self, task: Task, future: Any) -> tuple[dict[str, str] | None, float | None]:
        """A finished call: its row, or (None, seconds to wait before retrying it)."""
        import grpc

        from segserve.client import retry_pushback

        try:
            answer = future.result()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            wait = retry_pushback(exc)
            if wait is None and code == grpc.StatusCode.UNAVAILABLE:  # no answer at all: a lost connection
                wait = min(MAX_BACKOFF_SECONDS, 2.0**task.attempts)
            if wait is not None and task.attempts < self.options.retries:
                return None, wait * (1 + 0.2 * random.random())
            refused = code.name in REFUSING or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and wait is None)
            if wait is not None:
                details = f"{details} (still refused after {task.attempts} retries)"
            status = REFUSED if refused else UNANSWERED
            return failure_row(task.found, status, code.name, details, task.sha, task.size), None
        return answer_row(task.found, task.sha, task.size, answer, self.options.out, self.asset_id(task)), None

    def run(self, found: list[Found]) -> Outcome:
        """Send what needs sending and record everything; the CSV and report are written at the end (also after
        Ctrl-C)."""
        out = self.options.out
        tasks, outcome = self.plan(found)
        self.log(
            f"{len(found)} file{'' if len(found) == 1 else 's'}: {len(tasks)} photos to inspect, {outcome.kept} "
            f"already in {out}, {outcome.skipped} skipped (not photos)"
        )
        write_rows(out, self.rows)  # the rows kept, and those of skipped files
        if tasks:
            try:
                with (out / RESULTS).open("a", newline="", encoding="utf-8") as self.results:
                    self._send_all(tasks, outcome)
            except KeyboardInterrupt:
                outcome.interrupted = True
                outcome.left = len(tasks) - outcome.inspected - outcome.refused - outcome.unanswered
            finally:
                self.results = None
        write_rows(out, self.rows)
        write_report(out, self.rows, left=outcome.left, history_url=self.options.history_url)
        return outcome

    def _send_all(self, tasks: list[Task], outcome: Outcome) -> None:
        channel = self.connection.channel()
        try:
            self.check_server(channel)
        except BaseException:
            channel.close()
            raise
        from segserve.v1 import segmentation_pb2_grpc as pb_grpc

        stub = pb_grpc.SegmentationServiceStub(channel)
        inflight: dict[Any, Task] = {}
        waiting = list(tasks)
        heapq.heapify(waiting)
        with ctrl_c_flag() as interrupted:  # also over the clean-up, which calls into gRPC
            progress = Progress(len(tasks))
            try:
                self._loop(stub, waiting, inflight, queue.Queue(), progress, outcome, interrupted)
            finally:
                for future in inflight:
                    future.cancel()
                progress.close()
                channel.close()
        if interrupted.is_set():
            raise KeyboardInterrupt

    def _loop(
        self,
        stub: Any,
        waiting: list[Task],
        inflight: dict[Any, Task],
        done: queue.Queue,
        progress: Progress,
        outcome: Outcome,
        interrupted: threading.Event,
    ) -> None:
        paused_until = 0.0
        while (waiting or inflight) and not interrupted.is_set():
            now = time.monotonic()
            while (
                waiting and len(inflight) < self.options.concurrency and waiting[0].ready <= now and paused_until <= now
            ):
                task = heapq.heappop(waiting)
                try:
                    inflight[self.send(stub, task, done)] = task
                except OSError as exc:
                    self.record(failure_row(task.found, UNANSWERED, "UNREADABLE", str(exc), task.sha, task.size))
                    outcome.unanswered += 1
                    progress.advance(f"{task.found.name}: cannot be read: {exc}")
            timeout = 1.0  # wait for a call to finish, or for the next photo that may be sent
            if waiting and len(inflight) < self.options.concurrency:
                timeout = max(0.01, min(timeout, max(waiting[0].ready, paused_until) - now))
            try:
                future = done.get(timeout=timeout)
            except queue.Empty:
                continue
            task = inflight.pop(future)
            row, wait = self.settle(task, future)
            if row is None:
                task.attempts += 1
                task.ready = time.monotonic() + (wait or 0.0)
                paused_until = max(paused_until, task.ready)  # the server asked for a pause: send nothing
                heapq.heappush(waiting, task)
                continue
            self.record(row)
            note = ""
            if row["status"] == OK:
                outcome.inspected += 1
            else:
                outcome.refused += row["status"] == REFUSED
                outcome.unanswered += row["status"] == UNANSWERED
                note = f"{task.found.name}: {row['status']}: {row['error_code']} {row['error']}".rstrip()
            progress.advance(note)


# ------------------------------------------------------------------------------------------ the command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segserve inspect``; the defaults come from the server's settings (SEGSERVE_*)."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos, or folders searched recursively")
    parser.add_argument("--out", required=True, help="output folder: results.csv, report.html, masks/, overlays/")
    parser.add_argument(
        "--server", default=None, help="the server's gRPC HOST:PORT (default: localhost:$SEGSERVE_GRPC_PORT)"
    )
    parser.add_argument("--model", default="", help=f"{', '.join(NAMES)} or {ENSEMBLE} (default: the server's default)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight at once (default 4)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each call in seconds (default 120)")
    parser.add_argument(
        "--retries", type=int, default=8, help="retries of a photo the server asks to retry later (default 8)"
    )
    parser.add_argument(
        "--token", default=None, help="bearer token (default: the first of SEGSERVE_AUTH_TOKENS / _FILE)"
    )
    parser.add_argument(
        "--tls-ca-file",
        default=None,
        help="connect with TLS, trusting this CA or server certificate (default: SEGSERVE_TLS_CERT_FILE, when set)",
    )
    parser.add_argument(
        "--asset-from-folder",
        action="store_true",
        help="send each photo's folder (site-a/line-7 for site-a/line-7/1.jpg) as its asset_id, so that the server's "
        "inspection history follows each asset",
    )
    parser.add_argument(
        "--history-url",
        default=None,
        help="the server's HTTP address, for the report's links to each asset's trend at /ui/history (default: "
        "http://HOST:$SEGSERVE_HTTP_PORT with the host of --server; 'none': no links)",
    )
    parser.add_argument("--tls-client-cert-file", default="", help="client certificate for mutual TLS (PEM)")
    parser.add_argument("--tls-client-key-file", default="", help="its private key (PEM)")


def options_from(args: argparse.Namespace) -> Options:
    """The run's options; InspectError for values that cannot work."""
    if args.concurrency < 1:
        raise InspectError("--concurrency must be at least 1")
    if args.timeout <= 0 or args.retries < 0:
        raise InspectError("--timeout must be positive and --retries at least 0")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InspectError(f"--out {out} is a file, not a folder")
    return Options(
        paths=list(args.paths),
        out=out,
        model=args.model,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        connect_timeout=CONNECT_TIMEOUT,
        asset_from_folder=getattr(args, "asset_from_folder", False),
        history_url=history_url(getattr(args, "history_url", None), args.server, get_settings()),
    )


def history_url(given: str | None, server: str | None, settings: Settings) -> str:
    """The HTTP address the report links assets to: ``given`` (``none``: no links), else the gRPC server's host on
    the HTTP port of the settings."""
    if given is not None:
        return "" if given.lower() == "none" else given.rstrip("/")
    target = server or "localhost"
    host = target.rsplit(":", 1)[0] if ":" in target.rsplit("]", 1)[-1] else target
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{settings.http_port}"


def connection_from(args: argparse.Namespace, settings: Settings) -> Any:
    """The gRPC connection of the options over the settings (``segserve.client.Connection``)."""
    from segserve.client import Connection

    connection = Connection.from_settings(
        settings,
        target=args.server,
        token=args.token,
        ca_file=args.tls_ca_file,
        cert_file=args.tls_client_cert_file,
        key_file=args.tls_client_key_file,
    )
    problems = connection.problems()
    if problems:
        raise InspectError("; ".join(problems))
    return connection


def main(args: argparse.Namespace) -> int:
    """Run ``segserve inspect`` with parsed arguments; returns the exit status (see the module's docstring)."""
    try:
        options = options_from(args)
        connection = connection_from(args, get_settings())
        found = discover(options.paths, options.out)
        options.out.mkdir(parents=True, exist_ok=True)
        outcome = Inspection(options, connection).run(found)
    except ServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except InspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = options.out
    summary = (
        f"{outcome.inspected} inspected, {outcome.kept} kept from before, {outcome.refused} refused, "
        f"{outcome.unanswered} unanswered, {outcome.skipped} skipped; {out / RESULTS}, {out / REPORT}"
    )
    if outcome.interrupted:
        summary = f"interrupted: {outcome.left} photos not inspected yet (rerun to continue); " + summary
    elif outcome.unanswered:
        summary += " (rerun the same command to retry the unanswered photos)"
    print(summary, file=sys.stderr)
    return outcome.status
