"""training.augment: crop shapes, masks following the geometry, colour jitter, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segserve.classes import BACKGROUND, CORROSION, PALETTE
from segserve.imaging import colorize
from training.augment import AUGMENTATIONS, augment, color_jitter, random_flip, random_scale_crop, random_zoom_crop


def blocks(height: int, width: int, block: int = 8, seed: int = 0) -> np.ndarray:
    """A class mask of random block x block tiles."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, 3, size=(-(-height // block), -(-width // block))).astype(np.uint8)
    return np.repeat(np.repeat(tiles, block, axis=0), block, axis=1)[:height, :width]


@pytest.mark.parametrize(
    ("height", "width", "crop"),
    [
        (100, 80, 32),  # crop smaller than the image
        (20, 30, 64),  # crop bigger than the image: padded
        (10, 100, 32),  # smaller in one dimension only
        (64, 64, 64),
    ],
)
def test_scale_crop_shapes(height, width, crop):
    mask = blocks(height, width)
    image, out_mask = random_scale_crop(colorize(mask), mask, crop, np.random.default_rng(1))
    assert image.shape == (crop, crop, 3) and image.dtype == np.uint8
    assert out_mask.shape == (crop, crop) and out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 1, 2}


def test_padding_is_background():
    # 10x10 corrosion, scale fixed at 1, crop 16: the crop starts at (0, 0) and the padding is background.
    mask = np.full((10, 10), CORROSION, np.uint8)
    image = colorize(mask)
    out_image, out_mask = random_scale_crop(image, mask, 16, np.random.default_rng(0), scale=(1.0, 1.0))
    expected = np.full((16, 16), BACKGROUND, np.uint8)
    expected[:10, :10] = CORROSION
    np.testing.assert_array_equal(out_mask, expected)
    np.testing.assert_array_equal(out_image[:10, :10], image)


@pytest.mark.parametrize("seed", range(5))
def test_unscaled_crop_keeps_image_and_mask_aligned(seed):
    mask = blocks(48, 40, block=4, seed=seed)
    out_image, out_mask = random_scale_crop(colorize(mask), mask, 24, np.random.default_rng(seed), scale=(1.0, 1.0))
    np.testing.assert_array_equal(colorize(out_mask), out_image)


@pytest.mark.parametrize("seed", range(4))
def test_scaled_crop_keeps_image_and_mask_aligned_inside_regions(seed):
    # Away from tile borders (a 5x5 neighbourhood of one exact class colour), the mask has that class.
    mask = blocks(96, 96, block=16, seed=seed)
    out_image, out_mask = random_scale_crop(colorize(mask), mask, 64, np.random.default_rng(seed))
    checked = 0
    for c, color in enumerate(PALETTE):
        exact = np.all(out_image == color, axis=-1).astype(np.uint8)
        inside = cv2.erode(exact, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
        assert (out_mask[inside] == c).all()
        checked += inside.sum()
    assert checked > 0.5 * 64 * 64


def test_flips_move_image_and_mask_together():
    mask = blocks(12, 16, block=2, seed=3)
    image = colorize(mask)
    seen = set()
    for seed in range(40):
        out_image, out_mask = random_flip(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(colorize(out_mask), out_image)
        horizontal = np.array_equal(out_mask, mask[:, ::-1]) or np.array_equal(out_mask, mask[::-1, ::-1])
        vertical = np.array_equal(out_mask, mask[::-1]) or np.array_equal(out_mask, mask[::-1, ::-1])
        seen.add((horizontal, vertical))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_color_jitter_keeps_shape_and_dtype():
    image = np.random.default_rng(0).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    out = color_jitter(image, np.random.default_rng(0))
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_augment_output_and_determinism():
    mask = blocks(40, 48, seed=2)
    image = colorize(mask)
    first = augment(image, mask, 32, np.random.default_rng(7))
    again = augment(image, mask, 32, np.random.default_rng(7))
    other = augment(image, mask, 32, np.random.default_rng(8))
    assert first[0].shape == (32, 32, 3) and first[1].shape == (32, 32)
    assert first[0].flags["C_CONTIGUOUS"] and first[1].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not (np.array_equal(first[0], other[0]) and np.array_equal(first[1], other[1]))


def test_augment_does_not_modify_its_inputs():
    mask = blocks(40, 48, seed=2)
    image = colorize(mask)
    image_copy, mask_copy = image.copy(), mask.copy()
    augment(image, mask, 32, np.random.default_rng(0))
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(mask, mask_copy)


@pytest.mark.parametrize(("height", "width", "crop"), [(256, 256, 128), (100, 80, 32), (64, 64, 64)])
def test_zoom_crop_shapes_and_sides(height, width, crop):
    mask = blocks(height, width)
    for seed in range(20):
        image, out_mask = random_zoom_crop(colorize(mask), mask, crop, np.random.default_rng(seed))
        assert image.shape == (crop, crop, 3) and out_mask.shape == (crop, crop)
        assert set(np.unique(out_mask)) <= {0, 1, 2}


def test_zoom_crop_is_a_resized_square_of_the_image():
    """The mask is the nearest-neighbour resize of a square window; the whole image is one possible window."""
    mask = blocks(96, 96, block=16)
    rng = np.random.default_rng(3)
    sides = []
    for _ in range(200):
        seed = int(rng.integers(1 << 30))
        probe = np.random.default_rng(seed)  # the same draws random_zoom_crop makes
        side = int(probe.integers(32, 97))
        top, left = int(probe.integers(0, 96 - side + 1)), int(probe.integers(0, 96 - side + 1))
        _, out = random_zoom_crop(colorize(mask), mask, 32, np.random.default_rng(seed))
        window = mask[top : top + side, left : left + side]
        expected = cv2.resize(window, (32, 32), interpolation=cv2.INTER_NEAREST_EXACT) if side != 32 else window
        np.testing.assert_array_equal(out, expected)
        sides.append(side)
    assert min(sides) < 40 and max(sides) > 90  # sides span the crop to the whole image


def test_zoom_recipe_flips_horizontally_only_and_keeps_colours():
    mask = blocks(64, 64)
    image = colorize(mask)
    for seed in range(10):
        out_image, out_mask = augment(image, mask, 64, np.random.default_rng(seed), "zoom")
        np.testing.assert_array_equal(out_image, colorize(out_mask))  # no jitter, geometry shared
        assert out_image.flags["C_CONTIGUOUS"] and out_mask.flags["C_CONTIGUOUS"]
    assert set(AUGMENTATIONS) == {"zoom", "rescale"}
