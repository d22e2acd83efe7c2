"""Image and mask I/O, validation, preprocessing and postprocessing.

Serving and training both use these functions, so they can never disagree on what a pixel means.
Images are RGB ``uint8`` arrays of shape (H, W, 3); class masks are ``uint8`` arrays of shape (H, W)
holding class ids from :mod:`segserve.classes`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segserve.classes import BACKGROUND, NUM_CLASSES, PALETTE
from segserve.errors import InvalidInput, TooLarge

MODEL_INPUT_SIZE = 256
# Channel means of the ImageNet-trained ResNet50 ("caffe" preprocessing, BGR order), so that
# models initialised from ImageNet weights and models trained from scratch see the same input.
_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# A ground-truth pixel farther than this (Euclidean, RGB) from every class colour and from black is
# "unknown"; more than MAX_UNKNOWN_FRACTION of such pixels rejects the mask.
MAX_COLOR_DISTANCE = 100.0
MAX_UNKNOWN_FRACTION = 0.01


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The formats of the contract, by Pillow's names (MPO: the JPEG many cameras write, with extra pictures). Other
# formats both libraries can read are refused: Pillow reads the header, OpenCV the data, and a header the two
# read differently would slip past the pixel limit.
_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP"})


def _check_png_chunks(data: bytes) -> None:
    """Raise InvalidInput for a PNG with a chunk longer than the bytes left in the file.

    OpenCV's PNG reader allocates a chunk's declared length before reading it (IDAT has no cap), so a few bytes
    declaring a 4 GB chunk would take 4 GB of memory.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return
    pos, end = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if length > end - pos - 12:
            raise InvalidInput(
                f"PNG chunk {kind.decode('latin-1')} at byte {pos} declares {length} bytes; "
                f"the file has {end - pos - 12} left"
            )
        if kind == b"IEND":
            return
        pos += 12 + length


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says: its size and format (Pillow's name)."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes, max_bytes: int = 1 << 62, max_pixels: int = 1 << 62) -> ImageHeader:
    """Validate an encoded image's byte and pixel size from its header alone.

    Raises InvalidInput for empty or undecodable data or a format outside the contract, TooLarge over either limit.
    """
    if not data:
        raise InvalidInput("image is empty")
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    _check_png_chunks(data)
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            kind = header.format
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above ours
        raise TooLarge(f"image is over the limit of {max_pixels} pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput("image is not a PNG, JPEG, BMP, TIFF or WebP file that can be decoded") from exc
    if kind not in _FORMATS:
        raise InvalidInput(f"image is {kind}, not a PNG, JPEG, BMP, TIFF or WebP file")
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels")
    return ImageHeader(width, height, kind)


def decode_image(
    data: bytes, max_bytes: int = 1 << 62, max_pixels: int = 1 << 62, header: ImageHeader | None = None
) -> np.ndarray:
    """Decode an encoded image into RGB uint8 (H, W, 3), within the limits its header is checked against.

    header: what :func:`read_header` already said of ``data`` (under the caller's limits): not read again.
    """
    header = header or read_header(data, max_bytes, max_pixels)
    bgr = _imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInput("image could not be decoded")
    _check_decoded_size(bgr, header.width, header.height)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _imdecode(data: bytes, flags: int) -> np.ndarray | None:
    """cv2.imdecode, None for what OpenCV cannot decode: it raises, rather than returning None, for some inputs
    (a side over its limit of 2**20 pixels, though within our pixel limit)."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        return None


def _check_decoded_size(array: np.ndarray, width: int, height: int) -> None:
    """Raise InvalidInput unless the decoded array has the header's size (turned, for an EXIF orientation)."""
    h, w = array.shape[:2]
    if (w, h) not in ((width, height), (height, width)):
        raise InvalidInput(f"image header says {width}x{height} but its data decodes to {w}x{h}")


def read_image(path: str) -> np.ndarray:
    """Read an image file into RGB uint8 (H, W, 3)."""
    with open(path, "rb") as f:
        return decode_image(f.read())


def resize_image(image: np.ndarray, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Resize RGB uint8 (H, W, 3) to (size, size, 3): area averaging when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Resize a class mask (H, W) uint8 to (size, size) with nearest-neighbour, so no new ids appear.

    INTER_NEAREST_EXACT samples pixel centres, so the mask stays aligned with the resized image.
    """
    if mask.shape[:2] == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


def normalize(images: np.ndarray) -> np.ndarray:
    """Scale RGB uint8 images (..., H, W, 3) to the model's float32 input: BGR order, ImageNet means removed."""
    return images[..., ::-1].astype(np.float32) - _BGR_MEAN


def upsample_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Class ids (h, w) uint8 at the model's size -> (height, width) uint8 at the input's own size.

    Nearest neighbour on pixel centres: one uint8 plane at full size, however large the photo (resizing
    float probabilities instead would cost 12 bytes a pixel).
    """
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def colors_to_mask(rgb: np.ndarray) -> np.ndarray:
    """RGB mask in the dataset colours (H, W, 3) uint8 -> class mask (H, W) uint8.

    Pure black is background; other colours go to the nearest class colour. Raises InvalidInput when more
    than 1% of the pixels are far from every class colour (the file is not a mask in these colours).
    """
    refs = np.concatenate([PALETTE, np.zeros((1, 3), np.uint8)]).astype(np.int32)  # classes, then black
    ids = np.append(np.arange(NUM_CLASSES), BACKGROUND).astype(np.uint8)
    flat = rgb.reshape(-1, 3).astype(np.int32)
    best = np.full(len(flat), np.iinfo(np.int32).max, dtype=np.int32)
    nearest = np.zeros(len(flat), dtype=np.uint8)
    for i, ref in enumerate(refs):  # one reference at a time keeps memory at O(pixels)
        d2 = ((flat - ref) ** 2).sum(axis=1, dtype=np.int32)
        closer = d2 < best
        best[closer] = d2[closer]
        nearest[closer] = i
    unknown = best > MAX_COLOR_DISTANCE**2
    if unknown.mean() > MAX_UNKNOWN_FRACTION:
        raise InvalidInput(
            f"ground truth has {unknown.mean():.1%} pixels far from every class colour "
            f"(red corrosion, blue asset, green or black background); at most {MAX_UNKNOWN_FRACTION:.0%} is allowed"
        )
    return ids[nearest].reshape(rgb.shape[:2])


def decode_mask(
    data: bytes, max_bytes: int = 1 << 62, max_pixels: int = 1 << 62, header: ImageHeader | None = None
) -> np.ndarray:
    """Decode a ground truth: an RGB mask in the dataset colours or a single-channel class-id PNG.

    Limits and header as in :func:`decode_image`. Returns a class mask (H, W) uint8. Raises InvalidInput for
    anything that is not such a mask.
    """
    header = header or read_header(data, max_bytes, max_pixels)
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InvalidInput("ground truth could not be decoded")
    _check_decoded_size(raw, header.width, header.height)
    if raw.dtype not in (np.uint8, np.uint16):  # a TIFF may hold signed or float samples: -1 would wrap to id 255
        raise InvalidInput(f"ground truth has {raw.dtype} samples; a mask holds unsigned 8- or 16-bit values")
    if raw.ndim == 2 or raw.shape[2] == 1:
        ids = raw.reshape(raw.shape[:2])
        if ids.max() >= NUM_CLASSES:
            raise InvalidInput(
                f"single-channel ground truth has value {int(ids.max())}; class ids must be 0..{NUM_CLASSES - 1}"
            )
        return ids.astype(np.uint8)
    if raw.dtype != np.uint8:
        raw = (raw / 257).astype(np.uint8)
    rgb = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB)
    return colors_to_mask(rgb)


def read_mask(path: str) -> np.ndarray:
    """Read a ground-truth file into a class mask (H, W) uint8."""
    with open(path, "rb") as f:
        return decode_mask(f.read())


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class mask (H, W) uint8 -> RGB (H, W, 3) uint8 in the dataset colours."""
    return PALETTE[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the colour mask over an RGB image of the same size; returns RGB uint8 (H, W, 3)."""
    return cv2.addWeighted(image, 1.0 - alpha, colorize(mask), alpha, 0.0)


def encode_png(array: np.ndarray) -> bytes:
    """Encode a (H, W) uint8 or RGB (H, W, 3) uint8 array as PNG (zlib level 1: masks compress well at once;
    Pillow's encoder is two to three times OpenCV's speed on them, whose adaptive filtering buys little here)."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else "RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


def encode_color_mask_png(mask: np.ndarray) -> bytes:
    """Encode a class mask (H, W) uint8 as a PNG in the dataset colours: an indexed PNG whose palette is the class
    table's, which every reader shows in those colours (and decodes to :func:`colorize`'s RGB), at a third of the
    bytes to compress of an RGB one."""
    image = Image.fromarray(np.ascontiguousarray(mask), "P")
    image.putpalette(PALETTE.ravel().tolist())
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """Encode an RGB (H, W, 3) uint8 array as JPEG."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
