"""segserve.imaging: decoding and limits, pre/postprocessing, ground-truth colours, colour output and PNG encoding."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from segserve import imaging
from segserve.classes import ASSET, BACKGROUND, CORROSION, PALETTE
from segserve.errors import InvalidInput, TooLarge

RED, BLUE, GREEN, BLACK = (255, 0, 0), (0, 0, 255), (0, 255, 0), (0, 0, 0)


def pil_encode(array: np.ndarray, fmt: str, **params) -> bytes:
    """Encode with Pillow (RGB order, independent of OpenCV's BGR) to bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def solid(height: int, width: int, color: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[...] = color
    return image


def halves(height: int = 12, width: int = 20) -> np.ndarray:
    """Left half red, right half blue: tells RGB from BGR and left from right."""
    image = solid(height, width, RED)
    image[:, width // 2 :] = BLUE
    return image


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (CRC fixed), with the original pixel data: a header-only giant."""
    assert png[12:16] == b"IHDR"
    ihdr = png[16:29]
    ihdr = struct.pack(">II", width, height) + ihdr[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return png[:16] + ihdr + crc + png[33:]


# --- decoding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})],
)
def test_decode_lossless_formats_round_trip(fmt, params):
    image = halves(12, 20)
    decoded = imaging.decode_image(pil_encode(image, fmt, **params))
    assert decoded.shape == (12, 20, 3)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("JPEG", {"quality": 95}), ("WEBP", {"quality": 90})],
)
def test_decode_lossy_formats_keep_size_and_colour(fmt, params):
    decoded = imaging.decode_image(pil_encode(solid(24, 40, RED), fmt, **params))
    assert decoded.shape == (24, 40, 3)
    r, g, b = decoded.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40  # a red image stays red


def test_decode_opencv_encoded_jpeg_is_rgb():
    data = imaging.encode_jpeg(solid(16, 16, RED), quality=95)
    r, g, b = imaging.decode_image(data).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


def test_decode_grayscale_gives_three_equal_channels():
    gray = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10) * 4
    decoded = imaging.decode_image(pil_encode(gray, "PNG"))
    assert decoded.shape == (6, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(decoded[..., c], gray)


def test_decode_rgba_drops_alpha():
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., :3] = halves(5, 7)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    decoded = imaging.decode_image(pil_encode(rgba, "PNG"))
    assert decoded.shape == (5, 7, 3)
    np.testing.assert_array_equal(decoded[1:], halves(5, 7)[1:])


def test_read_image(tmp_path, write_rgb):
    path = write_rgb(tmp_path / "photo.png", halves(8, 6))
    np.testing.assert_array_equal(imaging.read_image(str(path)), halves(8, 6))


def test_header_is_width_then_height():
    header = imaging.read_header(pil_encode(halves(12, 20), "PNG"), 1 << 30, 1 << 30)
    assert header == imaging.ImageHeader(20, 12, "PNG") and header.pixels == 240


PNG_12x20 = pil_encode(halves(12, 20), "PNG")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not an image at all" * 10, id="garbage"),
        pytest.param(PNG_12x20[:20], id="truncated-header"),
        pytest.param(PNG_12x20[: len(PNG_12x20) - 12], id="truncated-data"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, id="png-signature-only"),
    ],
)
@pytest.mark.parametrize("decode", [imaging.decode_image, imaging.decode_mask], ids=["image", "mask"])
def test_undecodable_input_is_invalid(decode, data):
    with pytest.raises(InvalidInput):
        decode(data)


def test_byte_limit():
    n = len(PNG_12x20)
    assert imaging.decode_image(PNG_12x20, max_bytes=n).shape == (12, 20, 3)
    with pytest.raises(TooLarge, match=f"{n} bytes"):
        imaging.decode_image(PNG_12x20, max_bytes=n - 1)
    with pytest.raises(TooLarge):
        imaging.decode_mask(PNG_12x20, max_bytes=n - 1)


def test_pixel_limit():
    assert imaging.decode_image(PNG_12x20, max_pixels=240).shape == (12, 20, 3)
    with pytest.raises(TooLarge, match="240 pixels"):
        imaging.decode_image(PNG_12x20, max_pixels=239)
    with pytest.raises(TooLarge):
        imaging.decode_mask(PNG_12x20, max_pixels=239)


def test_pixel_limit_is_checked_from_the_header(monkeypatch):
    # The header claims 10000x5000 but holds 12x20 pixels of data: only a header check can say TooLarge.
    giant = with_png_size(PNG_12x20, 10_000, 5_000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("decoded before the limit check"))
    with pytest.raises(TooLarge, match="10000x5000"):
        imaging.decode_image(giant, max_pixels=40_000_000)


def test_pixel_limit_above_pillow_bomb_limit_is_too_large():
    giant = with_png_size(PNG_12x20, 20_000, 10_000)  # 200 Mpx, twice Pillow's MAX_IMAGE_PIXELS
    with pytest.raises(TooLarge):
        imaging.decode_image(giant, max_pixels=40_000_000)


# --- preprocessing and postprocessing -----------------------------------------------------------------


@pytest.mark.parametrize("size", [(256, 256), (100, 50), (300, 520), (17, 3)])
def test_resize_then_normalize_shape_dtype_and_bgr_means(size):
    image = solid(*size, (10, 20, 30))  # R=10, G=20, B=30
    x = imaging.normalize(imaging.resize_image(image))
    assert x.shape == (256, 256, 3)
    assert x.dtype == np.float32
    # Channels come out in BGR order with the caffe means removed: B-103.939, G-116.779, R-123.68.
    np.testing.assert_allclose(x[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=0, atol=1e-4)
    np.testing.assert_allclose(x, np.broadcast_to(x[0, 0], x.shape), atol=1e-4)


def test_normalize_keeps_batch_shape():
    batch = np.stack([solid(4, 4, (0, 0, 0)), solid(4, 4, (255, 255, 255))])
    x = imaging.normalize(batch)
    assert x.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(x[1, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], atol=1e-4)


def test_resize_mask_is_nearest():
    mask = np.array([[0, 2], [2, 0]], np.uint8)
    out = imaging.resize_mask(mask, 4)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))


def test_upsample_mask_same_size_is_the_mask():
    mask = np.random.default_rng(0).integers(0, 3, size=(5, 7)).astype(np.uint8)
    assert imaging.upsample_mask(mask, width=7, height=5) is mask


@pytest.mark.parametrize(("height", "width"), [(6, 8), (3, 8), (10, 16)])
def test_upsample_mask_resizes_ids_to_the_input_size(height, width):
    # 4x4 ids: left two columns corrosion, right two background; at an even width each half keeps its class,
    # and no id appears that was not there.
    mask = np.full((4, 4), BACKGROUND, np.uint8)
    mask[:, :2] = CORROSION
    out = imaging.upsample_mask(mask, width=width, height=height)
    assert out.shape == (height, width)
    assert out.dtype == np.uint8
    assert (out[:, : width // 2] == CORROSION).all()
    assert (out[:, width // 2 :] == BACKGROUND).all()


# --- ground truth colours -------------------------------------------------------------------------------


def test_colors_to_mask_exact_colours_and_black():
    rgb = np.array([[RED, BLUE, GREEN, BLACK]], np.uint8)
    mask = imaging.colors_to_mask(rgb)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[CORROSION, ASSET, BACKGROUND, BACKGROUND]])


@pytest.mark.parametrize(
    ("color", "expected"),
    [
        ((240, 20, 10), CORROSION),
        ((200, 40, 40), CORROSION),
        ((15, 10, 230), ASSET),
        ((30, 220, 30), BACKGROUND),
        ((20, 20, 20), BACKGROUND),  # near black
    ],
)
def test_colors_to_mask_near_colours(color, expected):
    rgb = solid(10, 10, color)
    np.testing.assert_array_equal(imaging.colors_to_mask(rgb), np.full((10, 10), expected))


@pytest.mark.parametrize("far", [(128, 128, 128), (255, 255, 0)], ids=["gray", "yellow"])
@pytest.mark.parametrize(("n_far", "ok"), [(1, True), (100, True), (101, False), (5000, False)])
def test_colors_to_mask_far_pixels(far, n_far, ok):
    # 100x100 blue mask with n_far far-away pixels: at most 1 % (100 pixels) is tolerated.
    rgb = solid(100, 100, BLUE)
    rgb.reshape(-1, 3)[:n_far] = far
    if ok:
        mask = imaging.colors_to_mask(rgb)
        assert (mask.reshape(-1)[n_far:] == ASSET).all()
    else:
        with pytest.raises(InvalidInput, match="far from every class colour"):
            imaging.colors_to_mask(rgb)


def test_decode_mask_rgb_png(make_mask):
    mask = make_mask(12, 16)
    decoded = imaging.decode_mask(imaging.encode_png(imaging.colorize(mask)))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


def test_decode_mask_16_bit_rgb_png(make_mask):
    mask = make_mask(6, 8)
    bgr16 = cv2.cvtColor(imaging.colorize(mask), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", bgr16)
    assert ok
    np.testing.assert_array_equal(imaging.decode_mask(buf.tobytes()), mask)


def test_decode_mask_single_channel_ids(make_mask):
    mask = make_mask(9, 11)
    assert set(np.unique(mask)) == {0, 1, 2}
    decoded = imaging.decode_mask(pil_encode(mask, "PNG"))
    assert decoded.shape == (9, 11)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("bad", [3, 255])
def test_decode_mask_single_channel_out_of_range(bad):
    mask = np.zeros((4, 4), np.uint8)
    mask[2, 3] = bad
    with pytest.raises(InvalidInput, match=f"value {bad}"):
        imaging.decode_mask(pil_encode(mask, "PNG"))


def test_read_mask(tmp_path, write_rgb, make_mask):
    mask = make_mask(8, 8)
    path = write_rgb(tmp_path / "gt.png", imaging.colorize(mask))
    np.testing.assert_array_equal(imaging.read_mask(str(path)), mask)


# --- colour output and encoding --------------------------------------------------------------------------


def test_colorize(make_mask):
    mask = make_mask(6, 8)
    rgb = imaging.colorize(mask)
    assert rgb.shape == (6, 8, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[mask == CORROSION][0], RED)
    np.testing.assert_array_equal(rgb[mask == ASSET][0], BLUE)
    np.testing.assert_array_equal(rgb[mask == BACKGROUND][0], GREEN)
    np.testing.assert_array_equal(rgb, PALETTE[mask])


def test_overlay(make_mask, make_image):
    mask = make_mask(6, 8)
    image = make_image(mask)
    blended = imaging.overlay(image, mask)
    assert blended.shape == (6, 8, 3)
    assert blended.dtype == np.uint8
    np.testing.assert_array_equal(imaging.overlay(image, mask, alpha=0.0), image)
    np.testing.assert_array_equal(imaging.overlay(image, mask, alpha=1.0), imaging.colorize(mask))
    # alpha 0.5 of black over red is (128 or 127, 0, 0).
    half = imaging.overlay(np.zeros((1, 1, 3), np.uint8), np.array([[CORROSION]], np.uint8), alpha=0.5)
    assert abs(int(half[0, 0, 0]) - 128) <= 1 and half[0, 0, 1] == 0 and half[0, 0, 2] == 0


def test_encode_png_class_mask_round_trip(make_mask):
    mask = make_mask(12, 16)
    data = imaging.encode_png(mask)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, mask)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
    np.testing.assert_array_equal(imaging.decode_mask(data), mask)


def test_encode_png_rgb_is_rgb():
    data = imaging.encode_png(halves(4, 6))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), halves(4, 6))


def test_color_mask_png_is_indexed_with_the_class_palette(make_mask):
    """The colour mask is a palette PNG: every reader shows the class colours, and it decodes to ``colorize``."""
    mask = make_mask(12, 16)
    data = imaging.encode_color_mask_png(mask)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P"
        assert im.getpalette()[: 3 * len(PALETTE)] == PALETTE.ravel().tolist()
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), imaging.colorize(mask))
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(bgr[..., ::-1], imaging.colorize(mask))
    np.testing.assert_array_equal(imaging.decode_mask(data), mask)
