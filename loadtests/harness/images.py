"""The photos the scenarios send: a synthetic photo-like PNG, a large synthetic JPEG, or real photos from a
folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
    if not ok:
        raise RuntimeError("cv2 could not encode the synthetic PNG")
    return buf.tobytes()


def big_jpeg(side: int) -> bytes:
    """A photo-like SIDE x SIDE JPEG: smooth gradients and a band, which compresses to about 1 MB at 6000."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    image = np.dstack([180 * x + 40, 120 + 60 * np.sin(9 * y), 200 * (1 - y) + 30]).astype(np.uint8)
    image[side // 3 : side // 2] = (110, 115, 125)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def load_images(directory: Path, count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` photos of ``directory`` (sorted by name), as (name, bytes). Raises FileNotFoundError
    when there is no such folder or no photo in it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no image folder {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise FileNotFoundError(f"no images in {directory}")
    return [(p.name, p.read_bytes()) for p in paths]


def image_or_synthetic(path: Path | None) -> tuple[bytes, str]:
    """The photo at ``path``, or the synthetic 640x480 PNG; with a description for reports."""
    if path is not None:
        data = Path(path).read_bytes()
        return data, f"{path} ({len(data)} bytes)"
    data = synthetic_png()
    return data, f"synthetic 640x480 PNG ({len(data)} bytes)"
