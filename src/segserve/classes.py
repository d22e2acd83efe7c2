"""The class table: ids, names and colours. The single source of truth for both serving and training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegClass:
    """One segmentation class: its id (the pixel value in a class-id mask), name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


CLASSES: tuple[SegClass, ...] = (
    SegClass(0, "corrosion", (255, 0, 0)),
    SegClass(1, "asset", (0, 0, 255)),
    SegClass(2, "background", (0, 255, 0)),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CORROSION = 0
ASSET = 1
BACKGROUND = 2

# RGB palette indexed by class id, shape (NUM_CLASSES, 3), uint8.
PALETTE = np.array([c.color for c in CLASSES], dtype=np.uint8)

# Pure black in a ground truth means "not labelled as anything else" and counts as background.
BLACK_CLASS = BACKGROUND


def class_table() -> list[dict]:
    """The class table as plain dicts, for model metadata and JSON answers."""
    return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES]
