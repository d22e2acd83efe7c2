"""Model store access: shipped release files under models/, and the BentoML model store.

A release is two files per model in ``models/``: ``<name>.weights.npz`` (the weights, float16, in the
order of ``model.weights``) and ``<name>.json`` (metadata: builder arguments, class table, input size,
encoder weights, validation metrics, training time, dataset split). Importing a release rebuilds the
architecture from code, loads the weights as float32 and writes a ``model.keras`` into the BentoML store
under ``corrosion-<name>`` with the metadata. Keras is loaded by hand (``bentoml.keras`` is deprecated
and mishandles Keras 3 files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segserve.classes import class_table
from segserve.errors import ModelNotInStore, UnknownModel

ARCHITECTURES = ("deeplabv3plus", "unet")
MODEL_FILE = "model.keras"
DEFAULT_RELEASE_DIR = Path(__file__).resolve().parents[2] / "models"


def store_name(name: str) -> str:
    """The BentoML store name of a served model: ``corrosion-<name>``."""
    if name not in ARCHITECTURES:
        raise UnknownModel(f"unknown model {name!r}; this server serves {', '.join(ARCHITECTURES)}")
    return f"corrosion-{name}"


@dataclass(frozen=True)
class ModelInfo:
    """What the server tells about a loaded model."""

    name: str
    version: str
    architecture: str
    input_size: int
    metadata: dict[str, Any] = field(default_factory=dict)


def save_to_store(model, name: str, metadata: dict[str, Any]) -> str:
    """Write a Keras model and its metadata into the BentoML store as ``corrosion-<name>``; return the tag."""
    import bentoml

    meta = {"architecture": name, "classes": class_table(), **metadata}
    with bentoml.models.create(store_name(name), metadata=meta, labels={"architecture": name}) as ref:
        model.save(ref.path_of(MODEL_FILE))
    return str(ref.tag)


def store_ref(name: str):
    """The latest ``corrosion-<name>`` in the BentoML store; ModelNotInStore says how to get it if missing."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(f"{store_name(name)}:latest")
    except NotFound as exc:
        raise ModelNotInStore(
            f"model {store_name(name)} is not in the BentoML model store ({_store_home()}). "
            "Import the shipped weights with `make models` (python -m segserve.cli import-models), "
            f"or train one with `python -m training.train --model {name} ...` and export it."
        ) from exc


def load_from_store(name: str):
    """Load ``corrosion-<name>:latest`` from the BentoML store; returns (keras.Model, ModelInfo)."""
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)

    ref = store_ref(name)
    model = keras.saving.load_model(ref.path_of(MODEL_FILE), compile=False)
    meta = dict(ref.info.metadata)
    info = ModelInfo(
        name=name,
        version=ref.tag.version or "",
        architecture=str(meta.get("architecture", name)),
        input_size=int(meta.get("input_size", 256)),
        metadata=meta,
    )
    return model, info


def _store_home() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def release_paths(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR) -> tuple[Path, Path]:
    """(weights .npz, metadata .json) of a shipped release."""
    root = Path(release_dir)
    return root / f"{name}.weights.npz", root / f"{name}.json"


def export_release(model, name: str, metadata: dict[str, Any], release_dir: str | Path = DEFAULT_RELEASE_DIR) -> None:
    """Write a release: the model's weights as float16 and its metadata (which must hold ``builder_kwargs``)."""
    weights_path, meta_path = release_paths(name, release_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i:04d}": np.asarray(w).astype(np.float16) for i, w in enumerate(model.get_weights())}
    np.savez_compressed(weights_path, **arrays)
    meta = {"architecture": name, "classes": class_table(), "weights_dtype": "float16", **metadata}
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_release(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR):
    """Rebuild a shipped release in float32; returns (keras.Model, metadata)."""
    from segserve.models import build_model

    weights_path, meta_path = release_paths(name, release_dir)
    if not weights_path.exists() or not meta_path.exists():
        raise ModelNotInStore(
            f"no shipped release of {name} in {Path(release_dir)}: expected {weights_path.name} and {meta_path.name}"
        )
    meta = json.loads(meta_path.read_text())
    model = build_model(name, **meta.get("builder_kwargs", {}))
    with np.load(weights_path) as arrays:
        weights = [arrays[f"w{i:04d}"].astype(np.float32) for i in range(len(arrays.files))]
    model.set_weights(weights)
    return model, meta


def import_release(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR, force: bool = False) -> str | None:
    """Import a shipped release into the BentoML store unless one is there (or ``force``); return the new tag."""
    if not force:
        try:
            store_ref(name)
            return None
        except ModelNotInStore:
            pass
    model, meta = load_release(name, release_dir)
    return save_to_store(model, name, meta)
