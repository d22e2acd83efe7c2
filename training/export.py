"""Export a training run as a release (float16 weights + metadata) and optionally import it into the store.

    python -m training.export --run runs/deeplabv3plus [--release-dir runs/release] [--import]

The release goes to ``runs/release/`` unless ``--release-dir`` says otherwise: ``--release-dir models``
replaces the shipped release, a tracked file, only when asked. ``--import`` imports it into the BentoML store
as a candidate (unless that release is there already), which ``segserve promote <model>`` serves.

Before writing anything into the release folder, the float16 release is rebuilt and checked against the
run's float32 checkpoint (``--checkpoint``: its best validated epoch, or its last) on the val split: they
must agree on at least 99.9% of the pixels. The float32 model's val masks are written next to the release as
``<name>.val_masks.npz`` (keys "masks", "ids") so a later check can compare what the served model predicts
with what training saw.

A final fit (``training.train --fit-on train+val``) holds no photo out, so it cannot be validated itself:
``--validation-from`` names the release of a run of the same recipe on the train split only (exported and
calibrated first), whose val metrics, review thresholds and ensemble metrics the final model carries, with
``validation_source`` saying so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from math import nan
from pathlib import Path
from typing import Any

import numpy as np

from segserve import imaging, metrics, store
from segserve.errors import SegServeError
from training.data import DatasetError, Pair, load_arrays, pairs_by_id
from training.metadata import build_metadata, val_metrics
from training.prediction import predict_masks
from training.report import METRICS_FILE, write_run_report
from training.sources import CHECKPOINTS, RUN_MODEL, load_run_model

MIN_FLOAT16_AGREEMENT = 0.999
DEFAULT_RELEASE_DIR = Path("runs/release")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The export options."""
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of training.train (with best.keras and config.json)")
    p.add_argument(
        "--release-dir",
        default=str(DEFAULT_RELEASE_DIR),
        help=f"folder the release files go to (default {DEFAULT_RELEASE_DIR}; models: replace the shipped release)",
    )
    p.add_argument("--data", default=None, help="dataset folder (default: the one in the run's config.json)")
    p.add_argument("--checkpoint", default="best", choices=sorted(CHECKPOINTS), help="which of the run's models")
    p.add_argument(
        "--validation-from",
        default=None,
        help="a release .json of the same recipe trained on the train split (for a final fit on train+val): "
        "its val metrics, review thresholds and ensemble metrics are recorded, labelled as such",
    )
    p.add_argument(
        "--import",
        dest="do_import",
        action="store_true",
        help="also import it into the BentoML store, as a candidate for `segserve promote`",
    )
    return p.parse_args(argv)


def ensure_report(run_dir: Path, pairs: list[Pair], data_dir: str) -> None:
    """(Re)write the run's report (training.report) when its metrics.json is missing, older than best.keras or
    for other ids than ``pairs``."""
    path = run_dir / METRICS_FILE
    ids = [p.id for p in pairs]
    if path.exists() and path.stat().st_mtime >= (run_dir / RUN_MODEL).stat().st_mtime:
        if json.loads(path.read_text()).get("ids") == ids:
            return
    print(f"{path} is missing or stale: writing the run report first", flush=True)
    write_run_report(run_dir, data_dir, "val", pairs)


def validated_elsewhere(config: dict[str, Any], validation: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a final fit carries from the release of its recipe's run on the train split: that run's review
    thresholds and ensemble metrics, its val ids, and where its figures come from."""
    carried = {k: validation[k] for k in ("review", "ensemble_val_metrics") if k in validation}
    photos = len(config["train_ids"])
    source = (
        f"the val split ({len(validation['val_ids'])} photos) of the same recipe trained on the train split only "
        f"({len(validation['train_ids'])} photos; {path.name}, trained {validation.get('trained_at', '')}); these "
        f"weights are that recipe fit on train and val together ({photos} photos), which holds no photo out"
    )
    data = Path(str(config["data"])).resolve()
    return {
        **carried,
        "val_ids": validation["val_ids"],
        "validation_source": source,
        "trained_on": f"{data} ({photos} photos: the train and val splits)",
    }


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Check, export and optionally import the run's best model; returns the release metadata."""
    run_dir = Path(args.run)
    checkpoint = run_dir / CHECKPOINTS[args.checkpoint]
    if not checkpoint.exists():
        raise SystemExit(f"error: {checkpoint} does not exist; is {run_dir} a finished training run?")
    config = json.loads((run_dir / "config.json").read_text())
    name = str(config["model"])
    store.store_name(name)  # raises UnknownModel for an architecture the server does not serve
    data_dir = args.data or config["data"]
    validation = json.loads(Path(args.validation_from).read_text()) if args.validation_from else None
    if config.get("fit_on") == "train+val" and validation is None:
        raise SystemExit(
            f"error: {run_dir} is a final fit on train and val, which holds no photo out: give --validation-from, "
            "the release of a run of the same recipe on the train split"
        )
    val_ids = validation["val_ids"] if validation is not None else config["val_ids"]
    pairs = pairs_by_id(data_dir, val_ids, "val ids")
    if validation is None and args.checkpoint == "best":
        ensure_report(run_dir, pairs, data_dir)

    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    trained_at = dt.datetime.fromtimestamp(checkpoint.stat().st_mtime, tz=dt.UTC).date().isoformat()
    size = int(config.get("input_size") or imaging.MODEL_INPUT_SIZE)
    images, truth = load_arrays(pairs, size)
    model = load_run_model(run_dir, args.checkpoint)
    masks = predict_masks(model, images)
    scores = metrics.table(truth, masks)
    if validation is None:
        metadata = build_metadata(config, state, val_metrics(scores, "val"), trained_at)
        if args.checkpoint == "last":
            metadata["best_epoch"] = state.get("epoch")  # the release is the last epoch, not the best validated
    else:
        metadata = build_metadata(config, state, validation["val_metrics"], trained_at)
        metadata.update(validated_elsewhere(config, validation, Path(args.validation_from)))
    with tempfile.TemporaryDirectory(prefix="segserve-export-") as tmp:
        store.export_release(model, name, metadata, tmp)
        released, _ = store.load_release(name, tmp)
        agreement = float(np.mean(predict_masks(released, images) == masks))
    print(f"float16 release agrees with the float32 model on {agreement:.4%} of {len(pairs)} val images' pixels")
    if agreement < MIN_FLOAT16_AGREEMENT:
        raise SystemExit(
            f"error: the float16 release of {checkpoint} predicts a different class than the float32 "
            f"model for {1 - agreement:.3%} of the val pixels (at most {1 - MIN_FLOAT16_AGREEMENT:.1%} allowed); "
            f"nothing was written to {args.release_dir}"
        )
    metadata["float16_agreement"] = agreement

    release_dir = Path(args.release_dir)
    store.export_release(model, name, metadata, release_dir)
    masks_path = release_dir / f"{name}.val_masks.npz"
    np.savez_compressed(masks_path, masks=masks.astype(np.uint8), ids=np.array([p.id for p in pairs]))
    weights_path, meta_path = store.release_paths(name, release_dir)
    recorded = metadata["val_metrics"]
    corrosion = next(row for row in recorded["per_class"] if row["name"] == "corrosion")
    whose = f" of {Path(args.validation_from).name}, its recipe's run on the train split" if validation else ""
    print(
        f"exported {name} (best epoch {metadata.get('best_epoch')}, val mIoU {recorded.get('mean_iou', nan):.4f}, "
        f"corrosion IoU {corrosion.get('iou', nan):.4f}{whose}) to {weights_path}, {meta_path} and {masks_path}",
        flush=True,
    )
    if args.do_import:
        tag = store.import_release(name, release_dir, candidate=True)
        if tag is None:
            print(f"this release is in the BentoML store already: {store.release_version(name, release_dir).tag}")
        else:
            print(f"imported into the BentoML store as {tag}, a candidate: `segserve promote {name}` serves it")
    return metadata


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.export`` with ``argv`` (default: the command line)."""
    try:
        export(parse_args(argv))
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
