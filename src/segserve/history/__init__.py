"""The inspection history: every answered Segment call kept, and read back by asset, time and review flag.

``History`` is what the edge calls: ``keep`` on the request path (an id, a timestamp and a place in the writer's
bounded queue, nothing more), ``list`` and ``get`` for ListInspections and GetInspection. Underneath,
``store.HistoryStore`` is the one interface over SQLite (the embedded default, a file under SEGSERVE_DATA_DIR)
and PostgreSQL (SEGSERVE_HISTORY_URL), ``writer.HistoryWriter`` writes off the request path, and ``migrations/``
holds the schema's Alembic revisions. ``python -m segserve.history`` migrates, backs up and expires by hand.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from segserve.errors import InvalidInput, NotReady, UnknownInspection
from segserve.history.models import MAX_ASSET_ID
from segserve.history.store import HistoryStore, Query, check_inspection_id
from segserve.history.writer import HistoryCounters, HistoryWriter, Pending, _brief

logger = logging.getLogger("segserve")
T = TypeVar("T")

# The SegmentResponse fields an inspection keeps (the mask as sent; not the colour mask or the overlay).
KEPT_FIELDS = (
    "model",
    "model_version",
    "width",
    "height",
    "mask_png",
    "coverage",
    "corrosion_asset_ratio",
    "rust_grade",
    "mean_confidence",
    "low_confidence_fraction",
    "confidence_threshold",
    "needs_review",
    "review_reasons",
    "models_agreement",
)
MAX_LABELS = 32
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256
SQLITE_FILE = "history.sqlite3"
# How long a stopping server goes on writing what is queued (counted in the Kubernetes grace period).
FLUSH_SECONDS = 5.0


def new_inspection_id() -> str:
    """A UUID version 7 (RFC 9562): its first 48 bits are the Unix time in milliseconds, so ids sort by time."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def check_tags(asset_id: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """The labels as a plain dict, or InvalidInput for an asset_id or labels outside the contract's limits."""
    _check_text("asset_id", asset_id, MAX_ASSET_ID)
    labels = dict(labels or {})
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"labels has {len(labels)} entries; at most {MAX_LABELS} are kept")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput("labels must map text to text")
        if not key:
            raise InvalidInput("a label's key must not be empty")
        _check_text(f"label key {key[:40]!r}", key, MAX_LABEL_KEY)
        _check_text(f"label {key[:40]!r}", value, MAX_LABEL_VALUE)
    return labels


def _check_text(what: str, value: str, longest: int) -> None:
    if len(value) > longest:
        raise InvalidInput(f"{what} is {len(value)} characters long; the limit is {longest}")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InvalidInput(f"{what} must not hold control characters")


def default_data_dir() -> Path:
    """``$BENTOML_HOME/segserve/data``: the data directory when SEGSERVE_DATA_DIR is not set."""
    home = os.environ.get("BENTOML_HOME")
    if not home:
        from bentoml._internal.configuration.containers import BentoMLContainer

        home = str(BentoMLContainer.bentoml_home.get())
    return Path(home) / "segserve" / "data"


def database_of(settings: Any) -> str:
    """The history's database URL: SEGSERVE_HISTORY_URL, else SQLite in the data directory."""
    if settings.history_url:
        return settings.history_url
    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"


class History:
    """The inspection history of one server: the store to read, the writer that fills it."""

    def __init__(self, store: HistoryStore, writer: HistoryWriter) -> None:
        self.store = store
        self.writer = writer

    @classmethod
    def from_settings(cls, settings: Any, telemetry: Any = None) -> History | None:
        """The history the settings ask for (None with SEGSERVE_HISTORY=off); nothing is connected yet."""
        if not settings.history:
            return None
        store = HistoryStore(database_of(settings))
        writer = HistoryWriter(
            store,
            queue_size=settings.history_queue_size,
            queue_bytes=settings.history_queue_bytes,
            max_attempts=settings.history_max_attempts,
            keep_photos=settings.history_keep_photos,
            retention_days=settings.history_retention_days,
            counters=HistoryCounters.from_telemetry(telemetry) if telemetry is not None else None,
        )
        return cls(store, writer)

    def start(self) -> None:
        """Start writing (the schema is migrated first, in the writer's thread)."""
        logger.info("history: writing to %s", self.store.description)
        self.writer.start()

    def stop(self, timeout: float = FLUSH_SECONDS) -> None:
        """Write what is queued for up to ``timeout`` seconds, stop, and close the database."""
        self.writer.stop(timeout)
        self.store.close()

    def keep(
        self, transport: str, photo: bytes, answer: Mapping[str, Any], asset_id: str, labels: dict[str, str]
    ) -> str:
        """Queue an answered Segment call; its inspection_id, or "" when the queue is full."""
        pending = Pending(
            inspection_id=new_inspection_id(),
            time=datetime.now(UTC).replace(tzinfo=None),
            transport=transport,
            photo=photo,
            asset_id=asset_id,
            labels=labels,
            answer={k: answer[k] for k in KEPT_FIELDS},
        )
        return pending.inspection_id if self.writer.submit(pending) else ""

    def list(self, query: Query) -> dict[str, Any]:
        """The ListInspectionsResponse fields for a checked query (blocking: call it off the event loop)."""
        inspections, token = self._read(lambda: self.store.list(query))
        return {"inspections": inspections, "next_page_token": token}

    def get(self, inspection_id: str) -> dict[str, Any]:
        """The GetInspectionResponse fields (blocking); UnknownInspection when it is not kept."""
        check_inspection_id(inspection_id)
        found = self._read(lambda: self.store.get(inspection_id))
        if found is None:
            raise UnknownInspection(f"no inspection {inspection_id} is kept (never written, or past its retention)")
        return {"inspection": found}

    def _read(self, read: Callable[[], T]) -> T:
        """``read()``; NotReady (UNAVAILABLE / 503, retry later) when the database cannot answer."""
        try:
            return read()
        except SQLAlchemyError as exc:
            if not self.writer.schema_ready:
                raise NotReady("the inspection history is still being set up; retry shortly", retry_after=5.0) from exc
            logger.warning("history: reading %s failed: %s", self.store.description, _brief(exc))
            raise NotReady(
                "the inspection history's database cannot be read now; retry shortly", retry_after=5.0
            ) from exc


__all__ = ["KEPT_FIELDS", "History", "HistoryStore", "HistoryWriter", "Query", "check_tags", "new_inspection_id"]
