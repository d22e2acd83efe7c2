"""segserve command line.

segserve import-models [--force]   import the shipped models (models/) into the BentoML store if missing
segserve check-models              exit 1, naming what is missing, unless every served model is in the store
segserve serve                     check the store, then serve HTTP and gRPC (bentoml serve)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from segserve.errors import ModelNotInStore
from segserve.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def import_models(release_dir: str, force: bool) -> int:
    from segserve.store import import_release

    for name in get_settings().model_names:
        try:
            tag = import_release(name, release_dir, force=force)
        except ModelNotInStore as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"imported {tag}" if tag else f"corrosion-{name} is already in the store")
    return 0


def check_models() -> int:
    from segserve.store import store_ref

    missing = []
    for name in get_settings().model_names:
        try:
            print(f"found {store_ref(name).tag}")
        except ModelNotInStore as exc:
            missing.append(str(exc))
    for message in missing:
        print(f"error: {message}", file=sys.stderr)
    return 1 if missing else 0


def serve() -> int:
    if check_models() != 0:
        return 1
    settings = get_settings()
    argv = [sys.executable, "-m", "bentoml", "serve", "bento.service:SegServe", "--port", str(settings.http_port)]
    os.chdir(ROOT)
    os.execv(sys.executable, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segserve", description="segserve: corrosion segmentation server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_import = sub.add_parser("import-models", help="import the shipped models into the BentoML store")
    p_import.add_argument("--release-dir", default=str(ROOT / "models"))
    p_import.add_argument("--force", action="store_true", help="import even if the store has a version")
    sub.add_parser("check-models", help="check that every served model is in the store")
    sub.add_parser("serve", help="serve HTTP and gRPC")
    args = parser.parse_args(argv)
    if args.command == "import-models":
        sys.exit(import_models(args.release_dir, args.force))
    if args.command == "check-models":
        sys.exit(check_models())
    sys.exit(serve())


if __name__ == "__main__":
    main()
