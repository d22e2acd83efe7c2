"""Where trained models come from: a training run folder, a release in models/, the BentoML store.

Releases and store models load in float32 (as the server runs them) whatever the global Keras dtype policy;
:func:`load_start` reads the ``--init-from`` choices of training and fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segserve import imaging, store
from segserve.errors import ModelNotInStore, SegServeError
from training.compute import as_float32, float32_policy

RUN_MODEL = "best.keras"
# A run's checkpoints by what they hold: the best validated epoch, and the last epoch (with optimizer state).
CHECKPOINTS = {"best": RUN_MODEL, "last": "checkpoints/last.keras"}


@dataclass
class LoadedModel:
    """A trained model in float32 and what is known of it.

    description: where it came from, as a fine-tuned version records it in ``trained_from``
        (``release models/unet.json (trained_at ...)``, ``corrosion-unet:VERSION``).
    source: the file or store tag it was read from, as evaluation reports name it
        (``release models/unet.weights.npz``, ``BentoML store corrosion-unet:VERSION``).
    """

    model: Any
    metadata: dict[str, Any]
    description: str
    source: str
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = imaging.MODEL_INPUT_SIZE


def _input_size(meta: dict[str, Any]) -> int:
    return int(meta.get("input_size") or imaging.MODEL_INPUT_SIZE)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies under it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_run_model(run_dir: str | Path, checkpoint: str = "best") -> Any:
    """A checkpoint of a ``training.train`` run folder (``best`` or ``last``, see CHECKPOINTS), uncompiled."""
    import keras

    import segserve.models  # noqa: F401  (registers the custom layers)
    import training.losses  # noqa: F401  (registers the loss saved with the model)

    return keras.saving.load_model(Path(run_dir) / CHECKPOINTS[checkpoint], compile=False)


def from_release(name: str, release_dir: str | Path = store.DEFAULT_RELEASE_DIR) -> LoadedModel:
    """A shipped release (``<name>.weights.npz`` and ``<name>.json`` in ``release_dir``)."""
    with float32_policy():
        model, meta = store.load_release(name, release_dir)
    weights_path, meta_path = store.release_paths(name, release_dir)
    return LoadedModel(
        model=model,
        metadata=meta,
        description=f"release {_shown(meta_path)} (trained_at {meta.get('trained_at', 'unknown')})",
        source=f"release {weights_path}",
        builder_kwargs=dict(meta.get("builder_kwargs") or {}),
        input_size=_input_size(meta),
    )


def from_store(name: str, version: str = "") -> LoadedModel:
    """``corrosion-<name>`` from the BentoML store: the served version (pinned, else the latest) or ``version``."""
    import bentoml
    import keras
    from bentoml.exceptions import BentoMLException, NotFound

    import segserve.models  # noqa: F401  (registers the custom layers)

    if version:
        try:
            ref = bentoml.models.get(f"{store.store_name(name)}:{version}")
        except (NotFound, BentoMLException) as exc:
            raise ModelNotInStore(
                f"{store.store_name(name)}:{version} is not in the BentoML model store: {exc}"
            ) from exc
    else:
        ref = store.store_ref(name)
    meta = dict(ref.info.metadata)
    with float32_policy():
        model = keras.saving.load_model(ref.path_of(store.MODEL_FILE), compile=False)
    return LoadedModel(
        model=model,
        metadata=meta,
        description=str(ref.tag),
        source=f"BentoML store {ref.tag}",
        builder_kwargs=dict(meta.get("builder_kwargs") or {}),
        input_size=_input_size(meta),
    )


def load_start(name: str, spec: str) -> LoadedModel:
    """The start model of ``--init-from SPEC``: ``release``, a release folder (or one of its files), ``store``
    (the served version) or ``corrosion-<name>:VERSION``; a store model is rebuilt in float32 from code."""
    if spec == "release":
        return from_release(name, store.DEFAULT_RELEASE_DIR)
    path = Path(spec)
    if path.exists():
        if path.is_file():
            expected = store.release_paths(name, path.parent)
            if path.resolve() not in {p.resolve() for p in expected}:
                raise SegServeError(f"--init-from {spec}: a {name} release is {expected[1].name} + {expected[0].name}")
            path = path.parent
        return from_release(name, path)
    if spec == "store" or spec.startswith("corrosion-"):
        version = ""
        if spec != "store":
            tag_name, _, version = spec.partition(":")
            if tag_name != store.store_name(name):
                raise SegServeError(f"--init-from {spec} is not a version of {store.store_name(name)}")
            version = version or "latest"
        loaded = from_store(name, version)
        loaded.model = as_float32(name, loaded.model, loaded.builder_kwargs)
        return loaded
    raise SegServeError(
        f"--init-from {spec}: neither an existing release folder nor a store model (release, a folder holding "
        f"{name}.json and {name}.weights.npz, store, or {store.store_name(name)}:VERSION)"
    )


def load_releases(
    release_dir: str | Path, names: tuple[str, ...] | list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Several shipped releases: ({name: keras model}, {name: metadata}); they must share one input size (an
    ensemble averages their probabilities), else SegServeError."""
    models, metas = {}, {}
    for name in names:
        loaded = from_release(name, release_dir)
        models[name], metas[name] = loaded.model, loaded.metadata
    sizes = {_input_size(m) for m in metas.values()}
    if len(sizes) != 1:
        raise SegServeError(f"the models have different input sizes {sorted(sizes)}; an ensemble needs one")
    return models, metas
