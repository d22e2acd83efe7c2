"""segserve.imaging mask decoding properties (hypothesis): class ids survive every encoding the contract accepts.

The contract (README, "The contract"): a ground truth is an RGB mask in the dataset colours, pure black counting
as background, or a single-channel PNG of class ids. Each encoding below is lossless, so decode_mask must give
back exactly the ids that were drawn.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from segserve import imaging
from segserve.classes import BACKGROUND, NUM_CLASSES, PALETTE
from segserve.errors import InvalidInput

# Deterministic (the same examples every run, no example database written into the tree) and quick.
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None)

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)
masks = shapes.flatmap(lambda shape: hnp.arrays(np.uint8, shape, elements=st.integers(0, NUM_CLASSES - 1)))


def _cv2_encode(ext: str, bgr: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, params or [])
    assert ok, ext
    return buf.tobytes()


def _pil_encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _palette_png(mask: np.ndarray) -> bytes:
    """An indexed (mode P) PNG whose palette holds the class colours, as many labelling tools write."""
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette(PALETTE.ravel().tolist())
    return _pil_encode(image, "PNG")


# name -> encoder of an RGB mask in the dataset colours (H, W, 3) uint8.
RGB_ENCODINGS = {
    "png": lambda rgb: imaging.encode_png(rgb),
    "bmp": lambda rgb: _cv2_encode(".bmp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
    "tiff": lambda rgb: _cv2_encode(".tiff", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
    "webp-lossless": lambda rgb: _cv2_encode(
        ".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101]
    ),
    "png-pillow": lambda rgb: _pil_encode(Image.fromarray(rgb, mode="RGB"), "PNG"),
    "tiff-pillow": lambda rgb: _pil_encode(Image.fromarray(rgb, mode="RGB"), "TIFF"),
    "webp-lossless-pillow": lambda rgb: _pil_encode(Image.fromarray(rgb, mode="RGB"), "WEBP", lossless=True),
    "png-16bit": lambda rgb: _cv2_encode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257),
    "png-rgba-opaque": lambda rgb: _pil_encode(Image.fromarray(rgb, mode="RGB").convert("RGBA"), "PNG"),
}


@pytest.mark.parametrize("encoding", sorted(RGB_ENCODINGS))
@PROPERTY
@given(mask=masks)
def test_rgb_mask_in_the_dataset_colours_survives(encoding, mask):
    data = RGB_ENCODINGS[encoding](imaging.colorize(mask))
    decoded = imaging.decode_mask(data)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


@PROPERTY
@given(mask=masks)
def test_single_channel_png_of_ids_survives(mask):
    data = imaging.encode_png(mask)
    assert Image.open(io.BytesIO(data)).mode == "L"
    decoded = imaging.decode_mask(data)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)
    # Pillow's own grayscale PNG too.
    np.testing.assert_array_equal(imaging.decode_mask(_pil_encode(Image.fromarray(mask, mode="L"), "PNG")), mask)


@PROPERTY
@given(mask=masks)
def test_palette_png_in_the_dataset_colours_survives(mask):
    np.testing.assert_array_equal(imaging.decode_mask(_palette_png(mask)), mask)


@PROPERTY
@given(mask=masks, data=st.data())
def test_pure_black_is_background(mask, data):
    black = data.draw(hnp.arrays(np.bool_, mask.shape))
    rgb = imaging.colorize(mask)
    rgb[black] = 0
    expected = np.where(black, BACKGROUND, mask)
    for encoding in ("png", "bmp", "webp-lossless"):
        np.testing.assert_array_equal(imaging.decode_mask(RGB_ENCODINGS[encoding](rgb)), expected, err_msg=encoding)


@PROPERTY
@given(mask=masks, data=st.data())
def test_colours_near_a_class_colour_go_to_that_class(mask, data):
    # Anti-aliasing and lossy tools shift colours a little; a shift of at most 40 per channel is at most
    # 40 * sqrt(3) ~ 69 from the class colour, inside MAX_COLOR_DISTANCE (100) and nearer to it than to any other.
    noise = data.draw(hnp.arrays(np.int16, (*mask.shape, 3), elements=st.integers(-40, 40)))
    rgb = np.clip(imaging.colorize(mask).astype(np.int16) + noise, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(imaging.decode_mask(imaging.encode_png(rgb)), mask)


@PROPERTY
@given(mask=masks, bad=st.integers(NUM_CLASSES, 255), data=st.data())
def test_single_channel_id_outside_the_class_table_is_refused(mask, bad, data):
    mask = mask.copy()
    mask[data.draw(st.integers(0, mask.shape[0] - 1)), data.draw(st.integers(0, mask.shape[1] - 1))] = bad
    with pytest.raises(InvalidInput, match=f"has value {bad}; class ids must be 0..{NUM_CLASSES - 1}"):
        imaging.decode_mask(imaging.encode_png(mask))


@PROPERTY
@given(mask=masks)
def test_colorize_then_encode_png_keeps_the_palette(mask):
    rgb = imaging.colorize(mask)
    assert rgb.shape == (*mask.shape, 3)
    np.testing.assert_array_equal(rgb, PALETTE[mask])
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(imaging.encode_png(rgb), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32])
@PROPERTY
@given(mask=masks, data=st.data())
def test_signed_or_float_masks_are_refused_not_wrapped(dtype, mask, data):
    # A single-channel TIFF can hold signed or float samples: -1 used to wrap to class id 255 (which then failed
    # deep inside the metrics) and 0.5 to truncate to 0. Masks are unsigned 8- or 16-bit; anything else is refused.
    values = mask.astype(dtype)
    if data.draw(st.booleans()):
        values[0, 0] = -1
    ok, buf = cv2.imencode(".tiff", values)
    assert ok
    with pytest.raises(InvalidInput, match=f"ground truth has {np.dtype(dtype).name} samples"):
        imaging.decode_mask(buf.tobytes())


def _chunks(png: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk of a PNG."""
    out, pos = [], 8
    while pos + 8 <= len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        out.append((pos, png[pos + 4 : pos + 8]))
        pos += 12 + length
    return out


@PROPERTY
@given(mask=masks, length=st.integers(1 << 24, (1 << 31) - 1), data=st.data())
def test_png_chunk_longer_than_the_file_is_refused_before_decoding(mask, length, data):
    # Found by fuzz/fuzz_decode.py: OpenCV's PNG reader allocates an IDAT chunk's declared length before reading it,
    # so 155 bytes declaring a 4 GB IDAT took 4 GB of memory. A chunk cannot be longer than the file that holds it.
    png = bytearray(imaging.encode_png(imaging.colorize(mask)))
    offset, kind = data.draw(st.sampled_from([c for c in _chunks(bytes(png)) if c[1] != b"IEND"]))
    png[offset : offset + 4] = length.to_bytes(4, "big")
    for decode in (imaging.read_header, imaging.decode_image, imaging.decode_mask):
        with pytest.raises(InvalidInput, match=f"PNG chunk {kind.decode()} at byte {offset} declares {length} bytes"):
            decode(bytes(png), 1 << 25, 40_000_000)


# Found by fuzz/fuzz_decode.py: a PGM whose header Pillow reads as 4x44 and OpenCV as 4x4. The pixel limit is
# checked on Pillow's reading and the image decoded by OpenCV, so two readings of one header must never both pass.
PGM_READ_TWO_WAYS = bytes.fromhex(
    "50350d230d340d0d2350230d34230d340d0d2350230d340d0d23dbdbdbdb0d3430380d0d0d23dbdbdbdb0d3430380d000109ba00"
)


@pytest.mark.parametrize("decode", [imaging.read_header, imaging.decode_image, imaging.decode_mask])
@pytest.mark.parametrize(
    ("fmt", "params"),
    [("GIF", {}), ("PPM", {}), ("JPEG2000", {}), ("TGA", {}), ("PCX", {})],
)
def test_formats_outside_the_contract_are_refused(decode, fmt, params):
    # The contract (proto, README): PNG, JPEG, BMP, TIFF or WebP. Every other format both libraries happen to read
    # is refused by name, whatever its content: fewer parsers facing the network, no header read two ways.
    data = _pil_encode(Image.fromarray(imaging.colorize(np.zeros((6, 8), np.uint8))), fmt, **params)
    with pytest.raises(InvalidInput, match=f"image is {fmt}, not a PNG, JPEG, BMP, TIFF or WebP file"):
        decode(data, 1 << 25, 40_000_000)
    with pytest.raises(InvalidInput):
        decode(PGM_READ_TWO_WAYS, 1 << 25, 40_000_000)


def test_camera_jpeg_with_extra_pictures_mpo_is_a_jpeg():
    photo = np.full((8, 6, 3), (200, 40, 10), np.uint8)
    data = _pil_encode(Image.fromarray(photo), "MPO", save_all=True, append_images=[Image.fromarray(photo)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert imaging.read_header(data, 1 << 25, 40_000_000) == imaging.ImageHeader(6, 8, "MPO")
    decoded = imaging.decode_image(data)
    assert decoded.shape == (8, 6, 3)
    assert np.abs(decoded.astype(int) - photo).max() <= 8  # JPEG


@PROPERTY
@given(mask=masks, data=st.data())
def test_decoded_size_must_match_the_header(mask, data):
    # A header whose size disagrees with what the decoder produces is refused, however it came about: here a PNG
    # decoded by the real decoder into an array of another size than the header gave.
    rgb = imaging.colorize(mask)
    png = imaging.encode_png(rgb)
    other = data.draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30))
    real_imdecode = cv2.imdecode

    def lying_imdecode(buf, flags):
        out = real_imdecode(buf, flags)
        return cv2.resize(out, (other[1], other[0]), interpolation=cv2.INTER_NEAREST)

    h, w = mask.shape
    same = {(h, w), (w, h)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imaging.cv2, "imdecode", lying_imdecode)
        for decode in (imaging.decode_image, imaging.decode_mask):
            if tuple(other) in same:
                assert decode(png).shape[:2] == tuple(other)
            else:
                with pytest.raises(InvalidInput, match=f"header says {w}x{h} but its data decodes to"):
                    decode(png)


def _tiff_with_height(height: int) -> bytes:
    """A small RGB TIFF whose header claims `height` rows (ImageLength patched, as a LONG)."""
    data = bytearray(_pil_encode(Image.fromarray(np.zeros((12, 16, 3), np.uint8)), "TIFF"))
    assert data[:4] == b"II*\x00"
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry : entry + 2], "little") == 257:  # ImageLength
            data[entry + 2 : entry + 4] = (4).to_bytes(2, "little")
            data[entry + 8 : entry + 12] = height.to_bytes(4, "little")
            return bytes(data)
    raise AssertionError("no ImageLength tag")


@pytest.mark.parametrize("decode", [imaging.decode_image, imaging.decode_mask])
def test_side_longer_than_opencv_reads_is_invalid_not_an_opencv_error(decode):
    # Found by fuzz/fuzz_decode.py: 16 x 2,097,164 is within the pixel limit (33.5 of 40 megapixels), but OpenCV
    # refuses a side over 2**20 by raising cv2.error instead of returning None, which became a 500.
    data = _tiff_with_height((1 << 21) + 12)
    header = imaging.read_header(data, 1 << 25, 40_000_000)
    assert (header.width, header.height) == (16, (1 << 21) + 12)
    with pytest.raises(InvalidInput, match="could not be decoded"):
        decode(data, 1 << 25, 40_000_000)
