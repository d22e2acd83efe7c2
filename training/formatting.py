"""How numbers read in training's reports and tables: percentages, durations, model names, JSON-safe values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from segserve.architectures import ARCHITECTURES

# Report and table names of the architectures (``DeepLabV3+``, ``U-Net``).
DISPLAY_NAMES: dict[str, str] = {name: a.display_name for name, a in ARCHITECTURES.items()}


def display_name(name: str) -> str:
    """The report name of an architecture; any other name as it is."""
    return DISPLAY_NAMES.get(name, name)


def percent(value: float | None, unit: str = "", width: int = 0, missing: str = "n/a") -> str:
    """A share in [0, 1] as a percentage with two decimals: 0.1234 -> ``12.34`` (``12.34%`` with unit "%").

    width: the number's field width (right-aligned); missing: what an undefined value (None or NaN) reads as.
    """
    if value is None or math.isnan(value):
        return missing
    return f"{100 * value:{width}.2f}{unit}"


def duration(seconds: float) -> str:
    """Seconds as they read best: ``95 s``, ``12.5 min``, ``2.50 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def plain(value: Any) -> Any:
    """NumPy scalars and arrays to Python values and NaN to None, recursively, so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value
