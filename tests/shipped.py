"""The shipped releases on the real val photos, for the tests that check them (release agreement, engine
parity): each release is loaded, exported to ONNX and run on each engine once per test session, because a
VGG16 pass over the 22 val photos costs tens of seconds on a small machine. Nothing here asserts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from segserve import imaging, parity, predictor, store
from tests.servers import ROOT

DATA = ROOT.parent / "shared" / "datasets" / "corrosion-pipes"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"the dataset is not at {DATA}")
INPUT_SIZE = 256


def read_ids(split: str) -> list[str]:
    """The photo ids of ``split`` (train or val) of the real dataset."""
    return (DATA / f"{split}.txt").read_text().split()


def validation_photos() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The val ids, their photos (N, 256, 256, 3) RGB uint8 and their truth masks (N, 256, 256) class ids."""
    ids = read_ids("val")
    images = np.stack([imaging.resize_image(imaging.read_image(str(DATA / "original" / f"ORI_{i}.png"))) for i in ids])
    truth = np.stack([imaging.resize_mask(imaging.read_mask(str(DATA / "ground_truth" / f"GT_{i}.png"))) for i in ids])
    return ids, images, truth


@dataclass
class ShippedOnVal:
    """One shipped release, its ONNX export (in ``folder``) and the val photos; masks per engine on demand."""

    name: str
    model: object
    folder: Path
    ids: list[str]
    images: np.ndarray
    truth: np.ndarray
    _masks: dict[str, np.ndarray] = field(default_factory=dict)

    def masks(self, backend: str, precision: str = "f32") -> np.ndarray:
        """The val masks (N, 256, 256) of the release on ``backend`` at ``precision``, computed once."""
        key = f"{backend}:{precision}"
        if key not in self._masks:
            if backend == "tensorflow":
                run = predictor.Predictor(self.model)
            else:
                run = predictor.load_predictor(self.folder, backend, INPUT_SIZE, precision=precision)
            self._masks[key] = parity.masks(run, self.images)
        return self._masks[key]


class ShippedCache:
    """ShippedOnVal for each release name, built on first use."""

    def __init__(self, root: Path) -> None:
        self.root, self.built = root, {}

    def __call__(self, name: str) -> ShippedOnVal:
        if name not in self.built:
            model, _ = store.load_release(name)
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            predictor.export_onnx(model, folder / predictor.ONNX_FILE, INPUT_SIZE)
            self.built[name] = ShippedOnVal(name, model, folder, *validation_photos())
        return self.built[name]
