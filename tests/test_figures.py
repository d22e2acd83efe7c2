"""training.figures: each figure is written, and the training curves follow the columns a history has."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import figures


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_confusion(tmp_path):
    path = tmp_path / "cm.png"
    figures.plot_confusion(np.array([[5, 1, 0], [0, 3, 0], [0, 0, 0]]), path, "title")  # a class never true
    assert _is_png(path)


@pytest.mark.parametrize("n", [1, 3, 20])
def test_plot_predictions(tmp_path, n):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (n, 8, 8), dtype=np.uint8)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    image_iou = [[0.5, math.nan, 1.0]] * n  # an undefined IoU reads n/a
    path = tmp_path / "predictions.png"
    figures.plot_predictions(images, truth, truth, path, [f"{i:03d}" for i in range(n)], image_iou, "title")
    assert _is_png(path)


@pytest.mark.parametrize(
    ("columns", "written"),
    [
        (("loss",), ["curves_loss.png"]),
        (("loss", "accuracy", "val_pixel_accuracy", "lr"), ["curves_loss.png", "curves_lr.png"]),
        (("loss", "val_miou", "val_mdice", "val_iou_corrosion", "val_per_image_iou_asset"), None),
    ],
)
def test_plot_history_draws_the_curves_it_has_columns_for(tmp_path, columns, written):
    history = [{"epoch": float(e), **{c: 1 / e for c in columns}} for e in (1, 2, 3)]
    drawn = figures.plot_history(history, tmp_path, best_epoch=2)
    names = [name for _, name in drawn]
    assert names == (written or ["curves_loss.png", "curves_iou.png"])
    assert all(_is_png(tmp_path / name) for name in names)
