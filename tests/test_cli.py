"""The command line: a store without the models is reported clearly and stops `serve` before it starts;
`versions`, `use` and `rollback` choose the served version of a model among those in the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from segserve import architectures, store
from segserve import cli as segserve_cli
from segserve.errors import ModelNotInStore
from tests.servers import ROOT, tiny_model


def cli(*args: str, home, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", "segserve.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_serve_with_an_empty_store_names_the_missing_models_and_exits_1(tmp_path):
    result = cli("serve", home=tmp_path / "empty")
    assert result.returncode == 1
    for name in architectures.SHIPPED:
        assert f"model corrosion-{name} is not in the BentoML model store" in result.stderr
    assert "make models" in result.stderr


@pytest.mark.slow
def test_check_models_finds_a_complete_store(tiny_store):
    result = cli("check-models", home=tiny_store)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("found corrosion-") == len(architectures.SHIPPED)


@pytest.mark.slow
def test_import_from_a_folder_without_releases_fails_clearly(tmp_path):
    result = cli("import-models", "--release-dir", str(tmp_path), home=tmp_path / "home")
    assert result.returncode == 1
    assert "deeplabv3plus.weights.npz" in result.stderr


# ------------------------------------------------------------------------------ served versions, in-process


@pytest.fixture
def temp_store(tmp_path):
    """Point BentoML at an empty store in tmp_path for this test (in-process), and back after."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    home = tmp_path / "bentoml"
    (home / "models").mkdir(parents=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(ModelStore(home / "models"))
    try:
        yield home
    finally:
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bentoml_home.reset()


def _save(name: str, **metadata) -> str:
    return store.save_to_store(tiny_model(name), name, {"input_size": 64, **metadata}).split(":")[1]


def _versions_output(capsys, name: str = "unet") -> list[str]:
    with pytest.raises(SystemExit) as exit_:
        segserve_cli.main(["versions", name])
    assert exit_.value.code == 0
    return capsys.readouterr().out.splitlines()


def test_versions_lists_newest_first_and_marks_the_served_one(temp_store, capsys):
    first = _save("unet")
    second = _save("unet", trained_from="release models/unet.json", trained_on="/data (4 train / 2 val photos)")
    lines = _versions_output(capsys)
    assert "2 version(s)" in lines[0] and "served (newest release or promoted)" in lines[0]
    assert lines[1].startswith(f"* {second}") and "from release models/unet.json" in lines[1]
    assert "on /data (4 train / 2 val photos)" in lines[1]
    assert lines[2].startswith(f"  {first}")
    assert store.store_ref("unet").tag.version == second


def test_rollback_serves_the_previous_version_and_use_latest_undoes_it(temp_store, capsys):
    first, second, third = _save("unet"), _save("unet"), _save("unet")
    _save("deeplabv3plus")
    with pytest.raises(SystemExit) as exit_:
        segserve_cli.main(["rollback", "unet"])
    assert exit_.value.code == 0
    assert f"serving corrosion-unet:{second} instead of corrosion-unet:{third}" in capsys.readouterr().out
    assert store.store_ref("unet").tag.version == second
    pins = json.loads((temp_store / "segserve" / "served.json").read_text())
    assert pins == {"corrosion-unet": second}
    lines = _versions_output(capsys)
    assert "(pinned)" in lines[0] and lines[2].startswith(f"* {second}")

    segserve_cli.rollback("corrosion-unet")  # the store name works too
    assert store.store_ref("unet").tag.version == first
    assert segserve_cli.rollback("unet") == 1  # nothing older
    assert "oldest release or promoted version" in capsys.readouterr().err

    assert segserve_cli.use("unet:latest") == 0
    assert store.store_ref("unet").tag.version == third
    assert not (temp_store / "segserve" / "served.json").exists()
    assert store.store_ref("deeplabv3plus").tag.version != third  # pins are per model


def _status(line: str) -> str:
    """The status column of a `segserve versions` line: release, candidate or promoted."""
    return line.lstrip("* ").split()[3]


def test_a_candidate_is_served_once_promoted_and_rollback_passes_over_candidates(temp_store, capsys):
    release = _save("unet")
    rejected = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64}, candidate=True).split(":")[1]
    candidate = store.save_to_store(tiny_model("unet"), "unet", {"input_size": 64}, candidate=True).split(":")[1]
    assert store.store_ref("unet").tag.version == release  # candidates wait for promotion
    lines = _versions_output(capsys)
    assert lines[1].startswith(f"  {candidate}") and _status(lines[1]) == "candidate"
    assert lines[3].startswith(f"* {release}") and _status(lines[3]) == "release"

    with pytest.raises(SystemExit) as exit_:
        segserve_cli.main(["promote", "unet"])  # the newest candidate
    assert exit_.value.code == 0
    assert f"serving corrosion-unet:{candidate} from the next server start" in capsys.readouterr().out
    assert store.store_ref("unet").tag.version == candidate and store.read_pins() == {}
    assert _status(_versions_output(capsys)[1]) == "promoted"

    assert segserve_cli.rollback("unet") == 0  # back to the release, past the candidate never promoted
    assert f"serving corrosion-unet:{release} instead of corrosion-unet:{candidate}" in capsys.readouterr().out
    assert segserve_cli.promote(f"unet:{rejected[:10]}") == 0  # an older candidate is served by a pin
    assert "(pinned: newer versions exist)" in capsys.readouterr().out
    assert store.store_ref("unet").tag.version == rejected and store.read_pins() == {"corrosion-unet": rejected}
    assert segserve_cli.promote("unet") == 1  # every candidate is promoted now
    assert "no candidate waiting for promotion" in capsys.readouterr().err
    assert segserve_cli.promote("unet:doesnotexist") == 1
    assert "corrosion-unet:doesnotexist is not in the BentoML model store" in capsys.readouterr().err


def test_use_pins_a_version_by_prefix_and_a_new_import_is_served(temp_store, capsys):
    first, _ = _save("unet"), _save("unet")
    assert segserve_cli.use(f"unet:{first[:8]}") == 0
    assert f"serving corrosion-unet:{first} (pinned {first})" in capsys.readouterr().out
    assert store.store_ref("unet").tag.version == first
    newest = _save("unet")  # a new import clears the pin
    assert store.store_ref("unet").tag.version == newest
    assert store.read_pins() == {}


def test_use_of_a_missing_version_fails_and_a_vanished_pin_is_reported(temp_store, capsys):
    _save("unet")
    assert segserve_cli.use("unet:doesnotexist") == 1
    assert "corrosion-unet:doesnotexist is not in the BentoML model store" in capsys.readouterr().err
    assert segserve_cli.use("unet") == 2
    (temp_store / "segserve").mkdir(exist_ok=True)
    (temp_store / "segserve" / "served.json").write_text(json.dumps({"corrosion-unet": "gone"}))
    with pytest.raises(ModelNotInStore, match="segserve use unet:latest"):
        store.store_ref("unet")


def test_a_version_says_whose_val_figures_a_final_fit_carries():
    run_on_train = {"trained_on": "/data/pipes (172 train / 22 val photos)", "val_metrics": {"mean_iou": 0.5}}
    assert segserve_cli._describe(run_on_train) == "on /data/pipes (172 train / 22 val photos), val mIoU 0.5000"
    final_fit = {
        "trained_on": "/data/pipes (194 photos: the train and val splits)",
        "val_metrics": {"mean_iou": 0.5},
        "validation_source": "the val split (22 photos) of the same recipe trained on the train split only",
    }
    assert segserve_cli._describe(final_fit).endswith("val mIoU 0.5000 (its recipe's run on the train split)")
