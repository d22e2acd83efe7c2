"""The history's writer: answers go into a bounded queue on the request path and into the database from a thread.

``HistoryWriter.submit`` is all the request path does: it appends a ``Pending`` (references to the photo's and
the mask's bytes, and the answer's figures) to a queue bounded by count and by bytes, or, when the queue is
full, counts the answer as dropped and returns False at once. The writer's thread, at a lower CPU priority than
serving, hashes the photo, makes the overlay thumbnail, and writes batches in one transaction each. A batch the
database refuses (down, slow past its timeouts, locked) is retried with a growing pause, up to ``max_attempts``,
then counted as dropped; every failed attempt is counted in ``segserve_history_write_failures_total`` and logged.
Nothing is dropped without being counted and logged. The thread also migrates the schema before the first
write (retrying the same way while the database is unreachable) and, with a retention, deletes old inspections
hourly.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np

from segserve import imaging
from segserve.history.store import Blob, HistoryStore, Record

logger = logging.getLogger("segserve")

THUMBNAIL_SIDE = 320
BATCH_RECORDS = 32
BATCH_BYTES = 16 * 1024 * 1024
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 60.0
RETENTION_EVERY_SECONDS = 3600.0
_MEDIA_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"BM": "image/bmp"}


@dataclass(frozen=True)
class Pending:
    """An answered Segment call waiting to be written: what the request path hands over, nothing computed."""

    inspection_id: str
    time: datetime  # naive UTC
    transport: str
    photo: bytes
    asset_id: str
    labels: dict[str, str]
    answer: dict[str, Any]  # the answer's kept fields (segserve.history.KEPT_FIELDS), mask_png among them

    @property
    def size(self) -> int:
        """Bytes it holds in memory (the photo and the mask)."""
        return len(self.photo) + len(self.answer["mask_png"])


def media_type(data: bytes) -> str:
    """The MIME type of an encoded photo, from its first bytes."""
    for magic, kind in _MEDIA_TYPES.items():
        if data.startswith(magic):
            return kind
    return "image/tiff" if data[:4] in (b"II*\x00", b"MM\x00*") else "application/octet-stream"


def overlay_thumbnail(photo: bytes, mask_png: bytes, width: int, height: int, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of the photo with its colour mask blended over it, at most ``side`` pixels a side.

    A JPEG is decoded at a half, quarter or eighth of its size where that still leaves ``side`` pixels (OpenCV's
    reduced decoding, several times cheaper than the full one).
    """
    reduction = next((f for f in (8, 4, 2) if max(width, height) // f >= side), 1)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    bgr = cv2.imdecode(np.frombuffer(photo, np.uint8), flags.get(reduction, cv2.IMREAD_REDUCED_COLOR_8))
    mask = cv2.imdecode(np.frombuffer(mask_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if bgr is None or mask is None or mask.ndim != 2:
        raise ValueError("the photo or its mask could not be decoded")
    scale = side / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.resize(mask, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return imaging.encode_jpeg(imaging.overlay(rgb, small), quality=80)


def prepare(pending: Pending, keep_photo: bool) -> Record:
    """The record of a pending inspection: the photo's hash, the thumbnail, the row."""
    answer = pending.answer
    try:
        thumbnail = overlay_thumbnail(pending.photo, answer["mask_png"], answer["width"], answer["height"])
    except (ValueError, cv2.error) as exc:
        logger.warning("history: no overlay thumbnail for inspection %s: %s", pending.inspection_id, exc)
        thumbnail = None
    photo = Blob(pending.photo, media_type(pending.photo)) if keep_photo else None
    coverage = [
        {
            "class_id": int(c["class_id"]),
            "name": str(c["name"]),
            "pixels": int(c["pixels"]),
            "fraction": float(c["fraction"]),
            "mean_confidence": _number(c["mean_confidence"]),
        }
        for c in answer["coverage"]
    ]
    row = {
        "id": pending.inspection_id,
        "created_at": pending.time,
        "transport": pending.transport,
        "asset_id": pending.asset_id,
        "labels": pending.labels,
        "photo_sha256": hashlib.sha256(pending.photo).hexdigest(),
        "photo_bytes": len(pending.photo),
        "photo_kept": keep_photo,
        "model": str(answer["model"]),
        "model_version": str(answer["model_version"]),
        "width": int(answer["width"]),
        "height": int(answer["height"]),
        "corrosion_asset_ratio": float(answer["corrosion_asset_ratio"]),
        "rust_grade": int(answer["rust_grade"]),
        "coverage": coverage,
        "mean_confidence": _number(answer["mean_confidence"]),
        "low_confidence_fraction": _number(answer["low_confidence_fraction"]),
        "confidence_threshold": _number(answer["confidence_threshold"]),
        "needs_review": bool(answer["needs_review"]),
        "review_reasons": [str(r) for r in answer["review_reasons"]],
        "models_agreement": _number(answer["models_agreement"]),
    }
    mask = Blob(answer["mask_png"], "image/png")
    overlay = Blob(thumbnail, "image/jpeg") if thumbnail else None
    row["mask_sha256"] = mask.sha256
    row["overlay_sha256"] = overlay.sha256 if overlay else None
    return Record(row, mask, overlay, photo)


class HistoryWriter:
    """A bounded queue of answers and the thread that writes them to a HistoryStore.

    counters: ``written(n)``, ``failed()``, ``dropped(reason, n)`` and ``queued(n)`` (segserve.telemetry's history
    metrics in the server); pauses: the first and longest pause between attempts, in seconds.
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        queue_size: int = 256,
        queue_bytes: int = 256 * 1024 * 1024,
        max_attempts: int = 12,
        keep_photos: bool = False,
        retention_days: int = 0,
        counters: HistoryCounters | None = None,
        pauses: tuple[float, float] = (FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS),
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_attempts = max_attempts
        self.keep_photos = keep_photos
        self.retention_days = retention_days
        self.counters = counters or HistoryCounters()
        self.pauses = pauses
        self._schema = threading.Event()
        self._queue: collections.deque[Pending] = collections.deque()
        self._bytes = 0
        self._busy = 0  # records taken from the queue and not yet written or dropped
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._full_logged = 0.0

    # ------------------------------------------------------------------------------------ the request path

    def submit(self, pending: Pending) -> bool:
        """Queue an answer for writing; False (and counted as dropped) when the queue is full or stopped."""
        size = pending.size
        with self._lock:
            full = len(self._queue) >= self.queue_size or (self._queue and self._bytes + size > self.queue_bytes)
            if not full and not self._stop.is_set():
                self._queue.append(pending)
                self._bytes += size
                self.counters.queued(len(self._queue))
                self._lock.notify()
                return True
        if self._stop.is_set():  # the server is stopping: the writer takes no more
            self.counters.dropped("shutdown", 1)
            return False
        self.counters.dropped("queue_full", 1)
        now = time.monotonic()
        if now - self._full_logged > 60:  # one line a minute, the counter has the number
            self._full_logged = now
            logger.warning(
                "history: the write queue is full (%d answers, %d bytes); answers are served but not kept",
                len(self._queue),
                self._bytes,
            )
        return False

    # ------------------------------------------------------------------------------------------ the thread

    def start(self) -> None:
        """Start the writing thread."""
        self._thread = threading.Thread(target=self._run, name="segserve-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued for up to ``timeout`` seconds, then stop; what is left is counted as dropped."""
        with self._lock:
            self._deadline = time.monotonic() + timeout
            self._stop.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 5)
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self._bytes = 0
        if left:
            self.counters.dropped("shutdown", left)
            logger.error("history: %d answers were still queued at shutdown and are not kept", left)

    @property
    def schema_ready(self) -> bool:
        """Whether the schema has been migrated (reads before it answer UNAVAILABLE)."""
        return self._schema.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the schema has been migrated; True if it got there in time."""
        return self._schema.wait(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being written (tests, shutdown); True if it got there in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        _lower_priority()
        next_retention = time.monotonic()
        self._attempt(self._ensure_schema, "migrating the schema")
        while True:
            batch = self._take(next_retention)
            if batch is None:
                break
            if batch:
                self._write(batch)
            if self.retention_days and time.monotonic() >= next_retention and not self._stop.is_set():
                next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
                self._expire()

    def _take(self, next_retention: float) -> list[Pending] | None:
        """The next batch (up to BATCH_RECORDS and about BATCH_BYTES); [] when it is time for retention; None once
        stopping with nothing queued."""
        with self._lock:
            if self._stop.is_set() and time.monotonic() > (self._deadline or 0):
                return None  # past the shutdown deadline: stop() counts what is left
            while not self._queue:
                if self._stop.is_set():
                    return None
                wait = next_retention - time.monotonic() if self.retention_days else None
                if wait is not None and wait <= 0:
                    return []
                self._lock.wait(wait)
            batch, size = [], 0
            while self._queue and len(batch) < BATCH_RECORDS and (not batch or size < BATCH_BYTES):
                item = self._queue.popleft()
                batch.append(item)
                size += item.size
            self._bytes -= size
            self._busy = len(batch)
            self.counters.queued(len(self._queue))
            return batch

    def _write(self, batch: list[Pending]) -> None:
        try:
            records = [prepare(p, self.keep_photos) for p in batch]
        except Exception:  # a bug: never let it stop the thread
            logger.exception("history: could not prepare %d inspections", len(batch))
            self.counters.dropped("invalid", len(batch))
            self._done()
            return

        def write() -> None:
            self._ensure_schema()
            self.store.write(records)

        if self._attempt(write, f"writing {len(records)} inspections"):
            self.counters.written(len(records))
        else:
            reason = "shutdown" if self._stop.is_set() else "retries_exhausted"
            self.counters.dropped(reason, len(records))
            logger.error("history: %d inspections are not kept (%s)", len(records), reason.replace("_", " "))
        self._done()

    def _done(self) -> None:
        with self._lock:
            self._busy = 0
            self._lock.notify_all()

    def _ensure_schema(self) -> None:
        if not self.schema_ready:
            self.store.upgrade()
            self._schema.set()
            logger.info("history: keeping inspections in %s", self.store.description)

    def _attempt(self, action: Callable[[], None], what: str) -> bool:
        """Run ``action`` until it succeeds, up to max_attempts with growing pauses; every failure is counted and
        logged. False when it gave up, or when stopping and the shutdown deadline has passed."""
        pause, longest = self.pauses
        for attempt in range(1, self.max_attempts + 1):
            try:
                action()
                return True
            except Exception as exc:
                self.counters.failed()
                logger.warning(
                    "history: %s failed (attempt %d of %d): %s", what, attempt, self.max_attempts, _brief(exc)
                )
            if attempt == self.max_attempts:
                return False
            if self._stop.is_set():  # shutting down: keep trying only until the shutdown deadline
                left = (self._deadline or 0) - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(pause, left))
            else:
                self._stop.wait(pause)
            pause = min(pause * 2, longest)
        return False

    def _expire(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        try:
            deleted = self.store.delete_older_than(cutoff)
        except Exception as exc:
            logger.warning("history: deleting inspections older than %d days failed: %s", self.retention_days, exc)
            return
        if deleted:
            logger.info("history: deleted %d inspections older than %d days", deleted, self.retention_days)


class HistoryCounters:
    """What the writer counts; the server's are segserve.telemetry's history metrics (``from_telemetry``)."""

    def __init__(
        self,
        written: Callable[[int], None] = lambda n: None,
        failed: Callable[[], None] = lambda: None,
        dropped: Callable[[str, int], None] = lambda reason, n: None,
        queued: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.written, self.failed, self.dropped, self.queued = written, failed, dropped, queued

    @classmethod
    def from_telemetry(cls, telemetry: Any) -> HistoryCounters:
        """Counters that feed the service's Prometheus metrics."""
        return cls(
            written=telemetry.history_written.inc,
            failed=telemetry.history_write_failures.inc,
            dropped=lambda reason, n: telemetry.history_dropped.labels(reason=reason).inc(n),
            queued=telemetry.history_queued.set,
        )


def _number(value: Any) -> float | None:
    """A float for the database; None for None or NaN (JSON and SQLite have no NaN; reads turn None back)."""
    return None if value is None or math.isnan(value) else float(value)


def _brief(exc: Exception) -> str:
    """An exception in one line (SQLAlchemy's carry the statement and its parameters: the first line only)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _lower_priority() -> None:
    """Give this thread a lower CPU priority (Linux: niceness is per thread), so that serving comes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
