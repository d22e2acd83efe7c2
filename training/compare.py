"""Inference options on a split, side by side: each shipped model plain, with horizontal-flip test-time
augmentation, and the served ensemble (the mean of its members' probabilities), with what each costs in model time.
``--sizes`` adds each model at other test-time input sizes: one size, or several whose probabilities are averaged
(multi-scale inference).

    python -m training.compare --data ../shared/datasets/corrosion-pipes --split val

Every option goes through serving's path (``training.prediction``): the photo resized to the model's input, the
model service's ``Predictor.predict`` (``predict_ensemble`` for the ensemble) and wire format, and
``pipeline.postprocess``, which brings the mask back to the photo's own size; it is scored against the photo's
own ground truth with ``segserve.metrics.table`` (the training report's numbers). Model time is that of the model
service's call. All rows are measured in one process, photo by photo with the options interleaved, so that a
load on the machine weighs on every row alike. Prints the table and writes it, with the command, into
``docs/results/inference_options.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segserve import architectures, imaging, metrics, store
from segserve.classes import CLASS_NAMES
from segserve.errors import SegServeError
from segserve.predictor import Prediction
from training.compute import set_threads
from training.data import DatasetError, Sample, load_samples
from training.formatting import display_name, percent, plain
from training.metadata import require_held_out
from training.prediction import ENSEMBLE, Option, PerShape, answer_masks, run_option
from training.sources import load_releases

DEFAULT_OUT = Path("docs/results/inference_options.md")
NAMES = architectures.SHIPPED
MEMBERS = architectures.ENSEMBLE_MEMBERS  # the served ensemble's


def options(
    names: Sequence[str] = NAMES, ensemble: Sequence[str] | None = None, sizes: Sequence[tuple[int, ...]] = ()
) -> list[Option]:
    """Each model plain, with flip and at each group of test-time ``sizes``, then the ensemble of ``ensemble``
    (default: all of ``names``) plain and with flip when it has two or more members."""
    members = tuple(names if ensemble is None else ensemble)
    rows = []
    for n in names:
        rows += [Option((n,), False), Option((n,), True), *(Option((n,), False, group) for group in sizes)]
    return rows + [Option(members, False), Option(members, True)] if len(members) > 1 else rows


def predict(
    rows: Sequence[Option], models: dict[str, Any], samples: Sequence[Sample]
) -> tuple[dict[str, list[Prediction]], dict[str, list[float]]]:
    """Every option on every photo, one photo at a time (batch of one, as a lone request).

    Returns ({option name: prediction per photo}, {option name: model seconds per photo}); each option runs
    once on the first photo before the clock starts (graph tracing, caches).
    """
    scalable = {name: PerShape(model) for name, model in models.items()} if any(o.sizes for o in rows) else {}
    for option in rows:
        run_option(option, scalable if option.sizes else models, samples[0].model_input[None], [samples[0].image])
    predictions: dict[str, list[Prediction]] = {o.name: [] for o in rows}
    seconds: dict[str, list[float]] = {o.name: [] for o in rows}
    for sample in samples:
        for option in rows:
            started = time.perf_counter()
            prediction = run_option(
                option, scalable if option.sizes else models, sample.model_input[None], [sample.image]
            )
            seconds[option.name].append(time.perf_counter() - started)
            predictions[option.name].append(prediction)
    return predictions, seconds


def row(option: Option, predictions: Sequence[Prediction], seconds: Sequence[float], samples: Sequence[Sample]) -> dict:
    """One table row: the report's metrics of the option's answers, and its model time per photo."""
    scores = metrics.table([s.truth for s in samples], answer_masks(predictions, samples))
    rows, images = scores["per_class"], scores["images"]
    return {
        "option": option.name,
        "models": list(option.models),
        "label": option.label,
        "passes": option.passes,
        "sizes": list(option.sizes),
        **plain(
            {
                "iou": {r["name"]: r["iou"] for r in rows},
                "mean_iou": scores["mean_iou"],
                "per_image_iou": {r["name"]: r["per_image_iou"] for r in rows},
                "per_image_mean_iou": scores["per_image_mean_iou"],
                **{k: scores[k] for k in metrics.RATIO_KEYS},
            }
        ),
        "ms_per_image": 1000 * float(np.median(seconds)),
        "ms_per_image_mean": 1000 * float(np.mean(seconds)),
        # per photo, for paired comparisons: mean IoU as the Evaluate RPC gives it, and the ratio's error
        "photo_mean_iou": images["mean_iou"],
        "photo_ratio_error": [
            abs(t - p) for t, p in zip(images["truth_ratio"], images["predicted_ratio"], strict=True)
        ],
    }


def paired(a: Sequence[float], b: Sequence[float], seed: int = 0, resamples: int = 10_000) -> dict[str, float]:
    """The mean of the per-photo differences a - b, a seeded bootstrap 95% interval of it, and how many photos
    have a > b and a < b."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {
        "mean": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "up": int((diff > 0).sum()),
        "down": int((diff < 0).sum()),
    }


def table(rows: Sequence[dict]) -> str:
    """Markdown table of the rows."""
    classes = " / ".join(CLASS_NAMES)
    lines = [
        f"| option | passes | IoU {classes} | mean IoU | per-image IoU {classes} | per-image mean IoU "
        "| ratio MAE (points) | grade exact | grade within one | model ms/photo (median) |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        iou = " / ".join(percent(r["iou"][c]) for c in CLASS_NAMES)
        per_image = " / ".join(percent(r["per_image_iou"][c]) for c in CLASS_NAMES)
        lines.append(
            f"| {r['label']} | {r['passes']} | {iou} | {percent(r['mean_iou'])} | {per_image} "
            f"| {percent(r['per_image_mean_iou'])} | {percent(r['ratio_mae'])} | {percent(r['grade_exact'])}% "
            f"| {percent(r['grade_within_one'])}% | {r['ms_per_image']:.0f} |"
        )
    return "\n".join(lines)


def differences(rows: Sequence[dict]) -> list[str]:
    """Each option against its plain baseline (a single model's option against the model plain; the ensemble
    against each member plain): the change in mean IoU, per-image mean IoU and ratio MAE (points; negative is
    better), and the time factor."""
    by_name = {r["option"]: r for r in rows}
    lines = []
    for r in rows:
        for b in r["models"]:
            ref = by_name.get(b)
            if ref is None or ref is r:
                continue
            iou = paired(r["photo_mean_iou"], ref["photo_mean_iou"])
            err = paired(r["photo_ratio_error"], ref["photo_ratio_error"])
            lines.append(
                f"- {r['label']} vs {ref['label']}: mean IoU {100 * (r['mean_iou'] - ref['mean_iou']):+.2f}, "
                f"per-image mean IoU {100 * (r['per_image_mean_iou'] - ref['per_image_mean_iou']):+.2f}; "
                f"per-photo mean IoU {100 * iou['mean']:+.2f} (95% CI {100 * iou['low']:+.2f} to "
                f"{100 * iou['high']:+.2f}; better on {iou['up']}, worse on {iou['down']} photos); "
                f"ratio MAE {100 * err['mean']:+.2f} points (95% CI {100 * err['low']:+.2f} to "
                f"{100 * err['high']:+.2f}; lower on {err['down']}, higher on {err['up']} photos); "
                f"grade exact {100 * (r['grade_exact'] - ref['grade_exact']):+.1f}, "
                f"within one {100 * (r['grade_within_one'] - ref['grade_within_one']):+.1f} (% of photos); "
                f"model time x{r['ms_per_image'] / ref['ms_per_image']:.2f}"
            )
    return lines


def render(rows: Sequence[dict], command: str, split: str, n_images: int) -> str:
    """docs/results/inference_options.md."""
    members = next((r["models"] for r in rows if r["option"] == ENSEMBLE), [])
    served = f" The ensemble is the served one: {' and '.join(display_name(m) for m in members)}." if members else ""
    sized = any(r.get("sizes") for r in rows)
    scales = [
        "",
        "At N px: the photo resized to N instead of the model's input size (as serving resizes it); at several sizes",
        "(multi-scale): the mean of the model's probabilities at each, each brought back to the model's input size",
        "(bilinear) before the argmax. Passes count forward passes of any size.",
    ]
    lines = [
        "# Inference options: plain, horizontal-flip TTA, " + ("test-time sizes, " if sized else "") + "ensemble",
        "",
        f"{n_images} photos of the {split} split, the shipped releases (`models/`), through serving's path",
        "(`Predictor.predict` or `predict_ensemble`, the model service's wire format, `pipeline.postprocess`",
        "back at the photo's own size). IoU: dataset-level from the summed",
        "confusion matrix; per-image: the original project's smoothed per-image average. Ratio MAE: mean absolute",
        "error of the corroded share of the asset (corrosion_asset_ratio), in percentage points; grade: ASTM D610",
        "rust grade equal to the truth's, or within one. Model time: median over the photos of one model-service",
        "call of the option on one photo (batch of one; the ensemble runs each of its members), all rows in one",
        "process, the options interleaved photo by photo, on this 2-core CPU shared with other work, so compare",
        f"times within the table.{served}",
        *(scales if sized else []),
        "",
        "```bash",
        command,
        "```",
        "",
        table(rows),
        "",
        "Against the plain baseline (positive IoU and negative ratio MAE are better). Per-photo: the mean over the",
        "photos of the paired difference (mean IoU of the photo as the Evaluate RPC computes it; absolute error of",
        "its corroded share) with a seeded bootstrap 95% interval over the photos; an interval that holds 0 is",
        "within the noise of this split.",
        "",
        *differences(rows),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The compare options."""
    p = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (original/, ground_truth/, optional split files)")
    p.add_argument("--split", default="val", help="train, val or test (default val)")
    p.add_argument("--release-dir", default=str(store.DEFAULT_RELEASE_DIR), help="folder of the release files")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"markdown report (default {DEFAULT_OUT}); '' for none")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split when the dataset has no split files")
    p.add_argument("--limit", type=int, default=0, help="only the first N photos of the split")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: TensorFlow's default)")
    p.add_argument(
        "--sizes",
        type=size_group,
        action="append",
        default=[],
        metavar="N[,N...]",
        help="add each model at these test-time input sizes, the mean of their probabilities (repeatable: "
        "--sizes 192 --sizes 192,256,320)",
    )
    return p.parse_args(argv)


def size_group(text: str) -> tuple[int, ...]:
    """``--sizes``: comma-separated input sizes, each a multiple of 32 from 32 to 1024."""
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    bad = [n for n in sizes if not (32 <= n <= 1024 and n % 32 == 0)]
    if bad or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: each size a multiple of 32 from 32 to 1024, none twice")
    return sizes


def compare(args: argparse.Namespace, argv: Sequence[str] | None = None) -> list[dict]:
    """Measure every option on the split; print the table, write the report; returns the rows."""
    set_threads(args.threads)
    models, metas = load_releases(args.release_dir, NAMES)
    size = int(next(iter(metas.values())).get("input_size") or imaging.MODEL_INPUT_SIZE)
    samples = load_samples(args.data, args.split, size, args.seed, args.limit)
    require_held_out(metas, args.data, [s.id for s in samples], args.split)
    rows_to_run = options(list(models), [n for n in MEMBERS if n in models], args.sizes)
    print(f"{len(rows_to_run)} options on {len(samples)} {args.split} photos of {args.data}", flush=True)
    predictions, seconds = predict(rows_to_run, models, samples)
    rows = [row(o, predictions[o.name], seconds[o.name], samples) for o in rows_to_run]
    print(table(rows))
    print("\n".join(differences(rows)), flush=True)
    if args.out:
        argv = list(sys.argv[1:] if argv is None else argv)
        command = "python -m training.compare " + shlex.join(argv)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(rows, command, args.split, len(samples)))
        out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"written to {out} and {out.with_suffix('.json')}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.compare`` with ``argv`` (default: the command line)."""
    try:
        compare(parse_args(argv), argv)
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
