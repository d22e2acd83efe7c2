"""segserve command line.

segserve import-models [--force]   import the shipped models (models/) into the BentoML store if missing
segserve check-models              exit 1, naming what is missing, unless every served model is in the store
segserve serve                     check the store, then serve HTTP and gRPC (bentoml serve)
segserve versions NAME             list the store's versions of a model, newest first, marking the served one
segserve use NAME:VERSION          serve that version from the next server start (NAME:latest: the newest)
segserve rollback NAME             serve the version before the one served now, from the next server start
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from segserve.architectures import NAMES
from segserve.errors import ModelNotInStore, UnknownModel
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
        except Exception as exc:  # a broken release file: name it, never a traceback
            print(f"error: the release of {name} in {release_dir} cannot be imported: {exc!r}", file=sys.stderr)
            return 1
        print(f"imported {tag}" if tag else f"corrosion-{name}: this release is already in the store")
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


def _model_name(text: str) -> str:
    """``unet`` or ``corrosion-unet`` -> ``unet``."""
    return text.removeprefix("corrosion-")


def _status(meta: dict) -> str:
    """How a version came into the store: a release, a candidate, a promoted candidate."""
    if meta.get("promoted_at"):
        return f"promoted {str(meta['promoted_at'])[:10]}"
    return "candidate" if meta.get("candidate") else "release"


def _describe(meta: dict) -> str:
    parts = []
    if meta.get("trained_from"):
        parts.append(f"from {meta['trained_from']}")
    if meta.get("trained_on"):
        parts.append(f"on {meta['trained_on']}")
    miou = (meta.get("val_metrics") or {}).get("mean_iou")
    if miou is not None:
        # a final fit trained on val: its val figures are its recipe's run's (training.export --validation-from)
        whose = " (its recipe's run on the train split)" if meta.get("validation_source") else ""
        parts.append(f"val mIoU {miou:.4f}{whose}")
    start = (meta.get("start_val_metrics") or {}).get("mean_iou")
    if start is not None:
        parts.append(f"its start {start:.4f} on the same photos")
    calibration = (meta.get("review") or {}).get("calibration") or {}
    if calibration.get("n_images"):
        parts.append(f"review flag calibrated on {calibration['n_images']} {calibration.get('split', '')} photos")
    return ", ".join(parts)


def versions(name: str) -> int:
    from segserve import store

    name = _model_name(name)
    refs = store.list_versions(name)
    if not refs:
        print(f"error: no {store.store_name(name)} in the BentoML model store", file=sys.stderr)
        return 1
    try:
        served = str(store.store_ref(name).tag.version)
    except ModelNotInStore as exc:
        print(f"error: {exc}", file=sys.stderr)
        served = None
    how = "pinned" if store.read_pins().get(store.store_name(name)) else "newest release or promoted"
    print(f"{store.store_name(name)}: {len(refs)} version(s), newest first; * = served ({how})")
    for ref in refs:
        version = str(ref.tag.version)
        mark = "*" if version == served else " "
        created = ref.info.creation_time.strftime("%Y-%m-%d %H:%M:%S")
        meta = dict(ref.info.metadata)
        print(f"{mark} {version}  {created}  {_status(meta):<19} {_describe(meta)}".rstrip())
    return 0


def promote(spec: str) -> int:
    from segserve import store

    name, _, version = spec.partition(":")
    name = _model_name(name)
    try:
        full, pinned = store.promote(name, version or store.NEWEST_CANDIDATE)
    except ModelNotInStore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    how = " (pinned: newer versions exist)" if pinned else ""
    print(
        f"serving {store.store_name(name)}:{full}{how} from the next server start; "
        f"`segserve rollback {name}` serves the one before it"
    )
    return 0


def use(spec: str) -> int:
    from segserve import store

    name, _, version = spec.partition(":")
    name = _model_name(name)
    if not version:
        print(f"error: give a version: `segserve use {name}:VERSION` or `{name}:latest`", file=sys.stderr)
        return 2
    try:
        pinned = store.pin(name, version)
        served = store.store_ref(name).tag
    except ModelNotInStore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    how = f"pinned {pinned}" if pinned else "the latest, unpinned"
    print(f"serving {served} ({how}); restart the server to load it")
    return 0


def rollback(name: str) -> int:
    from segserve import store

    name = _model_name(name)
    try:
        old, new = store.rollback(name)
    except ModelNotInStore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tag = store.store_name(name)
    print(f"serving {tag}:{new} instead of {tag}:{old} (pinned); restart the server to load it")
    return 0


def preflight() -> list[str]:
    """What would stop the server from serving, found before it starts: each served model must load on the
    configured backend, both ports must be free, and the TLS and token files must be readable."""
    import socket

    from segserve.auth import TokenAuth
    from segserve.runtime import load_served

    settings = get_settings()
    problems = []
    for name in settings.model_names:
        try:
            load_served(name, settings)
        except Exception as exc:
            problems.append(f"corrosion-{name} cannot be loaded on {settings.backend}: {exc}")
    for what, host, port in (("HTTP", "0.0.0.0", settings.http_port), ("gRPC", settings.grpc_host, settings.grpc_port)):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                problems.append(f"the {what} port {host}:{port} cannot be bound ({exc.strerror}): is it in use?")
    for label, path in (
        ("certificate", settings.tls_cert_file),
        ("key", settings.tls_key_file),
        ("client CA", settings.tls_client_ca_file),
    ):
        if path and not os.access(path, os.R_OK):
            problems.append(f"the TLS {label} file {path} cannot be read")
    try:
        TokenAuth.from_settings(settings)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def serve() -> int:
    if check_models() != 0:
        return 1
    problems = preflight()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    settings = get_settings()
    argv = [sys.executable, "-m", "bentoml", "serve", "bento.service:SegServe", "--port", str(settings.http_port)]
    os.chdir(ROOT)
    os.execv(sys.executable, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="segserve",
        description="segserve: serve the corrosion segmentation models, manage their versions, inspect photo folders.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_import = sub.add_parser("import-models", help="import the shipped models into the BentoML store")
    p_import.add_argument("--release-dir", default=str(ROOT / "models"))
    p_import.add_argument("--force", action="store_true", help="import even if the store has a version")
    sub.add_parser("check-models", help="check that every served model is in the store")
    sub.add_parser("serve", help="serve HTTP and gRPC")
    p_versions = sub.add_parser("versions", help="list a model's versions in the store, marking the served one")
    p_versions.add_argument("name", help=f"a model: {', '.join(NAMES)}")
    p_promote = sub.add_parser("promote", help="serve a candidate (a fine-tune) from the next server start")
    p_promote.add_argument(
        "spec", metavar="NAME[:VERSION]", help="e.g. unet (its newest candidate) or unet:abcd1234 (a prefix will do)"
    )
    p_use = sub.add_parser("use", help="serve a version of a model from the next server start")
    p_use.add_argument("spec", metavar="NAME:VERSION", help="e.g. unet:abcd1234 (a unique prefix will do), unet:latest")
    p_rollback = sub.add_parser("rollback", help="serve the version before the served one from the next server start")
    p_rollback.add_argument("name", help=f"a model: {', '.join(NAMES)}")
    from segserve.inspection import add_arguments as add_inspect_arguments

    add_inspect_arguments(sub.add_parser("inspect", help="segment every photo under folders on a running server"))
    args = parser.parse_args(argv)
    try:
        get_settings()
    except ValueError as exc:  # a setting that cannot work: say which, exit before anything starts
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        if args.command == "versions":
            sys.exit(versions(args.name))
        if args.command == "promote":
            sys.exit(promote(args.spec))
        if args.command == "use":
            sys.exit(use(args.spec))
        if args.command == "rollback":
            sys.exit(rollback(args.name))
    except UnknownModel as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.command == "import-models":
        sys.exit(import_models(args.release_dir, args.force))
    if args.command == "check-models":
        sys.exit(check_models())
    if args.command == "inspect":
        from segserve.inspection import main as inspect_main

        sys.exit(inspect_main(args))
    sys.exit(serve())


if __name__ == "__main__":
    main()
