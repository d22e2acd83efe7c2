"""Fine-tune a shipped or served model on your own labelled photos, compare it with where it started, import it.

    python -m training.finetune --model deeplabv3plus --data FOLDER [--init-from release] [--import auto]

FOLDER is laid out like the training dataset: ``original/`` photos and ``ground_truth/`` colour masks (red
corrosion, blue asset, green or black background), paired by the number in their names, any size (they are
resized to the model's input size), split by ``train.txt`` / ``val.txt`` when present, else a seeded 80/10/10
split. The held-out part is the val split.

--init-from picks the start model: ``release`` (models/<model>.json and .weights.npz), a folder holding such
a release, ``store`` (the version the server serves now) or ``corrosion-<model>:VERSION`` from the BentoML
store. Training is training.train's loop with fine-tuning defaults (10 epochs, peak learning rate 1e-4 after
one warm-up epoch) under ``mixed_bfloat16`` where the CPU has bfloat16 instructions (``--precision auto``).

At the end both models, the start and the fine-tuned one (its best epoch on val, rebuilt in float32 as the
server runs it), are evaluated on the held-out photos with serving's postprocessing, side by side; the
comparison goes to ``<out>/finetune.json`` and ``<out>/comparison.md``. ``--import auto`` (default) imports
the fine-tuned model into the BentoML store as a new version of ``corrosion-<model>`` when its held-out
mean IoU is higher, ``always`` imports it anyway, ``never`` does not. An imported version is a candidate, with
its metrics, its recipe and the start model's review thresholds: ``training.calibrate --store`` calibrates its
thresholds, ``training.evaluate --against served`` compares it with the served version, ``segserve promote
<model>`` serves it from the next server start and ``segserve rollback <model>`` serves the previous one again
(docs/training.md, "The retraining loop").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from typing import Any

from segserve import store
from segserve.errors import SegServeError
from training import loop
from training.comparison import comparison_markdown, held_out_metrics, print_comparison, verdict
from training.compute import as_float32, set_threads
from training.data import DatasetError, load_arrays, pairs_by_id, split_of
from training.metadata import build_metadata, require_held_out, trained_on
from training.sources import load_run_model, load_start

IMPORT_CHOICES = ("auto", "always", "never")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """training.train's options with fine-tuning defaults, and --import."""
    parser = loop.build_parser("python -m training.finetune", __doc__.split("\n")[0])
    parser.set_defaults(
        init_from="release",
        epochs=10,
        lr=1e-4,
        warmup_epochs=1,
        precision="auto",
        input_size=0,
    )
    parser.add_argument(
        "--import",
        dest="do_import",
        choices=IMPORT_CHOICES,
        default="auto",
        help="import the fine-tuned model into the BentoML store: auto (when its held-out mean IoU is higher "
        "than the start model's), always, never",
    )
    # The help of the options whose defaults differ from training.train's.
    for action in parser._actions:
        if action.dest == "out":
            action.help = "run folder (default runs/finetune-<model>)"
        if action.dest == "input_size":
            action.help = "side images are resized to (default: the start model's input_size)"
        if action.dest == "init_from":
            action.help = (
                "the start model: release (models/<model>.*, the default), a release folder, store (the served "
                "version in the BentoML store) or corrosion-<model>:VERSION"
            )
    return loop.parse_args(argv, parser)


def finetune(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    """Fine-tune, compare on the held-out photos, import as asked; returns what finetune.json holds."""
    name = args.model
    store.store_name(name)
    set_threads(args.threads)  # before TensorFlow starts running anything, which loading the start model does
    start = load_start(name, args.init_from)
    # the comparison that decides the import is on the val split: the start model must not have trained on it
    val_ids = [p.id for p in split_of(args.data, "val", args.seed, args.limit)]
    remedy = "Fine-tune it on photos of your own, whose val split it has not seen, or start from another model."
    require_held_out({f"the start model ({start.description})": start.metadata}, args.data, val_ids, "val", remedy)
    args.input_size = args.input_size or start.input_size
    if args.input_size % 16:
        raise SegServeError(f"input size {args.input_size} is not divisible by 16")
    args.out = args.out or f"runs/finetune-{name}"
    run_dir = loop.run(args, start=start)

    config = json.loads((run_dir / "config.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    pairs = pairs_by_id(args.data, config["val_ids"], "val ids of the run")
    images, truth = load_arrays(pairs, args.input_size)
    tuned = as_float32(name, load_run_model(run_dir), start.builder_kwargs)
    print(f"evaluating the start model and the fine-tuned one on {len(pairs)} held-out photos", flush=True)
    before = held_out_metrics(start.model, images, truth)
    after = held_out_metrics(tuned, images, truth)
    print_comparison(before, after)

    better = verdict(before, after)
    tag = None
    if args.do_import == "always" or (args.do_import == "auto" and better):
        trained_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        metadata = build_metadata(config, state, after, trained_at, start=start, start_val=before)
        tag = store.save_to_store(tuned, name, metadata, candidate=True)
        decision = (
            f"imported as {tag}, a candidate: calibrate it, compare it with the served version, then "
            f"`segserve promote {name}` serves it from the next server start"
        )
    elif args.do_import == "auto":
        decision = "not imported: its held-out mean IoU is not higher than the start model's (--import always forces)"
    else:
        decision = "not imported (--import never)"
    print(decision, flush=True)

    summary = {
        "model": name,
        "command": command,
        "trained_from": start.description,
        "trained_on": trained_on(config),
        "precision": config.get("resolved_precision"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "train_seconds": state.get("train_seconds"),
        "first_batch_loss": state.get("first_batch_loss"),
        "held_out_images": len(pairs),
        "start": before,
        "fine_tuned": after,
        "imported": tag,
        "decision": decision,
    }
    (run_dir / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run_dir / "comparison.md").write_text(
        f"# Fine-tune of {name}\n\n"
        + (f"```bash\n{command}\n```\n\n" if command else "")
        + f"From {start.description}, on {summary['trained_on']}, {config.get('resolved_precision')}; "
        f"best epoch {state.get('best_epoch')} of {state.get('epoch')} (chosen on val mean IoU), "
        f"{state.get('train_seconds', 0):.0f} s of training.\n\n"
        f"Held-out (val, {len(pairs)} photos, serving's postprocessing):\n\n"
        + comparison_markdown(before, after)
        + f"\n\n{decision}.\n"
    )
    print(f"comparison written to {run_dir / 'comparison.md'}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.finetune`` with ``argv`` (default: the command line)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "training.finetune", *argv])
    try:
        finetune(args, command)
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
