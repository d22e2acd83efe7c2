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

from segserve import imaging, store
from segserve.errors import SegServeError
from training.data import DatasetError, Pair, find_pairs, load_arrays
from training.report import load_run_model, write_run_report
from training.train import predict_masks

MIN_FLOAT16_AGREEMENT = 0.999


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of training.train (with best.keras and config.json)")
    p.add_argument("--release-dir", default=str(store.DEFAULT_RELEASE_DIR), help="folder of the release files")
    p.add_argument("--data", default=None, help="dataset folder (default: the one in the run's config.json)")
    p.add_argument("--import", dest="do_import", action="store_true", help="also import it into the BentoML store")
    return p.parse_args(argv)


def val_pairs(config: dict[str, Any], data_dir: str) -> list[Pair]:
    """The run's val pairs, by the val_ids recorded in its config.json."""
    by_id = {p.id: p for p in find_pairs(data_dir)}
    missing = [i for i in config["val_ids"] if i not in by_id]
    if missing:
        raise DatasetError(f"val ids of the run missing from {data_dir}: {', '.join(missing)}")
    return [by_id[i] for i in config["val_ids"]]


def run_metrics(run_dir: Path, pairs: list[Pair], data_dir: str) -> dict[str, Any]:
    """The run's metrics.json; (re)written by training.report when missing, older than best.keras or for other ids."""
    path = run_dir / "metrics.json"
    ids = [p.id for p in pairs]
    if path.exists() and path.stat().st_mtime >= (run_dir / "best.keras").stat().st_mtime:
        result = json.loads(path.read_text())
        if result.get("ids") == ids:
            return result
    print(f"{path} is missing or stale: writing the run report first", flush=True)
    return write_run_report(run_dir, data_dir, "val", pairs)


def val_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The release's ``val_metrics`` from a metrics.json dict, in the layout the server reports
    (segserve.segmenter): ``per_class`` rows with class_id, name, iou, dice, precision, recall, per_image_iou and
    per_image_dice, the means, and what an inspector reads: ``ratio_mae`` (mean absolute error of the
    corrosion_asset_ratio), ``grade_exact`` and ``grade_within_one`` (rust grade agreement). Undefined values
    (None in metrics.json) are left out.
    """
    std, avg = result["standard"], result["per_image"]
    rows = []
    for class_id, name in enumerate(result["classes"]):
        row = {"class_id": class_id, "name": name, **std["per_class"][name]}
        row.update({f"per_image_{k}": v for k, v in avg["per_class"][name].items()})
        row.pop("true_pixels", None)
        row.pop("predicted_pixels", None)
        rows.append({k: v for k, v in row.items() if v is not None})
    summary = {
        "split": result.get("split", "val"),
        "num_images": result["num_images"],
        "per_class": rows,
        "mean_iou": std["mean_iou"],
        "mean_dice": std["mean_dice"],
        "pixel_accuracy": std["pixel_accuracy"],
        "per_image_mean_iou": avg["mean_iou"],
        "per_image_mean_dice": avg["mean_dice"],
        **result.get("ratio_agreement", {}),
    }
    return {k: v for k, v in summary.items() if v is not None}


def build_metadata(run_dir: Path, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Release metadata from the run's config.json, state.json and metrics.json."""
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    trained = dt.datetime.fromtimestamp((run_dir / "best.keras").stat().st_mtime, tz=dt.UTC)
    return {
        "builder_kwargs": {},
        "input_size": int(config.get("input_size", imaging.MODEL_INPUT_SIZE)),
        "encoder_weights": config.get("encoder_weights"),
        "val_metrics": val_metrics(result),
        "train_seconds": state.get("train_seconds"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "dataset": Path(str(config.get("data", ""))).name,
        "train_ids": config.get("train_ids", []),
        "val_ids": config.get("val_ids", []),
        "trained_at": trained.date().isoformat(),
    }


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Check, export and optionally import the run's best model; returns the release metadata."""
    run_dir = Path(args.run)
    if not (run_dir / "best.keras").exists():
        raise SystemExit(f"error: {run_dir / 'best.keras'} does not exist; is {run_dir} a finished training run?")
    config = json.loads((run_dir / "config.json").read_text())
    name = str(config["model"])
    store.store_name(name)  # raises UnknownModel for an architecture the server does not serve
    data_dir = args.data or config["data"]
    pairs = val_pairs(config, data_dir)
    result = run_metrics(run_dir, pairs, data_dir)
    metadata = build_metadata(run_dir, config, result)

    images, _ = load_arrays(pairs, metadata["input_size"])
    model = load_run_model(run_dir)
    masks = predict_masks(model, images)
    with tempfile.TemporaryDirectory(prefix="segserve-export-") as tmp:
        store.export_release(model, name, metadata, tmp)
        released, _ = store.load_release(name, tmp)
        agreement = float(np.mean(predict_masks(released, images) == masks))
    print(f"float16 release agrees with the float32 model on {agreement:.4%} of {len(pairs)} val images' pixels")
    if agreement < MIN_FLOAT16_AGREEMENT:
        raise SystemExit(
            f"error: the float16 release of {run_dir / 'best.keras'} predicts a different class than the float32 "
            f"model for {1 - agreement:.3%} of the val pixels (at most {1 - MIN_FLOAT16_AGREEMENT:.1%} allowed); "
            f"nothing was written to {args.release_dir}"
        )
    metadata["float16_agreement"] = agreement

    release_dir = Path(args.release_dir)
    store.export_release(model, name, metadata, release_dir)
    masks_path = release_dir / f"{name}.val_masks.npz"
    np.savez_compressed(masks_path, masks=masks.astype(np.uint8), ids=np.array([p.id for p in pairs]))
    weights_path, meta_path = store.release_paths(name, release_dir)
    std = result["standard"]
    print(
        f"exported {name} (best epoch {metadata['best_epoch']}, val mIoU {std['mean_iou']:.4f}, corrosion IoU "
        f"{std['per_class']['corrosion']['iou']:.4f}) to {weights_path}, {meta_path} and {masks_path}",
        flush=True,
    )
    if args.do_import:
        tag = store.import_release(name, release_dir, force=True)
        print(f"imported into the BentoML store as {tag}", flush=True)
    return metadata


def main(argv: list[str] | None = None) -> None:
    try:
        export(parse_args(argv))
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
