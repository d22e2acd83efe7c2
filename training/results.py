"""Print the results tables of the shipped models (README "Results") from their release metadata.

python -m training.results [--release-dir models]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segserve.architectures import SHIPPED as ARCHITECTURES
from segserve.store import DEFAULT_RELEASE_DIR
from training.formatting import DISPLAY_NAMES as LABELS
from training.formatting import percent
from training.report import PUBLISHED


def results_table(release_dir: Path) -> str:
    """Markdown: per model and class, validation IoU/Dice (standard and per-image) beside the published numbers."""
    lines = [
        "| model | class | IoU | Dice | per-image IoU | per-image Dice | published per-image IoU | published Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name in ARCHITECTURES:
        path = release_dir / f"{name}.json"
        if not path.exists():
            continue
        meta = json.loads(path.read_text())
        val = meta["val_metrics"]
        for row in val["per_class"]:
            published = PUBLISHED.get(name, {}).get(row["name"])
            pub_iou, pub_dice = (percent(published["iou"]), percent(published["dice"])) if published else ("", "")
            lines.append(
                f"| {LABELS[name]} | {row['name']} | {percent(row.get('iou'))} | {percent(row.get('dice'))} | "
                f"{percent(row.get('per_image_iou'))} | {percent(row.get('per_image_dice'))} | {pub_iou} | {pub_dice} |"
            )
        notes.append(
            f"- {LABELS[name]}: mean IoU {percent(val.get('mean_iou'))}, pixel accuracy "
            f"{percent(val.get('pixel_accuracy'))} on {val.get('num_images')} val images{measured_by(meta)}; "
            "encoder weights "
            f"`{meta.get('encoder_weights')}`; best epoch "
            f"{meta.get('best_epoch')} of {meta.get('epochs_run')}; {meta.get('train_seconds', 0) / 60:.0f} min of "
            f"training; float16 masks match float32 on {100 * meta.get('float16_agreement', 0):.3f}% of val pixels."
        )
    return "\n".join(lines + [""] + notes + ["", inspector_table(release_dir)])


def measured_by(meta: dict) -> str:
    """For a final fit (trained on train and val, so nothing of val is held out): whose val figures it carries."""
    if not meta.get("validation_source"):
        return ""
    return f" (its recipe's run on the train split's; these weights were fit on {meta.get('trained_on', 'train+val')})"


def inspector_table(release_dir: Path) -> str:
    """Markdown: per model, what an inspector reads: the error of the corroded share and the rust grade agreement."""
    lines = [
        "| model | corroded-share MAE (points) | rust grade exact | rust grade within one |",
        "|---|---|---|---|",
    ]
    for name in ARCHITECTURES:
        path = release_dir / f"{name}.json"
        if not path.exists():
            continue
        val = json.loads(path.read_text())["val_metrics"]
        if "ratio_mae" not in val:
            continue
        lines.append(
            f"| {LABELS[name]} | {percent(val['ratio_mae'])} | {percent(val.get('grade_exact'))}% | "
            f"{percent(val.get('grade_within_one'))}% |"
        )
    return "\n".join(lines)


def main() -> None:
    """Print the tables of the releases in ``--release-dir``."""
    parser = argparse.ArgumentParser(prog="python -m training.results", description=__doc__.split("\n")[0])
    parser.add_argument("--release-dir", type=Path, default=DEFAULT_RELEASE_DIR)
    print(results_table(parser.parse_args().release_dir))


if __name__ == "__main__":
    main()
