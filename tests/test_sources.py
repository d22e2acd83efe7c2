"""training.sources: models from a run folder, a release and the store, and how ``--init-from`` picks one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segserve import store
from segserve.errors import SegServeError
from training import sources


def _loaded(name: str, input_size: int = 256, description: str = "") -> sources.LoadedModel:
    return sources.LoadedModel(
        model=f"model of {name}",
        metadata={"input_size": input_size},
        description=description or name,
        source=name,
        input_size=input_size,
    )


@pytest.fixture
def calls(monkeypatch) -> list:
    """Record what load_start asks of the release and store loaders (which return stand-ins)."""
    seen: list = []

    def from_release(name, release_dir=store.DEFAULT_RELEASE_DIR):
        seen.append(("release", name, str(release_dir)))
        return _loaded(name)

    def from_store(name, version=""):
        seen.append(("store", name, version))
        return _loaded(name)

    monkeypatch.setattr(sources, "from_release", from_release)
    monkeypatch.setattr(sources, "from_store", from_store)
    monkeypatch.setattr(sources, "as_float32", lambda name, model, kwargs: f"{model} in float32")
    return seen


def test_load_start_reads_every_init_from_choice(calls, tmp_path):
    (tmp_path / "unet.json").write_text("{}")
    assert sources.load_start("unet", "release").model == "model of unet"
    sources.load_start("unet", str(tmp_path))
    sources.load_start("unet", str(tmp_path / "unet.json"))  # one of the release's files: its folder
    assert sources.load_start("unet", "store").model == "model of unet in float32"  # rebuilt as served
    sources.load_start("unet", "corrosion-unet:abc")
    sources.load_start("unet", "corrosion-unet")
    assert calls == [
        ("release", "unet", str(store.DEFAULT_RELEASE_DIR)),
        ("release", "unet", str(tmp_path)),
        ("release", "unet", str(tmp_path)),
        ("store", "unet", ""),
        ("store", "unet", "abc"),
        ("store", "unet", "latest"),
    ]


def test_load_start_refuses_what_is_no_start_model(tmp_path):
    with pytest.raises(SegServeError, match="neither an existing release folder nor a store model"):
        sources.load_start("unet", str(tmp_path / "nowhere"))
    with pytest.raises(SegServeError, match="not a version of corrosion-unet"):
        sources.load_start("unet", "corrosion-deeplabv3plus:abc")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(SegServeError, match="unet.json"):
        sources.load_start("unet", str(tmp_path / "other.json"))


def test_from_release_describes_where_the_model_came_from(tmp_path, monkeypatch):
    release = tmp_path / "models"
    release.mkdir()
    meta = {"input_size": 64, "trained_at": "2025-01-02", "builder_kwargs": {"decoder_filters": [8]}}
    (release / "unet.json").write_text(json.dumps(meta))
    (release / "unet.weights.npz").write_bytes(b"")
    monkeypatch.setattr(store, "load_release", lambda name, release_dir: ("model", meta))
    monkeypatch.chdir(tmp_path)
    loaded = sources.from_release("unet", release)
    assert loaded.description == "release models/unet.json (trained_at 2025-01-02)"  # relative to the cwd
    assert loaded.source == f"release {release / 'unet.weights.npz'}"
    assert (loaded.input_size, loaded.builder_kwargs) == (64, {"decoder_filters": [8]})


def test_load_releases_need_one_input_size(monkeypatch):
    sizes = {"deeplabv3plus": 256, "unet": 256}
    monkeypatch.setattr(sources, "from_release", lambda name, release_dir: _loaded(name, sizes[name]))
    models, metas = sources.load_releases("models", ("deeplabv3plus", "unet"))
    assert models == {"deeplabv3plus": "model of deeplabv3plus", "unet": "model of unet"}
    assert metas["unet"] == {"input_size": 256}
    sizes["unet"] = 128
    with pytest.raises(SegServeError, match=r"different input sizes \[128, 256\]"):
        sources.load_releases("models", ("deeplabv3plus", "unet"))


def test_load_run_model_loads_best_keras(tmp_path, tf_few_threads):
    import keras

    from tests.servers import tiny_model

    keras.utils.set_random_seed(0)
    model = tiny_model("unet")
    model.save(tmp_path / sources.RUN_MODEL)
    loaded = sources.load_run_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
