"""Evaluate a served model on a dataset split and write its report (metrics.json, figures, report.md).

    python -m training.evaluate --model deeplabv3plus --data ../shared/datasets/corrosion-pipes --split val

The model comes from the BentoML store (``corrosion-<model>:latest``, what the server loads) or, with
--release, from the shipped release files in models/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segserve import imaging, store
from segserve.errors import SegServeError
from training.data import DatasetError, find_pairs, load_arrays, split_pairs
from training.report import write_evaluation
from training.train import predict_masks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=list(store.ARCHITECTURES))
    p.add_argument("--data", required=True, help="dataset folder (original/, ground_truth/, optional split files)")
    p.add_argument("--split", default="val", help="train, val or test (default val)")
    p.add_argument("--out", default=None, help="report folder (default reports/<model>-<split>)")
    p.add_argument("--release", action="store_true", help="load the shipped release files instead of the store")
    p.add_argument("--release-dir", default=str(store.DEFAULT_RELEASE_DIR), help="folder of the release files")
    p.add_argument(
        "--input-size",
        type=int,
        default=0,
        help=f"side images are resized to (default: the model's metadata input_size, else {imaging.MODEL_INPUT_SIZE})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random split when the dataset has no split files")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N pairs of the split")
    return p.parse_args(argv)


def load_model(name: str, release: bool, release_dir: str | Path) -> tuple[Any, dict[str, Any], str]:
    """(keras model, metadata, description of where it came from) from the store or the release files."""
    if release:
        model, meta = store.load_release(name, release_dir)
        return model, meta, f"release {Path(release_dir) / name}.weights.npz"
    model, info = store.load_from_store(name)
    return model, dict(info.metadata), f"BentoML store {store.store_name(name)}:{info.version}"


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Predict the split with the model and write the report; returns the metrics.json dict."""
    splits = split_pairs(find_pairs(args.data), args.data, args.seed)
    if args.split not in splits or not splits[args.split]:
        raise DatasetError(f"{args.data} has no {args.split} split; it has {', '.join(sorted(splits))}")
    pairs = splits[args.split][: args.limit or None]

    model, meta, source = load_model(args.model, args.release, args.release_dir)
    size = args.input_size or int(meta.get("input_size") or imaging.MODEL_INPUT_SIZE)
    print(f"evaluating {source} on {len(pairs)} {args.split} images of {args.data} at {size}x{size}", flush=True)
    images, truth = load_arrays(pairs, size)
    pred = predict_masks(model, images)

    extra = {
        "split": args.split,
        "data_dir": str(args.data),
        "source": source,
        "input_size": size,
        "encoder_weights": meta.get("encoder_weights"),
        "best_epoch": meta.get("best_epoch"),
        "epochs_run": meta.get("epochs_run"),
        "train_seconds": meta.get("train_seconds"),
    }
    out = Path(args.out or f"reports/{args.model}-{args.split}")
    result = write_evaluation(out, args.model, images, truth, pred, extra, ids=[p.id for p in pairs])
    print_summary(result)
    print(f"report written to {out}/report.md", flush=True)
    return result


def _pct(value: float | None) -> str:
    return "  n/a " if value is None else f"{100 * value:6.2f}"


def print_summary(result: dict[str, Any]) -> None:
    """Print the main numbers of a metrics.json dict as a small table."""
    std, avg = result["standard"], result["per_image"]
    print(f"{'class':<12}{'IoU':>8}{'Dice':>8}{'prec.':>8}{'recall':>8}   per-image IoU  Dice")
    for name, c in std["per_class"].items():
        a = avg["per_class"][name]
        print(
            f"{name:<12}{_pct(c['iou']):>8}{_pct(c['dice']):>8}{_pct(c['precision']):>8}{_pct(c['recall']):>8}"
            f"   {_pct(a['iou']):>13}{_pct(a['dice']):>6}"
        )
    print(
        f"{'mean':<12}{_pct(std['mean_iou']):>8}{_pct(std['mean_dice']):>8}{'':16}"
        f"   {_pct(avg['mean_iou']):>13}{_pct(avg['mean_dice']):>6}"
    )
    print(f"pixel accuracy {_pct(std['pixel_accuracy']).strip()}% over {result['num_images']} images", flush=True)
    ratio = result.get("ratio_agreement")
    if ratio:
        print(
            f"corroded share of the asset: mean absolute error {_pct(ratio['ratio_mae']).strip()} points; "
            f"rust grade exact {_pct(ratio['grade_exact']).strip()}%, "
            f"within one {_pct(ratio['grade_within_one']).strip()}%",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    try:
        evaluate(parse_args(argv))
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
