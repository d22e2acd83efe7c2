"""Model store access: shipped release files under models/, and the BentoML model store.

A release is two files per model in ``models/``: ``<name>.weights.npz`` (the weights, float16, in the
order of ``model.weights``) and ``<name>.json`` (metadata: builder arguments, class table, input size,
encoder weights, validation metrics, training time, dataset split). Importing a release rebuilds the
architecture from code, loads the weights as float32 and writes a ``model.keras`` into the BentoML store
under ``corrosion-<name>`` with the metadata. Keras is loaded by hand (``bentoml.keras`` is deprecated
and mishandles Keras 3 files).

Every import is a new version of ``corrosion-<name>``; older versions stay in the store. The server loads
the served version of each model at start-up: ``latest``, unless a version is pinned in
``$BENTOML_HOME/segserve/served.json`` (``segserve use NAME:VERSION``, ``segserve rollback NAME``). A new
import clears its model's pin, so the newest version is served until someone pins another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segserve.architectures import NAMES
from segserve.classes import class_table
from segserve.errors import ModelNotInStore, UnknownModel
from segserve.imaging import MODEL_INPUT_SIZE
from segserve.predictor import KERAS_FILE, ONNX_FILE, export_onnx

MODEL_FILE = KERAS_FILE
DEFAULT_RELEASE_DIR = Path(__file__).resolve().parents[2] / "models"
PINS_FILE = "served.json"


def store_name(name: str) -> str:
    """The BentoML store name of a served model: ``corrosion-<name>``."""
    if name not in NAMES:
        raise UnknownModel(f"unknown model {name!r}; the architectures are {', '.join(NAMES)}")
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
    """Write a Keras model and its metadata into the BentoML store as a new version of ``corrosion-<name>``,
    clear the model's pin so that this version is the one served, and return the tag."""
    import bentoml

    meta = {"architecture": name, "classes": class_table(), **metadata}
    with bentoml.models.create(store_name(name), metadata=meta, labels={"architecture": name}) as ref:
        model.save(ref.path_of(MODEL_FILE))
        export_onnx(model, ref.path_of(ONNX_FILE), int(meta.get("input_size", MODEL_INPUT_SIZE)))
    unpin(name)
    return str(ref.tag)


def store_ref(name: str):
    """The served ``corrosion-<name>``: the pinned version if one is pinned, else the latest.

    ModelNotInStore says how to get the model if the store has none, or how to unpin a pinned version that is
    gone from the store.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    pinned = read_pins().get(store_name(name))
    if pinned:
        try:
            return bentoml.models.get(f"{store_name(name)}:{pinned}")
        except NotFound as exc:
            raise ModelNotInStore(
                f"{store_name(name)}:{pinned} is pinned as the served version in {pins_path()} but is not in the "
                f"BentoML model store ({_store_home()}); serve the latest with `segserve use {name}:latest`, "
                f"or another with `segserve use {name}:VERSION` (`segserve versions {name}` lists them)."
            ) from exc
    try:
        return bentoml.models.get(f"{store_name(name)}:latest")
    except NotFound as exc:
        raise ModelNotInStore(
            f"model {store_name(name)} is not in the BentoML model store ({_store_home()}). "
            "Import the shipped weights with `make models` (python -m segserve.cli import-models), "
            f"or train one with `python -m training.train --model {name} ...` and export it."
        ) from exc


def list_versions(name: str) -> list:
    """Every version of ``corrosion-<name>`` in the store (bentoml Model objects), newest first."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        refs = bentoml.models.list(store_name(name))
    except NotFound:
        return []
    return sorted(refs, key=lambda ref: ref.info.creation_time, reverse=True)


def pins_path() -> Path:
    """The file recording pinned served versions: ``$BENTOML_HOME/segserve/served.json``."""
    return Path(_store_home()) / "segserve" / PINS_FILE


def read_pins() -> dict[str, str]:
    """Pinned served versions, store name -> version (empty when nothing is pinned)."""
    path = pins_path()
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def _write_pins(pins: dict[str, str]) -> None:
    path = pins_path()
    if not pins:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def pin(name: str, version: str) -> str | None:
    """Serve ``corrosion-<name>:<version>`` (a unique prefix of a version will do) from the next server start;
    ``latest`` removes the pin. Returns the full version pinned, None for latest; ModelNotInStore if missing."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    if version in ("", "latest"):
        unpin(name)
        return None
    try:
        ref = bentoml.models.get(f"{store_name(name)}:{version}")
    except (NotFound, BentoMLException) as exc:
        raise ModelNotInStore(
            f"{store_name(name)}:{version} is not in the BentoML model store ({_store_home()}): {exc}"
        ) from exc
    pins = read_pins()
    pins[store_name(name)] = str(ref.tag.version)
    _write_pins(pins)
    return str(ref.tag.version)


def unpin(name: str) -> None:
    """Serve the latest ``corrosion-<name>`` again."""
    pins = read_pins()
    if pins.pop(store_name(name), None) is not None:
        _write_pins(pins)


def rollback(name: str) -> tuple[str, str]:
    """Pin the version of ``corrosion-<name>`` created before the one served now; returns (old, new) versions.

    ModelNotInStore when the served version is the oldest in the store.
    """
    served = str(store_ref(name).tag.version)
    versions = [str(ref.tag.version) for ref in list_versions(name)]
    position = versions.index(served)
    if position + 1 >= len(versions):
        raise ModelNotInStore(
            f"{store_name(name)}:{served} is the oldest version in the store ({_store_home()}); "
            "there is nothing to roll back to"
        )
    previous = versions[position + 1]
    pin(name, previous)
    return served, previous


def load_from_store(name: str):
    """Load the served ``corrosion-<name>`` (see :func:`store_ref`); returns (keras.Model, ModelInfo)."""
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)

    model_dir, info = served_model(name)
    return keras.saving.load_model(model_dir / MODEL_FILE, compile=False), info


def served_model(name: str) -> tuple[Path, ModelInfo]:
    """The folder of the served ``corrosion-<name>`` in the store (model.keras, model.onnx) and its ModelInfo."""
    ref = store_ref(name)
    meta = dict(ref.info.metadata)
    info = ModelInfo(
        name=name,
        version=ref.tag.version or "",
        architecture=str(meta.get("architecture", name)),
        input_size=int(meta.get("input_size", MODEL_INPUT_SIZE)),
        metadata=meta,
    )
    return Path(ref.path), info


def openvino_cache_dir() -> Path:
    """Where OpenVINO keeps the compiled models by default: ``$BENTOML_HOME/segserve/openvino-cache``."""
    return Path(_store_home()) / "segserve" / "openvino-cache"


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
