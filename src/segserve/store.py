"""Model store access: shipped release files under models/, and the BentoML model store.

A release is two files per model in ``models/``: ``<name>.weights.npz`` (the weights, float16 but for any array
beyond its range, in the order of ``model.weights``) and ``<name>.json`` (metadata: builder arguments, class
table, input size, encoder weights, validation metrics, training time, dataset split). Importing a release rebuilds the
architecture from code, loads the weights as float32 and writes a ``model.keras`` into the BentoML store
under ``corrosion-<name>`` with the metadata. Keras is loaded by hand (``bentoml.keras`` is deprecated
and mishandles Keras 3 files).

Every import is a new version of ``corrosion-<name>``; older versions stay in the store. A version is a
*release* (imported from release files: ``segserve import-models``) or a *candidate* (a fine-tune, or an export
imported as one: ``candidate: true`` in its metadata), which is not served until ``segserve promote`` records
``promoted_at`` in its metadata. The server loads the served version of each model at start-up: the version
pinned in ``$BENTOML_HOME/segserve/served.json`` (``segserve use NAME:VERSION``, ``segserve rollback NAME``),
else the newest version that is a release or a promoted candidate (the newest version of all when there are
only candidates, as in a bento built from ``:latest``). A new release and a promotion clear the model's pin.

A version imported from release files records the SHA-256 of the weights file (``release_sha256``), so that
``import_release`` imports a release once, and a changed release (new weights) as a new version.
``update_metadata`` rewrites a version's metadata in place: calibration records its review thresholds there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segserve.architectures import NAMES
from segserve.classes import class_table
from segserve.errors import ModelNotInStore, SegServeError, UnknownModel
from segserve.imaging import MODEL_INPUT_SIZE
from segserve.predictor import KERAS_FILE, ONNX_FILE, export_onnx

MODEL_FILE = KERAS_FILE
DEFAULT_RELEASE_DIR = Path(__file__).resolve().parents[2] / "models"
PINS_FILE = "served.json"
# Metadata keys of a store version: made as a candidate, when it was promoted, the release weights it holds.
CANDIDATE = "candidate"
PROMOTED_AT = "promoted_at"
RELEASE_SHA256 = "release_sha256"
# What identifies the training run of a release imported before ``release_sha256`` was recorded.
RUN_KEYS = ("trained_at", "train_seconds", "best_epoch", "epochs_run")
# The version specs ``resolve`` reads besides a version or a unique prefix of one.
SERVED, NEWEST_CANDIDATE = "served", "candidate"


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


def save_to_store(model, name: str, metadata: dict[str, Any], candidate: bool = False) -> str:
    """Write a Keras model and its metadata into the BentoML store as a new version of ``corrosion-<name>`` and
    return the tag. A release (``candidate`` false) clears the model's pin, so that it is the one served; a
    candidate is served once promoted (:func:`promote`)."""
    import bentoml

    meta = {"architecture": name, "classes": class_table(), **metadata}
    meta.pop(PROMOTED_AT, None)
    if candidate:
        meta[CANDIDATE] = True
    else:
        meta.pop(CANDIDATE, None)
    with bentoml.models.create(store_name(name), metadata=meta, labels={"architecture": name}) as ref:
        model.save(ref.path_of(MODEL_FILE))
        export_onnx(model, ref.path_of(ONNX_FILE), int(meta.get("input_size", MODEL_INPUT_SIZE)))
    if not candidate:
        unpin(name)
    return str(ref.tag)


def is_candidate(ref) -> bool:
    """Whether a store version is a candidate not yet promoted (never served unless pinned)."""
    meta = ref.info.metadata
    return bool(meta.get(CANDIDATE)) and not meta.get(PROMOTED_AT)


def store_ref(name: str):
    """The served ``corrosion-<name>``: the pinned version if one is pinned, else the newest release or promoted
    candidate (else the newest version, when every version is an unpromoted candidate).

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
                f"BentoML model store ({_store_home()}); serve the newest with `segserve use {name}:latest`, "
                f"or another with `segserve use {name}:VERSION` (`segserve versions {name}` lists them)."
            ) from exc
    refs = list_versions(name)
    if not refs:
        raise ModelNotInStore(
            f"model {store_name(name)} is not in the BentoML model store ({_store_home()}). "
            "Import the shipped weights with `make models` (python -m segserve.cli import-models), "
            f"or train one with `python -m training.train --model {name} ...` and export it."
        )
    return next((ref for ref in refs if not is_candidate(ref)), refs[0])


def resolve(name: str, spec: str = SERVED):
    """The store version of ``corrosion-<name>`` that ``spec`` names: ``served`` (:func:`store_ref`),
    ``candidate`` (the newest candidate not yet promoted), ``latest`` (the newest), or a version or a unique
    prefix of one. ModelNotInStore when there is none."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    if spec in ("", SERVED):
        return store_ref(name)
    if spec == NEWEST_CANDIDATE:
        found = next((ref for ref in list_versions(name) if is_candidate(ref)), None)
        if found is None:
            raise ModelNotInStore(
                f"{store_name(name)} has no candidate waiting for promotion in the BentoML model store "
                f"({_store_home()}); `segserve versions {name}` lists its versions"
            )
        return found
    try:
        return bentoml.models.get(f"{store_name(name)}:{spec}")
    except (NotFound, BentoMLException) as exc:
        raise ModelNotInStore(
            f"{store_name(name)}:{spec} is not in the BentoML model store ({_store_home()}): {exc}"
        ) from exc


def update_metadata(ref, changes: dict[str, Any]):
    """Rewrite the metadata of a store version in place: ``changes`` replace or add top-level keys, a value of
    None removes its key (and None inside a value is left out: BentoML's metadata holds none). Returns the
    version as re-read from the store; a version that would not read back is left as it was (SegServeError)."""
    import bentoml
    import yaml

    path = Path(ref.path) / "model.yaml"
    before = path.read_text(encoding="utf-8")
    document = yaml.safe_load(before)
    metadata = dict(document.get("metadata") or {})
    plain = json.loads(json.dumps(changes, default=_plain))  # JSON types (NumPy numbers too), as BentoML stores
    for key, value in plain.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = without_none(value)
    document["metadata"] = metadata
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    try:
        return bentoml.models.get(ref.tag)
    except Exception as exc:  # BentoML refused what was written: put the version back as it was
        path.write_text(before, encoding="utf-8")
        raise SegServeError(f"the metadata of {ref.tag} cannot be updated: {exc}") from exc


def without_none(value: Any) -> Any:
    """``value`` with every None left out of its dicts and lists (BentoML's metadata cannot hold None)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value if v is not None]
    return value


def _plain(value: Any) -> Any:
    """A NumPy number as its Python value (for JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be stored in a model's metadata")


def promote(name: str, version: str = NEWEST_CANDIDATE) -> tuple[str, bool]:
    """Serve a version of ``corrosion-<name>`` from the next server start (default: the newest candidate); a
    candidate gets ``promoted_at``. Returns (the full version, whether it had to be pinned: it is older than the
    newest release or promoted version). ModelNotInStore when there is no such version."""
    ref = resolve(name, version)
    if is_candidate(ref):
        stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        ref = update_metadata(ref, {PROMOTED_AT: stamp})
    full = str(ref.tag.version)
    unpin(name)
    pinned = str(store_ref(name).tag.version) != full
    if pinned:
        pin(name, full)
    return full, pinned


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
    ``latest`` removes the pin (the newest release or promoted version is served). Returns the full version
    pinned, None for latest; ModelNotInStore if missing."""
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
    """Serve the newest release or promoted version of ``corrosion-<name>`` again."""
    pins = read_pins()
    if pins.pop(store_name(name), None) is not None:
        _write_pins(pins)


def rollback(name: str) -> tuple[str, str]:
    """Pin the release or promoted version of ``corrosion-<name>`` created before the one served now (candidates
    never promoted are passed over); returns (old, new) versions.

    ModelNotInStore when no such version is older than the served one.
    """
    served = store_ref(name)
    refs = list_versions(name)
    position = [ref.tag for ref in refs].index(served.tag)
    previous = next((ref for ref in refs[position + 1 :] if not is_candidate(ref)), None)
    if previous is None:
        raise ModelNotInStore(
            f"{served.tag} is the oldest release or promoted version in the store ({_store_home()}); "
            "there is nothing to roll back to"
        )
    pin(name, str(previous.tag.version))
    return str(served.tag.version), str(previous.tag.version)


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


FLOAT16_MAX = float(np.finfo(np.float16).max)


def release_array(weights: np.ndarray) -> np.ndarray:
    """A weight array as a release stores it: float16, unless a value lies beyond float16's range (a batch
    norm's moving variance behind an unnormalised encoder can), which stays float32 rather than become inf."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.size and float(np.abs(weights).max()) > FLOAT16_MAX:
        return weights
    return weights.astype(np.float16)


def export_release(model, name: str, metadata: dict[str, Any], release_dir: str | Path = DEFAULT_RELEASE_DIR) -> None:
    """Write a release: the model's weights as float16 (see ``release_array``) and its metadata (which must hold
    ``builder_kwargs``)."""
    weights_path, meta_path = release_paths(name, release_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i:04d}": release_array(w) for i, w in enumerate(model.get_weights())}
    np.savez_compressed(weights_path, **arrays)
    kept = sum(a.dtype != np.float16 for a in arrays.values())
    meta = {"architecture": name, "classes": class_table(), "weights_dtype": "float16", **metadata}
    if kept:
        meta["float32_arrays"] = kept
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _check_release(name: str, release_dir: str | Path) -> tuple[Path, Path]:
    weights_path, meta_path = release_paths(name, release_dir)
    if not weights_path.exists() or not meta_path.exists():
        raise ModelNotInStore(
            f"no shipped release of {name} in {Path(release_dir)}: expected {weights_path.name} and {meta_path.name}"
        )
    return weights_path, meta_path


def release_sha256(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR) -> str:
    """The SHA-256 of a release's weights file, which a store version imported from it records."""
    weights_path, _ = _check_release(name, release_dir)
    digest = hashlib.sha256()
    with weights_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_version(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR):
    """The newest store version of ``corrosion-<name>`` holding the release in ``release_dir`` (the same weights
    file), or None. A version imported before the weights' hash was recorded holds it when it records the same
    training run (``RUN_KEYS``)."""
    digest = release_sha256(name, release_dir)
    meta = json.loads(release_paths(name, release_dir)[1].read_text())
    run = {k: meta.get(k) for k in RUN_KEYS}
    for ref in list_versions(name):
        held = ref.info.metadata
        if held.get(RELEASE_SHA256) == digest:
            return ref
        if RELEASE_SHA256 not in held and None not in run.values() and all(held.get(k) == v for k, v in run.items()):
            return ref
    return None


def load_release(name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR):
    """Rebuild a shipped release in float32; returns (keras.Model, metadata)."""
    from segserve.models import build_model

    weights_path, meta_path = _check_release(name, release_dir)
    meta = json.loads(meta_path.read_text())
    model = build_model(name, **meta.get("builder_kwargs", {}))
    with np.load(weights_path) as arrays:
        weights = [arrays[f"w{i:04d}"].astype(np.float32) for i in range(len(arrays.files))]
    model.set_weights(weights)
    return model, meta


def import_release(
    name: str, release_dir: str | Path = DEFAULT_RELEASE_DIR, force: bool = False, candidate: bool = False
) -> str | None:
    """Import a release into the BentoML store as a new version, unless a version holds it already
    (:func:`release_version`; ``force`` imports it anyway); return the new tag, or None.

    candidate: import it as a candidate, served once promoted; else it is served from the next start.
    """
    digest = release_sha256(name, release_dir)
    if not force and release_version(name, release_dir) is not None:
        return None
    model, meta = load_release(name, release_dir)
    return save_to_store(model, name, {**meta, RELEASE_SHA256: digest}, candidate=candidate)
