"""Training augmentation on NumPy arrays. Masks follow the geometry.

Two recipes, named in ``AUGMENTATIONS`` and chosen by ``training.train --augment``:

- ``zoom``: a square of random side (from the crop size to the whole image) at a random place, resized to the
  crop size, and a horizontal flip;
- ``rescale``: the whole image rescaled by 0.7-1.4, a crop at that scale, horizontal and vertical flips and
  colour jitter.
"""

from __future__ import annotations

import cv2
import numpy as np

from segserve.classes import BACKGROUND


def random_scale_crop(
    image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator, scale: tuple[float, float] = (0.7, 1.4)
) -> tuple[np.ndarray, np.ndarray]:
    """Rescale by a random factor, then take a random crop x crop window (padding with background if small).

    image: uint8 (H, W, 3); mask: uint8 (H, W). Returns uint8 (crop, crop, 3) and (crop, crop).
    """
    factor = rng.uniform(*scale)
    h, w = mask.shape
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    if nh < crop or nw < crop:
        ph, pw = max(0, crop - nh), max(0, crop - nw)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        mask = cv2.copyMakeBorder(mask, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=BACKGROUND)
        nh, nw = mask.shape
    top = rng.integers(0, nh - crop + 1)
    left = rng.integers(0, nw - crop + 1)
    return image[top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]


def random_flip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip with probability 1/2, vertical flip with probability 1/4 (pipes lie either way)."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.25:
        image, mask = image[::-1], mask[::-1]
    return image, mask


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation in [1 - s, 1 + s], and a small hue shift; uint8 in and out."""
    x = image.astype(np.float32)
    x = x * rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    gray = x.mean(axis=-1, keepdims=True)
    x = (x - gray) * rng.uniform(1 - strength, 1 + strength) + gray  # saturation
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
    shift = int(rng.integers(-4, 5))  # OpenCV hue runs 0..179; +-4 keeps rust rust-coloured
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def random_zoom_crop(
    image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A square of side uniform in [crop, min(H, W)] at a random place, resized to crop x crop.

    image: uint8 (H, W, 3); mask: uint8 (H, W). The model thus sees its input photos' whole field of view at
    training scale as well as close-ups. Returns uint8 (crop, crop, 3) and (crop, crop).
    """
    h, w = mask.shape
    side = int(rng.integers(min(crop, h, w), min(h, w) + 1))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    image = image[top : top + side, left : left + side]
    mask = mask[top : top + side, left : left + side]
    if side != crop:
        shrink = side > crop
        image = cv2.resize(image, (crop, crop), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (crop, crop), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, mask


def zoom(image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``zoom`` recipe: a random zoom crop and a horizontal flip with probability 1/2."""
    image, mask = random_zoom_crop(image, mask, crop, rng)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def rescale(image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``rescale`` recipe: scale crop, flips, colour jitter."""
    image, mask = random_scale_crop(image, mask, crop, rng)
    image, mask = random_flip(image, mask, rng)
    return color_jitter(np.ascontiguousarray(image), rng), np.ascontiguousarray(mask)


AUGMENTATIONS = {"zoom": zoom, "rescale": rescale}


def augment(
    image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator, recipe: str = "rescale"
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one pair by the named recipe (``AUGMENTATIONS``)."""
    return AUGMENTATIONS[recipe](image, mask, crop, rng)
