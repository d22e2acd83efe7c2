"""The model store: a release is imported once and a changed one as a new version (no --force), a version's metadata
is rewritten in place (calibration), version specs resolve, and with only candidates the newest is served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segserve import store
from segserve.errors import ModelNotInStore
from tests.servers import tiny_model
from tests.test_cli import temp_store  # noqa: F401  (an empty store in tmp_path, in-process)

RUN = {"trained_at": "2026-11-24", "train_seconds": 3011.5, "best_epoch": 89, "epochs_run": 90}


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A release folder of unet (tiny weights, the metadata of a training run); loading it gives the tiny model."""
    folder = tmp_path / "release"
    folder.mkdir()
    weights, meta = store.release_paths("unet", folder)
    np.savez_compressed(weights, w0000=np.zeros(3, np.float16))
    meta.write_text(json.dumps({"input_size": 64, **RUN}))
    monkeypatch.setattr(store, "load_release", lambda name, where: (tiny_model(name), json.loads(meta.read_text())))
    return folder


def test_a_release_is_imported_once_and_a_changed_one_as_a_new_served_version(temp_store, release):  # noqa: F811
    first = store.import_release("unet", release)
    assert first and store.import_release("unet", release) is None  # the same weights: nothing to do
    ref = store.store_ref("unet")
    assert str(ref.tag) == first and ref.info.metadata[store.RELEASE_SHA256] == store.release_sha256("unet", release)
    assert store.release_version("unet", release).tag == ref.tag

    # calibration rewrites its thresholds in place: still the same release, served as it is, no re-import
    store.update_metadata(ref, {"review": {"confidence_threshold": 0.9}})
    assert store.import_release("unet", release) is None
    assert store.store_ref("unet").info.metadata["review"] == {"confidence_threshold": 0.9}

    store.pin("unet", ref.tag.version)
    weights, _ = store.release_paths("unet", release)
    np.savez_compressed(weights, w0000=np.ones(3, np.float16))  # new weights, e.g. a retrained release
    second = store.import_release("unet", release)
    assert second and second != first
    assert str(store.store_ref("unet").tag) == second and store.read_pins() == {}  # served, the pin cleared
    assert store.import_release("unet", release, force=True) not in (None, first, second)


def test_a_version_imported_before_the_hash_was_recorded_holds_its_release(temp_store, release):  # noqa: F811
    legacy = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64, **RUN})
    assert str(store.release_version("unet", release).tag) == legacy
    assert store.import_release("unet", release) is None
    other = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64, **RUN, "train_seconds": 1.0})
    assert str(store.release_version("unet", release).tag) == legacy != other


def test_metadata_is_rewritten_in_place(temp_store):  # noqa: F811
    tag = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64, "kept": [1, 2], "gone": "x"})
    ref = store.resolve("unet", tag.split(":")[1])
    updated = store.update_metadata(ref, {"review": {"min_side": np.int64(33), "undefined": None}, "gone": None})
    meta = updated.info.metadata
    assert meta["review"] == {"min_side": 33} and meta["kept"] == [1, 2] and "gone" not in meta
    assert store.store_ref("unet").info.metadata == meta  # what the server reads at its next start


def test_versions_resolve_and_with_only_candidates_the_newest_is_served(temp_store):  # noqa: F811
    with pytest.raises(ModelNotInStore, match="is not in the BentoML model store"):
        store.store_ref("unet")
    old = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64}, candidate=True)
    new = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64}, candidate=True)
    assert str(store.store_ref("unet").tag) == new  # as in a bento built from :latest
    assert str(store.resolve("unet", "candidate").tag) == new and str(store.resolve("unet", "latest").tag) == new
    assert str(store.resolve("unet", old.split(":")[1][:8]).tag) == old
    released = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64})
    assert str(store.resolve("unet", "served").tag) == released
    with pytest.raises(ModelNotInStore, match="nothing to roll back to"):
        store.rollback("unet")  # the candidates before it were never promoted
    with pytest.raises(ModelNotInStore, match="not in the BentoML model store"):
        store.resolve("unet", "nosuchversion")


def test_release_weights_are_float16_but_values_beyond_its_range_stay_float32():
    small = np.array([1.5, -3.0, 60000.0], np.float32)
    large = np.array([1.0, 2.5e5], np.float32)  # a batch norm's moving variance can be this large
    assert store.release_array(small).dtype == np.float16
    kept = store.release_array(large)
    assert kept.dtype == np.float32 and np.isfinite(kept).all() and kept[1] == 2.5e5
    assert store.release_array(np.zeros((0,), np.float32)).dtype == np.float16
