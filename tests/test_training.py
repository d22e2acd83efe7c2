"""The training package as a whole: its layers (no import cycle; commands import libraries, never each other),
and a two-epoch training run on a small synthetic dataset that writes every report file and a model the store
loads (slow)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from tests.servers import ROOT

# The packages whose imports must form no cycle, and the name their modules are imported by.
PACKAGES = {"training": "training", "src/segserve": "segserve", "bento": "bento", "loadtests": "loadtests"}
PACKAGES.update({"benchmarks": "benchmarks"} if (ROOT / "benchmarks").is_dir() else {})


def modules() -> dict[str, Path]:
    """Every module of PACKAGES by its import name (a package by its own name)."""
    found = {}
    for folder, prefix in PACKAGES.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((prefix, *parts))] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere: at the top, in functions, under
    TYPE_CHECKING."""
    out = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                out.update(
                    next(([".".join(parts[:k])] for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in known), [])
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    out.add(f"{base}.{alias.name}")
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    assert {"training.train", "segserve.metrics", "bento.service"} <= set(graph)
    assert cycles(graph) == []


def _is_command(path: Path) -> bool:
    """A module run as ``python -m``: it has an ``if __name__ == "__main__":`` block."""
    return '__name__ == "__main__"' in path.read_text()


def test_commands_import_libraries_and_never_each_other():
    known = modules()
    training = {name: path for name, path in known.items() if name.startswith("training.")}
    commands = {name for name, path in training.items() if _is_command(path)}
    assert commands == {
        f"training.{c}"
        for c in (
            "train",
            "finetune",
            "evaluate",
            "export",
            "calibrate",
            "compare",
            "results",
            "step_time",
            "experiments",
            "parity",
        )
    }
    for name, path in training.items():
        assert not imported(name, path, known) & commands, f"{name} imports a command"


def test_serving_never_imports_training():
    for name, deps in import_graph().items():
        if name.startswith(("segserve.", "bento.")):
            assert not any(d == "training" or d.startswith("training.") for d in deps), name


def test_the_metrics_table_is_pure_numpy():
    """Serving calls segserve.metrics too: it imports NumPy and the class table, no framework, no training."""
    tree = ast.parse((ROOT / "src" / "segserve" / "metrics.py").read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert names == {"__future__", "collections.abc", "dataclasses", "typing", "numpy", "segserve.classes"}


# --------------------------------------------------------------------------------------------- slow


REPORT_FILES = (
    "history.csv",
    "history.xlsx",
    "curves_loss.png",
    "curves_iou.png",
    "metrics.json",
    "report.md",
    "confusion_matrix.png",
    "predictions.png",
    "best.keras",
    "checkpoints/last.keras",
    "state.json",
)


def run(module: str, *args: str, home, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    from segserve.classes import PALETTE
    from tests.conftest import _make_image, _make_mask, _write_rgb

    ids = [f"{k:03d}" for k in range(1, 7)]
    for i, id_ in enumerate(ids):
        mask = np.roll(_make_mask(64, 64), 4 * i, axis=1)
        _write_rgb(data / "original" / f"ORI_{id_}.png", _make_image(mask, seed=i))
        _write_rgb(data / "ground_truth" / f"GT_{id_}.png", PALETTE[mask])
    (data / "train.txt").write_text("\n".join(ids[:4]) + "\n")
    (data / "val.txt").write_text("\n".join(ids[4:]) + "\n")
    out, home = root / "run", root / "home"
    common = ["--model", "unet", "--data", str(data), "--out", str(out), "--input-size", "64", "--crop-size", "32"]
    common += ["--batch-size", "2", "--threads", "1"]
    first = run("training.train", *common, "--epochs", "1", "--no-report", home=home)
    resumed = run("training.train", *common, "--epochs", "2", "--resume", home=home)
    return out, home, data, first, resumed


@pytest.mark.slow
def test_two_epochs_write_every_report_file(trained):
    out = trained[0]
    for name in REPORT_FILES:
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["split"] == "val"
    assert list(metrics["standard"]["per_class"]) == ["corrosion", "asset", "background"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 2 * 64 * 64
    assert set(metrics["per_image"]["per_class"]["asset"]) == {"iou", "dice"}
    # what an inspector reads: every synthetic truth is 16 corrosion and 48 asset columns of one band
    ratios = metrics["ratios"]
    assert ratios["truth"] == [0.25, 0.25] and ratios["truth_grade"] == [2, 2]
    mae = np.mean(np.abs(np.array(ratios["predicted"]) - 0.25))
    assert metrics["ratio_agreement"]["ratio_mae"] == pytest.approx(mae)
    assert metrics["ratio_agreement"]["grade_exact"] == np.mean(np.array(ratios["predicted_grade"]) == 2)
    assert "What an inspector reads" in (out / "report.md").read_text()
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[-3:] == ["val_ratio_mae", "val_grade_exact", "val_grade_within_one"]
    workbook = openpyxl.load_workbook(out / "history.xlsx")
    assert len(workbook.sheetnames) >= 2
    assert sum(len(ws._images) for ws in workbook.worksheets) >= 2  # the curves are embedded


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained):
    out, _, _, first, resumed = trained
    assert "epoch 1/1" in first.stdout
    assert "resuming after epoch 1" in resumed.stdout and "epoch 2/2" in resumed.stdout
    epochs = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    assert json.loads((out / "state.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_export_imports_a_model_the_store_loads(trained, tmp_path):
    out, home, data, _, _ = trained
    run("training.export", "--run", str(out), "--release-dir", str(tmp_path), "--import", home=home)
    meta = json.loads((tmp_path / "unet.json").read_text())
    assert meta["encoder_weights"] == "none" and meta["float16_agreement"] >= 0.999
    assert meta["train_ids"] == ["001", "002", "003", "004"] and meta["val_ids"] == ["005", "006"]
    code = (
        "from segserve.store import load_from_store\n"
        "import numpy as np\n"
        "model, info = load_from_store('unet')\n"
        "p = model.predict_on_batch(np.zeros((1, 64, 64, 3), np.float32))\n"
        "print(info.name, info.metadata['val_metrics']['num_images'], p.shape)\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("unet 2 (1, 64, 64, 3)")
    evaluated = run(
        "training.evaluate",
        "--model",
        "unet",
        "--data",
        str(data),
        "--split",
        "val",
        "--out",
        str(tmp_path / "ev"),
        home=home,
    )
    evaluation = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    run_metrics = json.loads((out / "metrics.json").read_text())
    assert evaluation["num_images"] == 2 and evaluation["ratios"]["truth"] == [0.25, 0.25]
    # the float16 store model answers as the float32 run did (at least 99.9% of the pixels)
    assert evaluation["ratio_agreement"]["ratio_mae"] == pytest.approx(
        run_metrics["ratio_agreement"]["ratio_mae"], abs=0.01
    )
    assert evaluation["standard"]["mean_iou"] == pytest.approx(run_metrics["standard"]["mean_iou"], abs=0.01)
    assert "corroded share of the asset: mean absolute error" in evaluated.stdout
    # the release records what an inspector reads in its val_metrics
    for key in ("ratio_mae", "grade_exact", "grade_within_one"):
        assert meta["val_metrics"][key] == pytest.approx(run_metrics["ratio_agreement"][key])


@pytest.mark.slow
def test_a_final_fit_carries_the_validation_of_its_recipes_run(trained, tmp_path):
    """A fit on train+val holds nothing out: it is exported with the val metrics, thresholds and val ids of the
    same recipe's run on train (its last epoch), and says so in validation_source."""
    out, home, data, _, _ = trained
    final = tmp_path / "final"
    common = ["--model", "unet", "--data", str(data), "--input-size", "64", "--crop-size", "32", "--batch-size", "2"]
    fit = run("training.train", *common, "--out", str(final), "--epochs", "1", "--fit-on", "train+val", home=home)
    assert "loading 6 train and 0 val pairs" in fit.stdout
    assert not (final / "metrics.json").exists()  # no report: nothing to report on
    refused = run("training.export", "--run", str(final), "--release-dir", str(tmp_path / "r"), home=home, check=False)
    assert refused.returncode != 0 and "--validation-from" in refused.stderr
    run("training.export", "--run", str(out), "--checkpoint", "last", "--release-dir", str(tmp_path / "val"), home=home)
    validation = json.loads((tmp_path / "val" / "unet.json").read_text())
    assert validation["best_epoch"] == validation["epochs_run"] == 2  # the last epoch, as the final fit is
    args = [
        "--run",
        str(final),
        "--release-dir",
        str(tmp_path / "r"),
        "--validation-from",
        str(tmp_path / "val" / "unet.json"),
    ]
    exported = run("training.export", *args, home=home)
    meta = json.loads((tmp_path / "r" / "unet.json").read_text())
    assert meta["val_metrics"] == validation["val_metrics"]
    carried = f"val mIoU {validation['val_metrics']['mean_iou']:.4f}, corrosion IoU"
    assert carried in exported.stdout and "of unet.json, its recipe's run on the train split)" in exported.stdout
    assert meta["train_ids"] == [f"{k:03d}" for k in range(1, 7)] and meta["val_ids"] == ["005", "006"]
    assert "same recipe trained on the train split only" in meta["validation_source"]
    assert "(6 photos: the train and val splits)" in meta["trained_on"]
    assert meta["float16_agreement"] >= 0.999
    # measured on the photos it was trained on, it would score its fit: evaluation refuses, and says why
    args = ["--model", "unet", "--release", "--release-dir", str(tmp_path / "r"), "--data", str(data), "--split", "val"]
    refused = run("training.evaluate", *args, "--out", str(tmp_path / "report"), home=home, check=False)
    assert refused.returncode != 0 and "unet was trained on 2 of the 2 val photos" in refused.stderr
    assert not (tmp_path / "report").exists()
