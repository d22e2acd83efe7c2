"""Evaluate a served model on a dataset split and write its report (metrics.json, figures, report.md).

    python -m training.evaluate --model deeplabv3plus --data ../shared/datasets/corrosion-pipes --split val

The model comes from the BentoML store (``--version``: ``served``, what the server loads, by default;
``candidate``, the newest candidate waiting for promotion; or a version) or, with --release, from the shipped
release files in models/.

``--against SPEC`` compares it with another model on the same photos, before a promotion:

    python -m training.evaluate --model unet --data FOLDER --version candidate --against served

Both answer every photo of the split as the server does (the photo at its own size, resized to each model's
input, ``pipeline.postprocess``); the table of both (mean and per-class IoU, pixel accuracy, the corroded
share's error, the rust grade's agreement) is printed and written to ``<out>/comparison.md``, with which is
better on mean IoU. SPEC is a store version as for --version, or ``release`` (the shipped release).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segserve import architectures, imaging, store
from segserve.errors import SegServeError
from training.comparison import answer_metrics, comparison_markdown, print_comparison, verdict
from training.data import DatasetError, load_arrays, load_samples, split_of
from training.formatting import percent
from training.metadata import require_held_out
from training.prediction import predict_masks
from training.report import write_evaluation
from training.sources import LoadedModel, from_release, from_store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The evaluation options."""
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=list(architectures.NAMES))
    p.add_argument("--data", required=True, help="dataset folder (original/, ground_truth/, optional split files)")
    p.add_argument("--split", default="val", help="train, val or test (default val)")
    p.add_argument("--out", default=None, help="report folder (default reports/<model>-<split>)")
    p.add_argument("--release", action="store_true", help="load the shipped release files instead of the store")
    p.add_argument(
        "--version",
        default=store.SERVED,
        help="the store version: served (default), candidate (the newest waiting for promotion) or a version",
    )
    p.add_argument(
        "--against",
        default=None,
        metavar="SPEC",
        help="compare with another model on the same photos: served, candidate, a store version, or release",
    )
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


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Predict the split with the model and write the report; returns the metrics.json dict."""
    pairs = split_of(args.data, args.split, args.seed, args.limit)
    loaded = load(args.model, "release" if args.release else args.version, args.release_dir)
    model, meta, source = loaded.model, loaded.metadata, loaded.source
    require_held_out({args.model: meta}, args.data, [p.id for p in pairs], args.split)
    size = args.input_size or loaded.input_size
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
    if args.against:
        result["comparison"] = compare(args, loaded, out)
    return result


def load(name: str, spec: str, release_dir: str | Path = store.DEFAULT_RELEASE_DIR) -> LoadedModel:
    """The model ``spec`` names: ``release`` (the release files), else a store version (``store.resolve``)."""
    if spec == "release":
        return from_release(name, release_dir)
    return from_store(name, str(store.resolve(name, spec).tag.version))


def compare(args: argparse.Namespace, loaded: LoadedModel, out: Path) -> dict[str, Any]:
    """The model against ``args.against`` on the split's photos as the server answers them; prints the table
    and writes ``<out>/comparison.md``. Returns both metrics and the verdict."""
    other = load(args.model, args.against, args.release_dir)
    ids = [p.id for p in split_of(args.data, args.split, args.seed, args.limit)]
    require_held_out({args.against: other.metadata}, args.data, ids, args.split)
    metrics = {}
    for key, model in (("against", other), ("evaluated", loaded)):
        samples = load_samples(args.data, args.split, model.input_size, args.seed, args.limit)
        metrics[key] = answer_metrics(args.model, model.model, samples, args.split)
    labels = (args.against, "release" if args.release else args.version)
    title = f"{args.split} ({metrics['evaluated']['num_images']} photos)"
    print_comparison(metrics["against"], metrics["evaluated"], labels, title)
    better = verdict(metrics["against"], metrics["evaluated"])
    line = f"{loaded.source} is {'better' if better else 'not better'} than {other.source} on {args.split} mean IoU"
    print(line, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(
        f"# {loaded.source} against {other.source}\n\n"
        f"{metrics['evaluated']['num_images']} {args.split} photos of {args.data}, answered as the server "
        f"answers them.\n\n{comparison_markdown(metrics['against'], metrics['evaluated'], labels)}\n\n{line}.\n"
    )
    return {**metrics, "better": better}


def _column(value: float | None) -> str:
    """A share as a percentage in a six-character column."""
    return percent(value, width=6, missing="  n/a ")


def print_summary(result: dict[str, Any]) -> None:
    """Print the main numbers of a metrics.json dict as a small table."""
    std, avg = result["standard"], result["per_image"]
    print(f"{'class':<12}{'IoU':>8}{'Dice':>8}{'prec.':>8}{'recall':>8}   per-image IoU  Dice")
    for name, c in std["per_class"].items():
        a = avg["per_class"][name]
        standard = "".join(f"{_column(c[k]):>8}" for k in ("iou", "dice", "precision", "recall"))
        print(f"{name:<12}{standard}   {_column(a['iou']):>13}{_column(a['dice']):>6}")
    print(
        f"{'mean':<12}{_column(std['mean_iou']):>8}{_column(std['mean_dice']):>8}{'':16}"
        f"   {_column(avg['mean_iou']):>13}{_column(avg['mean_dice']):>6}"
    )
    print(f"pixel accuracy {percent(std['pixel_accuracy'])}% over {result['num_images']} images", flush=True)
    ratio = result.get("ratio_agreement")
    if ratio:
        print(
            f"corroded share of the asset: mean absolute error {percent(ratio['ratio_mae'])} points; "
            f"rust grade exact {percent(ratio['grade_exact'])}%, within one {percent(ratio['grade_within_one'])}%",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.evaluate`` with ``argv`` (default: the command line)."""
    try:
        evaluate(parse_args(argv))
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
