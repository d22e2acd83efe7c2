"""The inspection history by hand, against the database the settings name (SEGSERVE_HISTORY_URL, else the SQLite
file under SEGSERVE_DATA_DIR), or --url.

    python -m segserve.history upgrade            migrate the schema to the newest revision (the server does too)
    python -m segserve.history revision           print the schema's revision
    python -m segserve.history backup FILE        copy the SQLite database to FILE, consistently, while it serves
    python -m segserve.history expire DAYS        delete inspections older than DAYS days, and their images
    python -m segserve.history new-revision -m "what changes"    a new Alembic revision (development)
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from segserve.history import database_of
from segserve.history.store import MIGRATIONS, HistoryStore, database_url, sqlite_path
from segserve.settings import get_settings


def backup(url: str, target: Path) -> Path:
    """Copy an SQLite history to ``target`` with SQLite's online backup (consistent while the server writes)."""
    source = sqlite_path(url)
    if source is None:
        raise SystemExit("backup copies the SQLite file; back up PostgreSQL with pg_dump (docs/operations.md)")
    if not source.exists():
        raise SystemExit(f"no history at {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segserve.history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the database (default: from the settings)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="migrate the schema to the newest revision")
    commands.add_parser("revision", help="print the schema's revision")
    copy = commands.add_parser("backup", help="copy the SQLite database to FILE")
    copy.add_argument("file", type=Path)
    expire = commands.add_parser("expire", help="delete inspections older than DAYS days")
    expire.add_argument("days", type=int)
    new = commands.add_parser("new-revision", help="write a new, empty Alembic revision")
    new.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)

    url = args.url or database_of(get_settings())
    if args.command == "backup":
        print(backup(url, args.file))
        return 0
    if args.command == "new-revision":
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", database_url(url))
        command.revision(config, message=args.message)
        return 0
    store = HistoryStore(url)
    try:
        if args.command == "upgrade":
            store.upgrade()
            print(f"{store.description}: {store.revision()}")
        elif args.command == "revision":
            print(store.revision() or "no schema")
        elif args.command == "expire":
            cutoff = datetime.now(UTC) - timedelta(days=args.days)
            print(f"deleted {store.delete_older_than(cutoff)} inspections older than {cutoff.isoformat()}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
