"""Retraining on the users' own photos: the fine-tune's options and comparison, encoder weights from a file, and a
fine-tune that continues from the shipped release, becomes a served store version and is undone by rollback.

The precision choice is tested in test_compute.py, the start models in test_sources.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from segserve import imaging, store
from segserve.classes import CLASS_NAMES
from tests.servers import ROOT, start_server, stop_server, wait_until_serving


@pytest.fixture
def photos(make_dataset):
    """Six 64x80 photos (not the model's input size), four to train on and two held out."""
    ids = [f"{k:03d}" for k in range(1, 7)]
    return make_dataset(n=6, size=(64, 80), splits={"train": ids[:4], "val": ids[4:]})


# ------------------------------------------------------------------------------------------------ fast


def test_finetune_defaults(tmp_path):
    from training import finetune

    args = finetune.parse_args(["--model", "unet", "--data", str(tmp_path)])
    assert (args.init_from, args.epochs, args.lr, args.warmup_epochs, args.precision, args.do_import) == (
        "release",
        10,
        1e-4,
        1,
        "auto",
        "auto",
    )
    assert args.input_size == 0  # the start model's
    with pytest.raises(SystemExit):  # every weight comes from the start model
        finetune.parse_args(["--model", "unet", "--data", ".", "--encoder-weights", "imagenet"])


def test_the_comparison_reads_as_percentages_and_changes():
    from training import finetune

    before = {"mean_iou": 0.5, "per_class": [{"name": "corrosion", "iou": 0.25}], "ratio_mae": 0.1}
    after = {"mean_iou": 0.5525, "per_class": [{"name": "corrosion", "iou": 0.3}], "ratio_mae": 0.08}
    rows = {label: (a, b, c) for label, a, b, c in finetune.comparison_rows(before, after)}
    assert rows["mean IoU (%)"] == ("50.00", "55.25", "+5.25")
    assert rows["IoU corrosion (%)"] == ("25.00", "30.00", "+5.00")
    assert rows["IoU asset (%)"] == ("n/a", "n/a", "")
    assert rows["ratio MAE (points, lower is better)"] == ("10.00", "8.00", "-2.00")
    assert "| mean IoU (%) | 50.00 | 55.25 | +5.25 |" in finetune.comparison_markdown(before, after)


def test_encoder_weights_path_loads_a_resnet50_notop_file(tmp_path, tf_few_threads):
    """A ResNet50 no-top weights file with Keras' layer names, in Keras 3's format and in the legacy HDF5 layout
    of Keras' ImageNet file (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5), loads into the encoder."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from segserve.models import build_model

    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()])
    keras3_file = tmp_path / "resnet50_notop.weights.h5"
    reference.save_weights(keras3_file)
    legacy_file = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy_file, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)

    for path, name in ((keras3_file, "deeplabv3plus"), (legacy_file, "unet")):
        model = build_model(name, encoder_weights=str(path))
        for layer in ("conv1_conv", "conv2_block1_1_bn", "conv4_block6_3_conv"):
            loaded, expected = model.get_layer(layer).get_weights(), reference.get_layer(layer).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True)), (path.name, layer)
    assert not np.array_equal(  # and without the file, the encoder is not those values
        build_model("unet").get_layer("conv1_conv").get_weights()[0],
        reference.get_layer("conv1_conv").get_weights()[0],
    )


# ------------------------------------------------------------------------------------------------ slow


@contextlib.contextmanager
def bentoml_home(home):
    """Point this process's BentoML at the store in ``home`` (it reads BENTOML_HOME once), and back after."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(ModelStore(home / "models"))
    try:
        yield
    finally:
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bentoml_home.reset()


def _served_unet(server) -> dict:
    import httpx

    models = httpx.get(f"{server.http_url}/models", timeout=10).json()["models"]
    return next(m for m in models if m["name"] == "unet")


@pytest.mark.slow
def test_a_finetune_continues_from_the_release_is_served_and_rolled_back(
    tiny_store, photos, tmp_path, monkeypatch, capsys, tf_few_threads
):
    """Fine-tune the shipped U-Net release on a tiny folder under mixed_bfloat16: its first batch's loss is the
    release's on that batch (it starts from the release), it becomes a new float32 version of corrosion-unet
    beside the first, a server serves it, and `segserve rollback unet` makes the first the served one again."""
    import keras

    from segserve import cli
    from segserve.models import build_model
    from training import finetune, loop
    from training.losses import ce_dice_loss

    class OneBatch(keras.utils.PyDataset):
        """The first two training photos as they are: no random augmentation, so the test can rebuild the batch."""

        def __init__(self, images, masks, batch_size, crop, seed, recipe="rescale"):
            super().__init__()
            self.x, self.y = imaging.normalize(images[:batch_size]), masks[:batch_size].astype(np.int32)

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return self.x, self.y

    batches = []
    monkeypatch.setattr(loop, "make_batches", lambda *a: batches.append(OneBatch(*a)) or batches[-1])
    home = tmp_path / "home"
    shutil.copytree(tiny_store, home)
    out = tmp_path / "run"
    argv = ["--model", "unet", "--data", str(photos.root), "--out", str(out), "--init-from", "release"]
    argv += ["--epochs", "1", "--batch-size", "2", "--input-size", "64", "--precision", "mixed_bfloat16"]
    argv += ["--no-report", "--import", "always"]
    with bentoml_home(home):
        first = store.store_ref("unet").tag.version
        try:
            summary = finetune.finetune(finetune.parse_args(argv), "python -m training.finetune ...")
            # The release's loss on the same batch, computed under the same precision.
            keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
            release, _ = store.load_release("unet")
            x, y = batches[0].x, batches[0].y
            expected = float(ce_dice_loss(y, release(x, training=True)))
            keras.utils.set_random_seed(0)
            fresh = float(ce_dice_loss(y, build_model("unet")(x, training=True)))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
        new = summary["imported"].split(":")[1]
        ref = store.store_ref("unet")
        assert ref.tag.version == new != first
        meta = dict(ref.info.metadata)
        model_file = ref.path_of(store.MODEL_FILE)

    first_loss = json.loads((out / "state.json").read_text())["first_batch_loss"]
    assert first_loss == pytest.approx(expected, rel=2e-3)
    assert abs(fresh - expected) > 0.05  # a model not started from the release would show
    assert summary["trained_from"] == meta["trained_from"]
    assert meta["trained_from"].startswith("release ") and "models/unet.json (trained_at " in meta["trained_from"]
    assert meta["trained_on"] == f"{photos.root.resolve()} (4 train / 2 val photos)"
    assert meta["encoder_weights"] == "none" and meta["input_size"] == 64 and meta["builder_kwargs"] == {}
    assert meta["precision"] == "mixed_bfloat16"
    for metrics in (meta["val_metrics"], summary["start"], summary["fine_tuned"]):
        assert metrics["num_images"] == 2 and [row["name"] for row in metrics["per_class"]] == list(CLASS_NAMES)
        assert {"mean_iou", "pixel_accuracy", "ratio_mae", "grade_exact", "grade_within_one"} <= set(metrics)
    assert meta["val_metrics"] == summary["fine_tuned"] and meta["start_val_metrics"] == summary["start"]
    with zipfile.ZipFile(model_file) as archive:  # trained in bfloat16, saved to run in float32 as served
        assert "bfloat16" not in archive.read("config.json").decode()
    assert "| mean IoU (%) |" in (out / "comparison.md").read_text()

    server = start_server(home, tmp_path / "serve.log", max_latency_ms=1000)
    try:
        wait_until_serving(server)
        unet = _served_unet(server)
        assert unet["version"] == new and unet["input_size"] == 64
        if "trained_from" in unet:  # once ListModels reports them
            assert unet["trained_from"] == meta["trained_from"] and unet["trained_on"] == meta["trained_on"]
    finally:
        stop_server(server)

    # Roll back: the server loads the served version (store_ref) at start-up, so the next start serves the first.
    with bentoml_home(home):
        assert cli.rollback("unet") == 0
        assert f"serving corrosion-unet:{first} instead of corrosion-unet:{new}" in capsys.readouterr().out
        assert store.store_ref("unet").tag.version == first
    listing = _cli("versions", "unet", home=home).stdout.splitlines()
    assert listing[1].startswith(f"  {new}") and listing[2].startswith(f"* {first}")
    assert "(pinned)" in listing[0]
    assert f"found corrosion-unet:{first}" in _cli("check-models", home=home).stdout


def _cli(*args: str, home) -> subprocess.CompletedProcess:
    """The segserve command in a fresh process on the store at ``home``, as an operator runs it."""
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "segserve.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
