"""Retraining on the users' own photos: the fine-tune's options and comparison, encoder weights from a file, a
fine-tune that continues from the shipped release and becomes a candidate that is promoted and rolled back, and
the retraining loop of docs/training.md run as written: fine-tune, calibrate, compare, promote, serve, roll back.

The precision choice is tested in test_compute.py, the start models in test_sources.py."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
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


def test_the_recipe_of_the_shipped_release_is_the_default_and_options_override_it(tmp_path, capsys):
    from training import loop
    from training.metadata import RECIPE_KEYS, build_metadata

    args = loop.parse_args(["--model", "unet", "--data", ".", "--recipe", "release"])
    recipe = json.loads(store.release_paths("unet")[1].read_text())["recipe"]
    assert recipe["epochs"] == 90 and set(recipe) == set(RECIPE_KEYS)
    assert {k: getattr(args, k) for k in RECIPE_KEYS} == recipe
    deeplab = loop.parse_args(["--model", "deeplabv3plus", "--data", ".", "--recipe", "release", "--lr", "0.01"])
    assert (deeplab.epochs, deeplab.lr, deeplab.batch_size) == (120, 0.01, 8)  # the option given wins
    # a run records its recipe with the model it makes, so that --recipe can run it again
    config = {**vars(deeplab), "data": ".", "train_ids": [], "val_ids": []}
    assert build_metadata(config, {}, {}, "today")["recipe"] == {**recipe, "epochs": 120, "lr": 0.01}
    with pytest.raises(SystemExit):
        loop.parse_args(["--model", "unet", "--data", ".", "--recipe", str(tmp_path)])
    assert "unet.json cannot be read as a release's metadata" in capsys.readouterr().err
    (tmp_path / "unet.json").write_text(json.dumps({"input_size": 256}))
    with pytest.raises(SystemExit):
        loop.parse_args(["--model", "unet", "--data", ".", "--recipe", str(tmp_path)])
    assert "records no recipe" in capsys.readouterr().err


def test_a_start_model_trained_on_the_val_photos_is_refused_before_training(photos, monkeypatch, tmp_path):
    """The comparison that decides the import is on the val split: a start model fit on it (a final fit on the
    same dataset) would be compared on photos it learned, so the fine-tune stops before training anything."""
    from segserve.errors import SegServeError
    from training import finetune
    from training.sources import LoadedModel

    final_fit = {"dataset": photos.root.resolve().name, "train_ids": [f"{k:03d}" for k in range(1, 7)]}
    start = LoadedModel(model=None, metadata=final_fit, description="release models/unet.json", source="release")
    monkeypatch.setattr(finetune, "load_start", lambda name, spec: start)
    out = tmp_path / "run"
    args = finetune.parse_args(["--model", "unet", "--data", str(photos.root), "--out", str(out)])
    with pytest.raises(SegServeError, match=r"the start model \(release models/unet.json\) was trained on 2 of"):
        finetune.finetune(args)
    assert not out.exists()


def test_the_comparison_reads_as_percentages_and_changes():
    from training import comparison as finetune

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
        assert store.read_pins() == {}
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
        assert store.store_ref("unet").tag.version == first  # a candidate is not served before its promotion
        ref = store.resolve("unet", "candidate")
        assert ref.tag.version == new != first
        meta = dict(ref.info.metadata)
        model_file = ref.path_of(store.MODEL_FILE)
        assert store.promote("unet") == (new, False)
        assert store.store_ref("unet").tag.version == new

    first_loss = json.loads((out / "state.json").read_text())["first_batch_loss"]
    assert first_loss == pytest.approx(expected, rel=2e-3)
    assert abs(fresh - expected) > 0.05  # a model not started from the release would show
    assert summary["trained_from"] == meta["trained_from"]
    assert meta["trained_from"].startswith("release ") and "models/unet.json (trained_at " in meta["trained_from"]
    assert meta["trained_on"] == f"{photos.root.resolve()} (4 train / 2 val photos)"
    assert meta["encoder_weights"] == "none" and meta["input_size"] == 64 and meta["builder_kwargs"] == {}
    assert meta["precision"] == "mixed_bfloat16" and meta["candidate"] is True
    assert meta["recipe"]["epochs"] == 1 and meta["recipe"]["input_size"] == 64 and meta["recipe"]["lr"] == 1e-4
    for metrics in (meta["val_metrics"], summary["start"], summary["fine_tuned"]):
        assert metrics["num_images"] == 2 and [row["name"] for row in metrics["per_class"]] == list(CLASS_NAMES)
        assert {"mean_iou", "pixel_accuracy", "ratio_mae", "grade_exact", "grade_within_one"} <= set(metrics)
    assert meta["val_metrics"] == summary["fine_tuned"] and meta["start_val_metrics"] == summary["start"]
    with zipfile.ZipFile(model_file) as archive:  # trained in bfloat16, saved to run in float32 as served
        assert "bfloat16" not in archive.read("config.json").decode()
    assert "| mean IoU (%) |" in (out / "comparison.md").read_text()

    # Roll back: the server loads the served version (store_ref) at start-up, so the next start serves the first.
    with bentoml_home(home):
        assert cli.rollback("unet") == 0
        assert f"serving corrosion-unet:{first} instead of corrosion-unet:{new}" in capsys.readouterr().out
        assert store.store_ref("unet").tag.version == first
    listing = _cli("versions", "unet", home=home).stdout.splitlines()
    assert listing[1].startswith(f"  {new}") and listing[2].startswith(f"* {first}")
    assert "(pinned)" in listing[0] and " promoted " in listing[1] and "from release " in listing[1]
    assert f"found corrosion-unet:{first}" in _cli("check-models", home=home).stdout


def _cli(*args: str, home) -> subprocess.CompletedProcess:
    """The segserve command in a fresh process on the store at ``home``, as an operator runs it."""
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "segserve.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


# ------------------------------------------------------------------------------------- the documented loop

LOOP_HEADING = "## The retraining loop"
# What the test adds to the documented fine-tune so that it runs in a minute on tiny photos.
SMALL_FINETUNE = ["--epochs", "1", "--batch-size", "2", "--input-size", "64", "--no-report", "--threads", "1"]
SMALL_FINETUNE += ["--import", "always"]


def documented_loop() -> list[list[str]]:
    """The commands of the first bash block of docs/training.md's retraining loop, split into words."""
    section = (ROOT / "docs" / "training.md").read_text().split(LOOP_HEADING, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_documented_loop_has_every_step_in_order():
    steps = [" ".join(words[:3]) for words in documented_loop()]
    assert steps == [
        "python -m training.finetune",
        "python -m training.calibrate",
        "python -m training.evaluate",
        "segserve promote unet",
        "make serve",
        "segserve rollback unet",
    ]


@pytest.mark.slow
def test_the_documented_loop_serves_a_calibrated_fine_tune_and_rolls_it_back(tiny_store, make_dataset, tmp_path):
    """docs/training.md's loop, line by line in a fresh process each, on a folder named as in the docs: the
    fine-tune becomes a candidate, calibration writes its thresholds into its store version, the comparison
    with the served version is written, promotion serves it (with those thresholds) and rollback undoes it."""
    import httpx

    ids = [f"{k:03d}" for k in range(1, 9)]
    make_dataset(n=8, size=(64, 80), splits={"train": ids[:5], "val": ids[5:]}, root=tmp_path / "our-photos")
    home = tmp_path / "home"
    shutil.copytree(tiny_store, home)
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    with bentoml_home(home):
        first = store.store_ref("unet").tag.version

    def run(words: list[str]) -> str:
        if words[0] == "segserve":
            words = ["python", "-m", "segserve.cli", *words[1:]]
        if words[:3] == ["python", "-m", "training.finetune"]:
            words = words + SMALL_FINETUNE
        done = subprocess.run(
            [sys.executable, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    finetune, calibrate, evaluate, promote, serve, rollback = documented_loop()
    assert "a candidate" in run(finetune)
    with bentoml_home(home):
        candidate = store.resolve("unet", "candidate").tag.version
        assert store.store_ref("unet").tag.version == first != candidate

    assert f"into corrosion-unet:{candidate}" in run(calibrate)
    with bentoml_home(home):
        review = dict(store.resolve("unet", candidate).info.metadata)["review"]
    assert (review["calibration"]["split"], review["calibration"]["n_images"]) == ("val", 3)
    assert (tmp_path / "runs" / "calibrate" / "review_calibration.md").exists()

    compared = run(evaluate)
    assert f"corrosion-unet:{candidate}" in compared and "than BentoML store" in compared
    assert "| mean IoU (%) |" in (tmp_path / "reports" / "unet-val" / "comparison.md").read_text()

    assert f"serving corrosion-unet:{candidate} from the next server start" in run(promote)
    assert serve == ["make", "serve"]  # as make serve would: a server over this store
    server = start_server(home, tmp_path / "serve.log", max_latency_ms=1000)
    try:
        wait_until_serving(server)
        unet = _served_unet(server)
        models = httpx.get(f"{server.http_url}/models", timeout=10).json()["models"]
    finally:
        stop_server(server)
    assert unet["version"] == candidate and unet["input_size"] == 64
    thresholds = {k: v for k, v in review.items() if k != "calibration"}
    assert unet["review"] == pytest.approx(thresholds)
    assert unet["review_calibration"]["n_images"] == 3 and unet["review_calibration"]["split"] == "val"
    assert next(m for m in models if m["name"] == "deeplabv3plus")["review_calibration"] == {}

    assert f"serving corrosion-unet:{first} instead of corrosion-unet:{candidate}" in run(rollback)
    with bentoml_home(home):
        assert store.store_ref("unet").tag.version == first
