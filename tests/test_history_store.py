"""The inspection history's store on SQLite and on a real PostgreSQL server: migrations (from an empty database
and from the previous revision), writes read back, paging, filters, the mask round trip and retention.

PostgreSQL is Debian's ``postgresql`` package (``make postgres-tools`` installs it where it is missing, as the
suite installs Prometheus); the ``postgres`` fixture starts a private server in a temporary folder with
``initdb`` and ``pg_ctl`` (as the ``postgres`` user when the suite runs as root) and stops it afterwards. Where
the package cannot be installed, the PostgreSQL cases are skipped with the reason printed.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from segserve.errors import InvalidInput
from segserve.history import new_inspection_id
from segserve.history.store import Blob, HistoryStore, Query, Record, database_url, migrate
from tests.servers import ROOT, free_port

T0 = datetime(2026, 3, 1, 12, 0, 0)


# --- a private PostgreSQL server ------------------------------------------------------------------------------


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl (Debian: /usr/lib/postgresql/<version>/bin), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]), reverse=True)
    return Path(found[0]).parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL server of the suite's own, on a free loopback port, trusting local connections."""

    bin: Path
    data: Path
    port: int
    prefix: list[str]  # runs the server's commands as its owner

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = self.command(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                            str(self.data / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
        assert done.returncode == 0, f"pg_ctl start failed: {done.stdout}{done.stderr}"

    def stop(self) -> None:
        self.command(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://segserve@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(database_url(self.url()), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)


def skip_printed(reason: str) -> None:
    """Skip, and print why on the terminal (skips are otherwise quiet under -q)."""
    print(f"\nSKIPPED (PostgreSQL): {reason}", file=sys.__stderr__)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session; `make postgres-tools` installs Debian's postgresql where missing."""
    binaries = postgres_binaries()
    if binaries is None:
        done = subprocess.run(["make", "postgres-tools"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        binaries = postgres_binaries()
        if binaries is None:
            skip_printed(
                f"PostgreSQL is not installed and `make postgres-tools` could not install it (exit {done.returncode}):"
                f" {(done.stdout + done.stderr)[-500:]}"
            )
    root = Path(tempfile.mkdtemp(prefix="segserve-postgres-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own user runs it
        if shutil.which("runuser") is None:
            skip_printed("running as root and runuser is missing: cannot start PostgreSQL as another user")
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(binaries, root / "data", free_port(), prefix)
    done = server.command(str(binaries / "initdb"), "-D", str(server.data), "-U", "segserve", "--auth=trust",
                          "-E", "UTF8", "--no-sync")  # fmt: skip
    if done.returncode != 0:
        skip_printed(f"initdb failed: {done.stdout}{done.stderr}")
    server.start()
    try:
        yield server
    finally:
        server.command(str(binaries / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request, tmp_path) -> str:
    """An empty database's URL: an SQLite file, or a fresh database on the suite's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(database) -> Iterator[HistoryStore]:
    """A migrated store over ``database``."""
    store = HistoryStore(database)
    store.upgrade()
    yield store
    store.close()


# --- records --------------------------------------------------------------------------------------------------


def mask_png(seed: int) -> bytes:
    import cv2
    import numpy as np

    mask = np.random.default_rng(seed).integers(0, 3, (12, 16), dtype=np.uint8)
    return cv2.imencode(".png", mask)[1].tobytes()


def record(
    when: datetime,
    asset: str = "pipe-1",
    ratio: float = 0.25,
    review: bool = False,
    mask: bytes | None = None,
    photo: bytes | None = None,
    inspection_id: str | None = None,
) -> Record:
    """A record as the writer makes it (segserve.history.writer.prepare), with chosen figures."""
    mask = mask if mask is not None else mask_png(int(ratio * 1000))
    overlay = Blob(b"\xff\xd8\xff thumbnail of " + mask, "image/jpeg")
    row = {
        "id": inspection_id or new_inspection_id(),
        "created_at": when,
        "transport": "grpc",
        "asset_id": asset,
        "labels": {"campaign": "spring", "camera": "drone-2"},
        "photo_sha256": hashlib.sha256(photo or b"photo").hexdigest(),
        "photo_bytes": len(photo or b"photo"),
        "photo_kept": photo is not None,
        "model": "deeplabv3plus",
        "model_version": "v1",
        "width": 16,
        "height": 12,
        "corrosion_asset_ratio": ratio,
        "rust_grade": 3,
        "coverage": [
            {"class_id": 0, "name": "corrosion", "pixels": 10, "fraction": 0.1, "mean_confidence": 0.8},
            {"class_id": 1, "name": "asset", "pixels": 30, "fraction": 0.3, "mean_confidence": 0.9},
            {"class_id": 2, "name": "background", "pixels": 0, "fraction": 0.0, "mean_confidence": None},
        ],
        "mean_confidence": 0.85,
        "low_confidence_fraction": 0.125,
        "confidence_threshold": 0.6,
        "needs_review": review,
        "review_reasons": ["REVIEW_REASON_LOW_CONFIDENCE"] if review else [],
        "models_agreement": None,
        "mask_sha256": hashlib.sha256(mask).hexdigest(),
        "overlay_sha256": overlay.sha256,
    }
    kept = Blob(photo, "image/png") if photo is not None else None
    return Record(row, Blob(mask, "image/png"), overlay, kept)


# --- migrations -----------------------------------------------------------------------------------------------


def test_migrations_from_an_empty_database_match_the_models(database):
    """`upgrade` on an empty database reaches the newest revision, and the tables it makes are the models' tables
    (Alembic's own comparison finds no difference)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from segserve.history.models import metadata

    store = HistoryStore(database)
    try:
        assert store.revision() is None
        store.upgrade()
        assert store.revision() == "0002"
        store.upgrade()  # again: nothing to do
        with store.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
    finally:
        store.close()


def test_migration_from_the_previous_revision_keeps_the_rows(database):
    """A database at revision 0001 holding an inspection, as the first schema wrote it, is upgraded in place: the
    inspection reads back, and a downgrade and upgrade again leave it too."""
    store = HistoryStore(database)
    try:
        migrate(store.engine, "upgrade", "0001")
        assert store.revision() == "0001"
        kept = record(T0, ratio=0.4)
        store.write([kept])
        store.upgrade()
        assert store.revision() == "0002"
        (found,), _ = store.list(Query.parse(asset_id="pipe-1"))
        assert found["inspection_id"] == kept.row["id"] and found["corrosion_asset_ratio"] == 0.4
        migrate(store.engine, "downgrade", "0001")
        store.upgrade()
        assert store.get(kept.row["id"])["mask_png"] == kept.mask.data
    finally:
        store.close()


# --- writes and reads -----------------------------------------------------------------------------------------


def test_a_record_reads_back_with_its_mask_and_figures(store):
    kept = record(T0, ratio=0.123456789012345, review=True, photo=b"\x89PNG the photo")
    store.write([kept])
    got = store.get(kept.row["id"])
    assert got["mask_png"] == kept.mask.data  # byte for byte
    assert got["overlay_jpeg"] == kept.overlay.data
    assert got["photo"] == b"\x89PNG the photo" and got["photo_kept"]
    assert got["corrosion_asset_ratio"] == 0.123456789012345  # a double, exactly
    assert got["time"] == T0.replace(tzinfo=UTC)
    assert got["labels"] == {"campaign": "spring", "camera": "drone-2"}
    assert got["review_reasons"] == ["REVIEW_REASON_LOW_CONFIDENCE"] and got["needs_review"]
    assert math.isnan(got["coverage"][2]["mean_confidence"]) and got["coverage"][1]["mean_confidence"] == 0.9
    assert got["models_agreement"] is None and got["mean_confidence"] == 0.85
    assert store.get(new_inspection_id()) is None


def test_writes_are_idempotent_and_images_are_stored_once(store):
    """A retried batch (its first commit unacknowledged) adds nothing; two inspections with the same mask share
    one stored image; an inspection without a kept photo stores none."""
    shared = mask_png(7)
    first, second = record(T0, mask=shared), record(T0 + timedelta(seconds=1), mask=shared)
    store.write([first, second])
    store.write([first, second])
    assert store.count() == 2
    with store.engine.connect() as connection:
        assert (
            connection.execute(text("SELECT count(*) FROM blobs")).scalar_one() == 2
        )  # the mask and the thumbnail, each once
    assert store.get(first.row["id"])["photo"] == b""


def test_paging_is_newest_first_without_gaps_or_repeats(store):
    records = [record(T0 + timedelta(minutes=k), ratio=k / 100) for k in range(7)]
    records.append(record(T0 + timedelta(minutes=3), ratio=0.5))  # the same time as another: ordered by id
    store.write(records)
    seen, token, pages = [], "", 0
    while True:
        page, token = store.list(Query.parse(asset_id="pipe-1", page_size=3, page_token=token))
        seen += page
        pages += 1
        if not token:
            break
    assert pages == 3 and [len(p) for p in (seen,)] == [8]
    assert len({i["inspection_id"] for i in seen}) == 8
    keys = [(i["time"], i["inspection_id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)


def test_filters_by_asset_time_and_review(store):
    store.write(
        [
            record(T0, asset="pipe-1", review=False),
            record(T0 + timedelta(days=1), asset="pipe-1", review=True),
            record(T0 + timedelta(days=2), asset="pipe-2", review=True),
            record(T0 + timedelta(days=3), asset="", review=False),
        ]
    )

    def listed(**filters) -> list[tuple[str, int]]:
        page, _ = store.list(Query.parse(**filters))
        return [(i["asset_id"], i["time"].day) for i in page]

    assert listed(asset_id="pipe-1") == [("pipe-1", 2), ("pipe-1", 1)]
    assert listed(needs_review=True) == [("pipe-2", 3), ("pipe-1", 2)]
    assert listed(needs_review=False) == [("", 4), ("pipe-1", 1)]
    start, end = (T0 + timedelta(days=1)).replace(tzinfo=UTC), (T0 + timedelta(days=3)).replace(tzinfo=UTC)
    assert listed(start_time=start, end_time=end) == [("pipe-2", 3), ("pipe-1", 2)]  # start inclusive, end not
    assert listed(asset_id="pipe-1", needs_review=True, start_time=start) == [("pipe-1", 2)]
    assert listed(asset_id="nothing") == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"start_time": T0, "end_time": T0}, "end_time"),
        ({"page_token": "not a token"}, "page_token"),
        ({"page_token": "eyJ0IjoxfQ"}, "page_token"),  # {"t":1}
    ],
)
def test_bad_queries_are_invalid_input(filters, message):
    with pytest.raises(InvalidInput, match=message):
        Query.parse(**filters)


def test_a_page_token_is_bound_to_its_filters(store):
    store.write([record(T0 + timedelta(minutes=k)) for k in range(3)])
    _, token = store.list(Query.parse(asset_id="pipe-1", page_size=1))
    assert token
    with pytest.raises(InvalidInput, match="other filters"):
        Query.parse(asset_id="pipe-2", page_size=1, page_token=token)
    page, _ = store.list(Query.parse(asset_id="pipe-1", page_size=5, page_token=token))
    assert len(page) == 2


def test_retention_deletes_old_inspections_and_their_images_only(store):
    shared = mask_png(11)
    old = record(T0 - timedelta(days=40), mask=mask_png(12), photo=b"old photo")
    old_shared = record(T0 - timedelta(days=40), mask=shared)
    new = record(T0, mask=shared)
    store.write([old, old_shared])
    store.write([new])
    deleted = store.delete_older_than((T0 - timedelta(days=30)).replace(tzinfo=UTC))
    assert deleted == 2 and store.count() == 1
    assert store.get(old.row["id"]) is None
    assert store.get(new.row["id"])["mask_png"] == shared  # the shared mask stays
    with store.engine.connect() as connection:
        hashes = set(connection.execute(text("SELECT sha256 FROM blobs")).scalars())
    assert hashes == {new.mask.sha256, new.overlay.sha256}


def test_the_store_refuses_other_databases():
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        HistoryStore("mysql://user@host/db")
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_backup_copies_a_consistent_sqlite_file(tmp_path):
    from segserve.history.__main__ import main

    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    store = HistoryStore(url)
    store.upgrade()
    kept = record(T0)
    store.write([kept])
    assert main(["--url", url, "backup", str(tmp_path / "copy" / "backup.sqlite3")]) == 0
    store.close()
    copy = HistoryStore(f"sqlite:///{tmp_path / 'copy' / 'backup.sqlite3'}")
    try:
        assert copy.revision() == "0002" and copy.get(kept.row["id"])["mask_png"] == kept.mask.data
    finally:
        copy.close()


def test_inspection_ids_sort_by_time():
    first = new_inspection_id()
    time.sleep(0.002)
    second = new_inspection_id()
    assert uuid.UUID(first).version == 7 and first < second


def test_the_migrations_ship_in_the_package():
    """Every folder of the migrations is a package (so the wheel, and the lean bento built from it, carries their
    Python files) and every other file in it is package data."""
    import tomllib

    from segserve.history.store import MIGRATIONS

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["segserve"]
    source = MIGRATIONS.parents[1]  # src/segserve
    for folder in [MIGRATIONS, *(p for p in MIGRATIONS.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        assert (folder / "__init__.py").is_file(), folder
        for path in folder.iterdir():
            if path.is_file() and path.suffix != ".py" and path.suffix != ".pyc":
                relative = path.relative_to(source).as_posix()
                assert any(Path(relative).match(p) for p in patterns), f"{relative} is not package data"
    assert sorted(p.name for p in (MIGRATIONS / "versions").glob("0*.py")) == ["0001_tables.py", "0002_indexes.py"]


def _migrate_in_a_process(url: str) -> None:
    store = HistoryStore(url)
    store.upgrade()
    store.close()


def test_processes_migrating_one_sqlite_file_at_once_take_turns(tmp_path):
    """Entry workers of one server start together over one SQLite file: each migration succeeds at once."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    processes = [context.Process(target=_migrate_in_a_process, args=(url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    store = HistoryStore(url)
    try:
        assert store.revision() == "0002"
    finally:
        store.close()
