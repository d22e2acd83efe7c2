"""The inspection history's store: one interface over SQLite (embedded) and PostgreSQL (by URL), with SQLAlchemy.

``HistoryStore(url)`` writes batches of ``Record``s in one transaction, lists them newest first with keyset
paging (``Query``, page tokens), reads one back with its images, deletes by age, and migrates its schema with
Alembic (``upgrade``). It raises SQLAlchemy's errors as they come: the writer (``segserve.history.writer``)
retries them and the facade (``segserve.history``) turns them into statuses.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, delete, event, exists, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from segserve.errors import InvalidInput
from segserve.history.models import blobs, inspections, metadata

logger = logging.getLogger("segserve")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Where two replicas start at once against one PostgreSQL database, one migrates and the other waits.
_MIGRATION_LOCK = 0x5E65E7  # pg_advisory_xact_lock key
# Alembic keeps its running environment in module globals: one migration at a time in a process.
_ALEMBIC = threading.Lock()
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_FLOAT_FIELDS = ("mean_confidence", "low_confidence_fraction", "confidence_threshold")
# The columns ListInspections answers with (the images stay in blobs).
_SUMMARY = [c for c in inspections.c if c.name not in ("mask_sha256", "overlay_sha256")]


@dataclass(frozen=True)
class Blob:
    """An image for the blobs table, content-addressed."""

    data: bytes
    media_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Record:
    """One inspection ready to be written: its row in ``inspections`` and its images."""

    row: dict[str, Any]
    mask: Blob
    overlay: Blob | None = None
    photo: Blob | None = None

    @property
    def size(self) -> int:
        """Bytes of its images."""
        return sum(len(b.data) for b in (self.mask, self.overlay, self.photo) if b is not None)


@dataclass(frozen=True)
class Query:
    """A ListInspections request, checked: filters, page size and where the page starts."""

    asset_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    needs_review: bool | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    after: tuple[datetime, str] | None = field(default=None, compare=False)

    @classmethod
    def parse(
        cls,
        asset_id: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        needs_review: bool | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Query:
        """The query a request asks for; InvalidInput for a page size out of range, times out of order or a page
        token this server did not issue for these filters."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInput(f"page_size must be 1-{MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE}), not {page_size}")
        start, end = _utc(start_time), _utc(end_time)
        if start is not None and end is not None and end <= start:
            raise InvalidInput(f"end_time {end.isoformat()} is not after start_time {start.isoformat()}")
        query = cls(asset_id, start, end, needs_review, page_size or DEFAULT_PAGE_SIZE)
        if page_token:
            return cls(**{**query.__dict__, "after": query._decode(page_token)})
        return query

    def _filters(self) -> str:
        """A digest of the filters, carried by the page token so that a token is used with its own filters."""
        parts = [self.asset_id, _iso(self.start_time), _iso(self.end_time), str(self.needs_review)]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def token(self, created_at: datetime, inspection_id: str) -> str:
        """The page token of the page after the inspection (created_at, inspection_id)."""
        body = {"t": created_at.isoformat(), "i": inspection_id, "f": self._filters()}
        return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")

    def _decode(self, token: str) -> tuple[datetime, str]:
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            when, inspection_id, filters = datetime.fromisoformat(body["t"]), str(body["i"]), body["f"]
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("page_token is not one this server issued: pass next_page_token as it came") from exc
        if filters != self._filters():
            raise InvalidInput("page_token belongs to other filters: keep the filters of its first page")
        return when, inspection_id


def _utc(value: datetime | None) -> datetime | None:
    """A time as naive UTC (how the store keeps times); a naive time is taken as UTC."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def database_url(url: str) -> str:
    """The SQLAlchemy URL of SEGSERVE_HISTORY_URL: postgresql:// and postgres:// use psycopg (version 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def check_inspection_id(inspection_id: str) -> str:
    """The id as sent, or InvalidInput when it cannot be an inspection_id."""
    if not _UUID.match(inspection_id or ""):
        raise InvalidInput(f"inspection_id must be an inspection_id a Segment answer carried, not {inspection_id!r}")
    return inspection_id


class HistoryStore:
    """The inspections and their images in one SQL database, SQLite or PostgreSQL.

    url: an SQLAlchemy URL (``sqlite:////path/history.sqlite3``, ``postgresql://user:password@host/db``).
    """

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        url = database_url(url)
        if url.startswith("sqlite"):
            path = sqlite_path(url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # the writer's attempts will fail, be counted and logged: never the answers
                    logger.error("history: cannot create %s: %s", path.parent, exc)
            self.engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql"):
            self.engine = create_engine(
                url, pool_pre_ping=True, pool_size=2, max_overflow=4, connect_args={"connect_timeout": connect_timeout}
            )
        else:
            raise ValueError(f"the history's database must be SQLite or PostgreSQL, not {url.split(':', 1)[0]}")
        self.dialect = self.engine.dialect.name

    @property
    def description(self) -> str:
        """The database, its password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ schema

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` with the package's Alembic migrations (an empty database too)."""
        migrate(self.engine, "upgrade", revision)

    def revision(self) -> str | None:
        """The schema's Alembic revision (None: no schema yet)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    # ------------------------------------------------------------------------------------------------ writes

    def write(self, records: list[Record]) -> None:
        """Insert inspections and their images in one transaction. Idempotent: an inspection already there (a
        retry of a write whose commit was not acknowledged) is left as it is; an image already there is shared."""
        if not records:
            return
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        used_at = max(r.row["created_at"] for r in records)
        images: dict[str, dict[str, Any]] = {}
        for record in records:
            for blob in (record.mask, record.overlay, record.photo):
                if blob is not None:
                    images[blob.sha256] = {
                        "sha256": blob.sha256,
                        "media_type": blob.media_type,
                        "size": len(blob.data),
                        "data": blob.data,
                        "used_at": used_at,
                    }
        blob_insert = insert(blobs)
        blob_insert = blob_insert.on_conflict_do_update(
            index_elements=[blobs.c.sha256], set_={"used_at": blob_insert.excluded.used_at}
        )
        rows = [r.row for r in records]
        with self.engine.begin() as connection:
            connection.execute(blob_insert, list(images.values()))
            connection.execute(insert(inspections).on_conflict_do_nothing(index_elements=[inspections.c.id]), rows)

    def delete_older_than(self, cutoff: datetime) -> int:
        """Delete the inspections before ``cutoff`` and the images no inspection refers to any more (unused since
        the cutoff); returns the inspections deleted."""
        cutoff = _utc(cutoff)
        referred = or_(
            exists().where(inspections.c.mask_sha256 == blobs.c.sha256),
            exists().where(inspections.c.overlay_sha256 == blobs.c.sha256),
            exists().where(and_(inspections.c.photo_kept, inspections.c.photo_sha256 == blobs.c.sha256)),
        )
        with self.engine.begin() as connection:
            deleted = connection.execute(delete(inspections).where(inspections.c.created_at < cutoff)).rowcount
            connection.execute(delete(blobs).where(blobs.c.used_at < cutoff, ~referred))
        return int(deleted or 0)

    # ------------------------------------------------------------------------------------------------- reads

    def list(self, query: Query) -> tuple[list[dict[str, Any]], str]:
        """One page of inspections (their fields, without images), newest first, and the next page's token
        (empty on the last page)."""
        c = inspections.c
        conditions = []
        if query.asset_id:
            conditions.append(c.asset_id == query.asset_id)
        if query.start_time is not None:
            conditions.append(c.created_at >= query.start_time)
        if query.end_time is not None:
            conditions.append(c.created_at < query.end_time)
        if query.needs_review is not None:
            conditions.append(c.needs_review == query.needs_review)
        if query.after is not None:
            when, last = query.after
            conditions.append(or_(c.created_at < when, and_(c.created_at == when, c.id < last)))
        statement = (
            select(*_SUMMARY).where(*conditions).order_by(c.created_at.desc(), c.id.desc()).limit(query.page_size + 1)
        )
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(statement)]
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        token = query.token(rows[-1]["created_at"], rows[-1]["id"]) if more else ""
        return [inspection_fields(r) for r in rows], token

    def get(self, inspection_id: str) -> dict[str, Any] | None:
        """One inspection's fields with its images (mask_png, overlay_jpeg, photo where kept); None if absent."""
        with self.engine.connect() as connection:
            row = connection.execute(select(inspections).where(inspections.c.id == inspection_id)).first()
            if row is None:
                return None
            row = dict(row._mapping)
            wanted = [row["mask_sha256"], row["overlay_sha256"], row["photo_sha256"] if row["photo_kept"] else None]
            keys = [k for k in wanted if k]
            found = dict(connection.execute(select(blobs.c.sha256, blobs.c.data).where(blobs.c.sha256.in_(keys))).all())
        answer = inspection_fields(row)
        answer["mask_png"] = bytes(found.get(row["mask_sha256"], b""))
        answer["overlay_jpeg"] = bytes(found.get(row["overlay_sha256"] or "", b""))
        answer["photo"] = bytes(found.get(row["photo_sha256"], b"")) if row["photo_kept"] else b""
        return answer

    def count(self) -> int:
        """The inspections held."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(inspections)).scalar_one())


def inspection_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``inspections`` as the Inspection message's fields (times as aware UTC datetimes, NaN restored)."""
    answer = {k: v for k, v in row.items() if k not in ("id", "created_at", "mask_sha256", "overlay_sha256")}
    answer["inspection_id"] = row["id"]
    answer["time"] = row["created_at"].replace(tzinfo=UTC)
    for name in _FLOAT_FIELDS:
        answer[name] = math.nan if answer[name] is None else float(answer[name])
    answer["coverage"] = [
        {**c, "mean_confidence": math.nan if c.get("mean_confidence") is None else c["mean_confidence"]}
        for c in row["coverage"]
    ]
    answer["labels"] = dict(row["labels"] or {})
    answer["review_reasons"] = list(row["review_reasons"] or [])
    return answer


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: reads go on while the writer writes; NORMAL sync is durable across a crash of the process."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine, direction: str, revision: str) -> None:
    """Run the package's Alembic migrations ``direction`` ("upgrade" or "downgrade") to ``revision`` on ``engine``,
    one at a time in this process and, on PostgreSQL, under an advisory lock, so that replicas starting together
    migrate one after the other."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _ALEMBIC, _file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """For an SQLite file, an exclusive lock on ``<file>.migrate-lock`` (entry workers of one server take turns)."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None:
        yield
        return
    import fcntl

    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(database_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


__all__ = ["Blob", "HistoryStore", "Query", "Record", "metadata", "migrate", "sqlite_path"]
