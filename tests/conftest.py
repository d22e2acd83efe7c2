"""Shared fixtures: small RGB images, class masks and synthetic dataset folders, all built in code.

The helpers are exposed as factory fixtures (``make_mask``, ``make_image``, ``write_rgb``, ``make_dataset``)
so that any test module can use them without importing this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from segserve.classes import ASSET, BACKGROUND, CORROSION, PALETTE


def _make_mask(height: int = 12, width: int = 16) -> np.ndarray:
    """A class mask (H, W) uint8 holding all three classes.

    Background everywhere, an asset band over the middle third of the rows, and corrosion on the left
    quarter of that band. For the default 12x16: rows 4..7 are the band, columns 0..3 of it corrosion.
    """
    mask = np.full((height, width), BACKGROUND, np.uint8)
    top, bottom = height // 3, 2 * height // 3
    mask[top:bottom, :] = ASSET
    mask[top:bottom, : max(1, width // 4)] = CORROSION
    return mask


def _make_image(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 (H, W, 3) image for a mask: dimmed class colours plus seeded noise."""
    rng = np.random.default_rng(seed)
    base = PALETTE[mask].astype(np.int16) // 2 + 40
    noise = rng.integers(-20, 21, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_rgb(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (or a (H, W) single-channel array) with cv2, converting RGB to BGR."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cv2 could not write {path}")
    return path


@dataclass
class SyntheticDataset:
    """A dataset folder written by ``make_dataset``: what was written, by id ("001", "002", ...)."""

    root: Path
    ids: list[str]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def image_path(self, id_: str) -> Path:
        return self.root / "original" / f"ORI_{id_}.png"

    def mask_path(self, id_: str) -> Path:
        return self.root / "ground_truth" / f"GT_{id_}.png"


@pytest.fixture
def make_mask() -> Callable[..., np.ndarray]:
    """``make_mask(height=12, width=16)``: a class mask with background, an asset band and corrosion."""
    return _make_mask


@pytest.fixture
def make_image() -> Callable[..., np.ndarray]:
    """``make_image(mask, seed=0)``: a noisy RGB image whose colours follow the mask."""
    return _make_image


@pytest.fixture
def write_rgb() -> Callable[..., Path]:
    """``write_rgb(path, rgb)``: write an RGB array with cv2 (BGR on disk), creating parent folders."""
    return _write_rgb


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., SyntheticDataset]:
    """``make_dataset(n=3, size=(12, 16), numbers=None, splits=None, mask_style="rgb", root=None)``.

    Writes ``original/ORI_NNN.png`` and ``ground_truth/GT_NNN.png`` for NNN in ``numbers`` (default 1..n,
    three digits) under ``root`` (default ``tmp_path / "data"``). Ground truths are colour masks
    (``mask_style="rgb"``) or single-channel class-id PNGs (``"ids"``). ``splits`` maps a split name
    ("train", "val", "test") to the ids written to ``<name>.txt``, one per line.
    """

    def factory(
        n: int = 3,
        size: tuple[int, int] = (12, 16),
        numbers: list[int] | None = None,
        splits: dict[str, list[str]] | None = None,
        mask_style: str = "rgb",
        root: Path | None = None,
    ) -> SyntheticDataset:
        root = Path(root) if root is not None else tmp_path / "data"
        numbers = list(range(1, n + 1)) if numbers is None else numbers
        data = SyntheticDataset(root=root, ids=[f"{k:03d}" for k in numbers])
        height, width = size
        for i, id_ in enumerate(data.ids):
            mask = _make_mask(height, width)
            mask = np.roll(mask, i, axis=1)  # each pair slightly different
            image = _make_image(mask, seed=i)
            _write_rgb(data.image_path(id_), image)
            _write_rgb(data.mask_path(id_), PALETTE[mask] if mask_style == "rgb" else mask)
            data.images[id_], data.masks[id_] = image, mask
        for name, ids in (splits or {}).items():
            (root / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
        return data

    return factory


@pytest.fixture(scope="session")
def tf_few_threads() -> None:
    """Keep TensorFlow to one intra-op thread (tests share a small machine). Best effort: TF may be running."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


@pytest.fixture(scope="session")
def shipped_on_val(tmp_path_factory):
    """The shipped releases on the real val photos, each loaded, exported and run per engine once a session."""
    from tests.shipped import ShippedCache

    return ShippedCache(tmp_path_factory.mktemp("shipped_on_val"))


# --------------------------------------------------------------------------- running the suite on several workers

# `make test` runs the suite on a few pytest-xdist workers (--dist loadgroup). Each module is one unit of work,
# so that its module fixtures (a trained run, a built bento, a server) are made once; these modules share a unit:
SHARED_UNITS = {
    # the shipped releases on the val photos, computed once a session (tests.shipped)
    "test_predictor": "shipped-on-val",
    "test_release": "shipped-on-val",
    # they may install Debian packages (make ops-tools, postgres-tools, browser-tools): one apt-get at a time
    "test_deploy": "system-packages",
    "test_prometheus": "system-packages",
    "test_history": "system-packages",
    "test_history_store": "system-packages",
    "test_http_face": "system-packages",
}
# The longest units go first, so that no worker is left alone with one of them at the end.
LONGEST_FIRST = ("shipped-on-val", "test_training", "test_finetune")


def _unit(item: pytest.Item) -> str:
    module = item.module.__name__.rsplit(".", 1)[-1]
    return SHARED_UNITS.get(module, module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test in its module's unit of work (xdist_group), the longest units first."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_unit(item)))
    first = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(_unit(item), len(first)))
