"""Export a training run as a release (float16 weights + metadata) and optionally import it into the store.

    python -m training.export --run runs/deeplabv3plus [--release-dir models] [--import]

Before writing anything into the release folder, the float16 release is rebuilt and checked against the
run's float32 best.keras on the val split: they must agree on at least 99.9% of the pixels. The float32
model's val masks are written next to the release as ``<name>.val_masks.npz`` (keys "masks", "ids") so a
later check can compare what the served model predicts with what training saw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segserve import imaging, metrics, store
from segserve.errors import SegServeError
from training.data import DatasetError, Pair, load_arrays, pairs_by_id
from training.metadata import build_metadata, val_metrics
from training.prediction import predict_masks
from training.report import METRICS_FILE, write_run_report
from training.sources import RUN_MODEL, load_run_model

MIN_FLOAT16_AGREEMENT = 0.999


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The export options."""
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of training.train (with best.keras and config.json)")
    p.add_argument("--release-dir", default=str(store.DEFAULT_RELEASE_DIR), help="folder of the release files")
    p.add_argument("--data", default=None, help="dataset folder (default: the one in the run's config.json)")
    p.add_argument("--import", dest="do_import", action="store_true", help="also import it into the BentoML store")
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


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Check, export and optionally import the run's best model; returns the release metadata."""
    run_dir = Path(args.run)
    if not (run_dir / RUN_MODEL).exists():
        raise SystemExit(f"error: {run_dir / RUN_MODEL} does not exist; is {run_dir} a finished training run?")
    config = json.loads((run_dir / "config.json").read_text())
    name = str(config["model"])
    store.store_name(name)  # raises UnknownModel for an architecture the server does not serve
    data_dir = args.data or config["data"]
    pairs = pairs_by_id(data_dir, config["val_ids"], "val ids of the run")
    ensure_report(run_dir, pairs, data_dir)

    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    trained_at = dt.datetime.fromtimestamp((run_dir / RUN_MODEL).stat().st_mtime, tz=dt.UTC).date().isoformat()
    size = int(config.get("input_size") or imaging.MODEL_INPUT_SIZE)
    images, truth = load_arrays(pairs, size)
    model = load_run_model(run_dir)
    masks = predict_masks(model, images)
    scores = metrics.table(truth, masks)
    metadata = build_metadata(config, state, val_metrics(scores, "val"), trained_at)
    with tempfile.TemporaryDirectory(prefix="segserve-export-") as tmp:
        store.export_release(model, name, metadata, tmp)
        released, _ = store.load_release(name, tmp)
        agreement = float(np.mean(predict_masks(released, images) == masks))
    print(f"float16 release agrees with the float32 model on {agreement:.4%} of {len(pairs)} val images' pixels")
    if agreement < MIN_FLOAT16_AGREEMENT:
        raise SystemExit(
            f"error: the float16 release of {run_dir / RUN_MODEL} predicts a different class than the float32 "
            f"model for {1 - agreement:.3%} of the val pixels (at most {1 - MIN_FLOAT16_AGREEMENT:.1%} allowed); "
            f"nothing was written to {args.release_dir}"
        )
    metadata["float16_agreement"] = agreement

    release_dir = Path(args.release_dir)
    store.export_release(model, name, metadata, release_dir)
    masks_path = release_dir / f"{name}.val_masks.npz"
    np.savez_compressed(masks_path, masks=masks.astype(np.uint8), ids=np.array([p.id for p in pairs]))
    weights_path, meta_path = store.release_paths(name, release_dir)
    corrosion = next(row for row in scores["per_class"] if row["name"] == "corrosion")
    print(
        f"exported {name} (best epoch {metadata.get('best_epoch')}, val mIoU {scores['mean_iou']:.4f}, corrosion "
        f"IoU {corrosion['iou']:.4f}) to {weights_path}, {meta_path} and {masks_path}",
        flush=True,
    )
    if args.do_import:
        tag = store.import_release(name, release_dir, force=True)
        print(f"imported into the BentoML store as {tag}", flush=True)
    return metadata


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.export`` with ``argv`` (default: the command line)."""
    try:
        export(parse_args(argv))
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
