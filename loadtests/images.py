"""The synthetic photo the load tests send when no LOADTEST_IMAGE is given."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_png(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A photo-like PNG: a gradient backdrop, a grey pipe across the middle with rust patches, mild noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    rgb = ((1 - rows) * (170, 190, 210) + rows * (90, 140, 80)) * np.ones((1, width, 1))
    rgb = rgb.astype(np.uint8)
    rgb[2 * height // 5 : 3 * height // 5] = (120, 125, 135)
    for _ in range(6):
        center = (int(rng.integers(0, width)), int(rng.integers(2 * height // 5, 3 * height // 5)))
        cv2.circle(rgb, center, int(rng.integers(8, 30)), (150, 70, 30), -1)
    noisy = np.clip(rgb.astype(np.int16) + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()
