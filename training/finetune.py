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
mean IoU is higher, ``always`` imports it anyway, ``never`` does not. An imported version is the one served
from the next server start; ``segserve rollback <model>`` serves the previous one again.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segserve import imaging, metrics, store
from segserve.errors import ModelNotInStore, SegServeError
from training import train
from training.data import DatasetError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
IMPORT_CHOICES = ("auto", "always", "never")


# ----------------------------------------------------------------------------------------------- precision


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 instructions (avx512_bf16 or amx_bf16 among its /proc/cpuinfo flags)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    return False


def resolve_precision(choice: str) -> str:
    """``auto | float32 | mixed_bfloat16`` -> the Keras dtype policy to train under."""
    if choice == "auto":
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if choice not in ("float32", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {choice!r}; choose auto, float32 or mixed_bfloat16")
    return choice


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Build layers in float32 whatever the global Keras dtype policy is, and restore it after."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def as_float32(name: str, model, builder_kwargs: dict[str, Any] | None = None):
    """The same architecture rebuilt in float32 with ``model``'s weights: what the server loads and runs.

    A model trained under ``mixed_bfloat16`` computes in bfloat16 when saved as it is; its variables are
    float32 already, so copying them loses nothing.
    """
    from segserve.models import build_model

    with float32_policy():
        fresh = build_model(name, **(builder_kwargs or {}))
    try:
        fresh.set_weights(model.get_weights())
    except ValueError as exc:
        raise SegServeError(f"the start model is not a {name} built with {builder_kwargs or {}}: {exc}") from exc
    return fresh


# ----------------------------------------------------------------------------------------------- start


@dataclass
class StartModel:
    """The model a fine-tune starts from, in float32.

    description: where it came from, as recorded in the new version's ``trained_from``.
    """

    model: Any
    metadata: dict[str, Any]
    description: str
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = imaging.MODEL_INPUT_SIZE


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies under it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _from_release(name: str, release_dir: Path) -> StartModel:
    with float32_policy():
        model, meta = store.load_release(name, release_dir)
    _, meta_path = store.release_paths(name, release_dir)
    description = f"release {_shown(meta_path)} (trained_at {meta.get('trained_at', 'unknown')})"
    return StartModel(
        model=model,
        metadata=meta,
        description=description,
        builder_kwargs=dict(meta.get("builder_kwargs") or {}),
        input_size=int(meta.get("input_size") or imaging.MODEL_INPUT_SIZE),
    )


def _from_store(name: str, spec: str) -> StartModel:
    import bentoml
    import keras
    from bentoml.exceptions import BentoMLException, NotFound

    import segserve.models  # noqa: F401  (registers the custom layers)

    if spec == "store":
        ref = store.store_ref(name)
    else:
        tag_name, _, version = spec.partition(":")
        if tag_name != store.store_name(name):
            raise SegServeError(f"--init-from {spec} is not a version of {store.store_name(name)}")
        try:
            ref = bentoml.models.get(f"{tag_name}:{version or 'latest'}")
        except (NotFound, BentoMLException) as exc:
            raise ModelNotInStore(f"{spec} is not in the BentoML model store: {exc}") from exc
    meta = dict(ref.info.metadata)
    builder_kwargs = dict(meta.get("builder_kwargs") or {})
    with float32_policy():
        loaded = keras.saving.load_model(ref.path_of(store.MODEL_FILE), compile=False)
    return StartModel(
        model=as_float32(name, loaded, builder_kwargs),
        metadata=meta,
        description=str(ref.tag),
        builder_kwargs=builder_kwargs,
        input_size=int(meta.get("input_size") or imaging.MODEL_INPUT_SIZE),
    )


def load_start(name: str, spec: str) -> StartModel:
    """The start model of ``--init-from SPEC``: ``release``, a release folder (or one of its files), ``store``
    (the served version) or ``corrosion-<name>:VERSION``."""
    if spec == "release":
        return _from_release(name, store.DEFAULT_RELEASE_DIR)
    path = Path(spec)
    if path.exists():
        if path.is_file():
            expected = store.release_paths(name, path.parent)
            if path.resolve() not in {p.resolve() for p in expected}:
                raise SegServeError(f"--init-from {spec}: a {name} release is {expected[1].name} + {expected[0].name}")
            path = path.parent
        return _from_release(name, path)
    if spec == "store" or spec.startswith("corrosion-"):
        return _from_store(name, spec)
    raise SegServeError(
        f"--init-from {spec}: neither an existing release folder nor a store model (release, a folder holding "
        f"{name}.json and {name}.weights.npz, store, or {store.store_name(name)}:VERSION)"
    )


# ----------------------------------------------------------------------------------------------- evaluation


def held_out_metrics(model, images, truth) -> dict[str, Any]:
    """The metrics of a model on held-out photos, through serving's path (``training.train.predict_masks``),
    in the layout of a release's ``val_metrics`` (``training.export.val_metrics``), ratio agreement included."""
    from training.export import val_metrics
    from training.report import compute_metrics

    pred = train.predict_masks(model, images)
    result, _ = compute_metrics(truth, pred)
    result["split"] = "val"
    summary = val_metrics(result)
    for key, value in metrics.ratio_agreement(truth, pred).items():
        summary.setdefault(key, value)
    return summary


# Rows of the side-by-side table: (label, getter, scale, decimals). Ratio MAE is in percentage points.
def _class_iou(name: str):
    return lambda m: next((row.get("iou") for row in m.get("per_class", []) if row["name"] == name), None)


COMPARISON_ROWS = (
    ("mean IoU (%)", lambda m: m.get("mean_iou"), 100),
    ("IoU corrosion (%)", _class_iou("corrosion"), 100),
    ("IoU asset (%)", _class_iou("asset"), 100),
    ("IoU background (%)", _class_iou("background"), 100),
    ("per-image mean IoU (%)", lambda m: m.get("per_image_mean_iou"), 100),
    ("pixel accuracy (%)", lambda m: m.get("pixel_accuracy"), 100),
    ("ratio MAE (points, lower is better)", lambda m: m.get("ratio_mae"), 100),
    ("grade exact (%)", lambda m: m.get("grade_exact"), 100),
    ("grade within one (%)", lambda m: m.get("grade_within_one"), 100),
)


def comparison_rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, start, fine-tuned, change) as formatted strings."""
    rows = []
    for label, get, scale in COMPARISON_ROWS:
        a, b = get(before), get(after)
        fa = "n/a" if a is None else f"{scale * a:.2f}"
        fb = "n/a" if b is None else f"{scale * b:.2f}"
        change = "" if a is None or b is None else f"{scale * (b - a):+.2f}"
        rows.append((label, fa, fb, change))
    return rows


def comparison_markdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| metric | start | fine-tuned | change |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {a} | {b} | {c} |" for label, a, b, c in comparison_rows(before, after)]
    return "\n".join(lines)


def print_comparison(before: dict[str, Any], after: dict[str, Any]) -> None:
    print(f"{'held-out (val)':<38}{'start':>10}{'fine-tuned':>12}{'change':>9}")
    for label, a, b, c in comparison_rows(before, after):
        print(f"{label:<38}{a:>10}{b:>12}{c:>9}")


# ----------------------------------------------------------------------------------------------- command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = train.build_parser("python -m training.finetune", __doc__.split("\n")[0])
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
    return train.parse_args(argv, parser)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def trained_on(config: dict[str, Any]) -> str:
    """The data folder and how many photos trained and validated the model, from a run's config.json."""
    data = Path(str(config["data"])).resolve()
    return f"{data} ({len(config['train_ids'])} train / {len(config['val_ids'])} val photos)"


def build_metadata(
    start: StartModel, config: dict[str, Any], state: dict[str, Any], after: dict[str, Any], before: dict[str, Any]
) -> dict[str, Any]:
    """Store metadata of the fine-tuned version: where it came from, what it was trained on, its metrics."""
    data = Path(str(config["data"])).resolve()
    meta = {
        "builder_kwargs": start.builder_kwargs,
        "input_size": int(config["input_size"]),
        "encoder_weights": start.metadata.get("encoder_weights"),
        "val_metrics": after,
        "start_val_metrics": before,
        "trained_from": start.description,
        "trained_on": trained_on(config),
        "trained_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "precision": config.get("resolved_precision"),
        "train_seconds": state.get("train_seconds"),
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "dataset": data.name,
        "train_ids": config["train_ids"],
        "val_ids": config["val_ids"],
    }
    if start.metadata.get("review"):
        meta["review"] = start.metadata["review"]
    return _drop_none(meta)


def finetune(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    """Fine-tune, compare on the held-out photos, import as asked; returns what finetune.json holds."""
    from training.data import load_arrays
    from training.export import val_pairs
    from training.report import load_run_model

    name = args.model
    store.store_name(name)
    if args.threads:  # before TensorFlow starts running anything, which loading the start model does
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    start = load_start(name, args.init_from)
    args.input_size = args.input_size or start.input_size
    if args.input_size % 16:
        raise SegServeError(f"input size {args.input_size} is not divisible by 16")
    args.out = args.out or f"runs/finetune-{name}"
    run_dir = train.run(args, start=start)

    config = json.loads((run_dir / "config.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    pairs = val_pairs(config, args.data)
    images, truth = load_arrays(pairs, args.input_size)
    tuned = as_float32(name, load_run_model(run_dir), start.builder_kwargs)
    print(f"evaluating the start model and the fine-tuned one on {len(pairs)} held-out photos", flush=True)
    before = held_out_metrics(start.model, images, truth)
    after = held_out_metrics(tuned, images, truth)
    print_comparison(before, after)

    better = after["mean_iou"] > before["mean_iou"]
    tag = None
    if args.do_import == "always" or (args.do_import == "auto" and better):
        metadata = build_metadata(start, config, state, after, before)
        tag = store.save_to_store(tuned, name, metadata)
        decision = f"imported as {tag}, the version served from the next server start"
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
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "training.finetune", *argv])
    try:
        finetune(args, command)
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
