"""A small seed corpus for the decode fuzz target: valid images and masks in every format the server reads.

``python -m fuzz.seeds DIR`` writes them into DIR (created if missing); the suite's short fuzz run and
``make fuzz`` both start from it. Seeds are made here, from code, so the corpus needs no binary files in git.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segserve import imaging
from segserve.classes import NUM_CLASSES


def _pil(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _cv2(ext: str, bgr: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, params or [])
    if not ok:
        raise RuntimeError(f"could not encode {ext}")
    return buf.tobytes()


def _tiff_taller_than_opencv_reads(photo: np.ndarray) -> bytes:
    """A TIFF whose header claims 2**21 + 12 rows: within the pixel limit, over OpenCV's 2**20 a side."""
    data = bytearray(_pil(Image.fromarray(photo), "TIFF"))
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry : entry + 2], "little") == 257:  # ImageLength, made a LONG
            data[entry + 2 : entry + 4] = (4).to_bytes(2, "little")
            data[entry + 8 : entry + 12] = ((1 << 21) + 12).to_bytes(4, "little")
    return bytes(data)


def seeds() -> dict[str, bytes]:
    """name -> encoded bytes: photos and ground truths (colour and id masks) in the formats of the contract (PNG,
    JPEG, BMP, TIFF, WebP), formats outside it (GIF, JPEG 2000, PGM: refused) and inputs the fuzzer found."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    mask = rng.integers(0, NUM_CLASSES, size=(12, 16), dtype=np.uint8)
    colour = imaging.colorize(mask)
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    Image.fromarray(photo).save(rotated, format="JPEG", exif=exif)
    bomb = bytearray(imaging.encode_png(mask))  # its IDAT declares 4 GB (found by this fuzzer): refused, not read
    bomb[33:37] = (0xFB000062).to_bytes(4, "big")
    return {
        "photo.png": imaging.encode_png(photo),
        "mask_ids_idat_length_bomb.png": bytes(bomb),
        "photo.jpg": imaging.encode_jpeg(photo),
        "photo_exif_rotated.jpg": rotated.getvalue(),
        "photo_progressive.jpg": _pil(Image.fromarray(photo), "JPEG", progressive=True),
        "photo.bmp": _cv2(".bmp", bgr),
        "photo.tiff": _cv2(".tiff", bgr),
        "photo.webp": _cv2(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 80]),
        "photo.gif": _pil(Image.fromarray(photo).convert("P"), "GIF"),
        "photo_gray.png": imaging.encode_png(photo[..., 0]),
        "photo_rgba.png": _pil(Image.fromarray(photo).convert("RGBA"), "PNG"),
        "photo_16bit.png": _cv2(".png", bgr.astype(np.uint16) * 257),
        "mask_colour.png": imaging.encode_png(colour),
        "mask_colour.bmp": _cv2(".bmp", cv2.cvtColor(colour, cv2.COLOR_RGB2BGR)),
        "mask_colour_lossless.webp": _cv2(
            ".webp", cv2.cvtColor(colour, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101]
        ),
        "mask_ids.png": imaging.encode_png(mask),
        "mask_palette.png": _pil(Image.fromarray(mask).convert("P"), "PNG"),
        "mask_ids_16bit.png": _cv2(".png", mask.astype(np.uint16)),
        "mask_ids_int16.tiff": _cv2(".tiff", mask.astype(np.int16) - 1),  # signed samples: refused
        "mask_ids_float.tiff": _cv2(".tiff", mask.astype(np.float32)),  # float samples: refused
        "photo_gray_alpha.png": _pil(Image.fromarray(photo).convert("LA"), "PNG"),
        "photo_cmyk.tiff": _pil(Image.fromarray(photo).convert("CMYK"), "TIFF"),
        "photo.jp2": _pil(Image.fromarray(photo), "JPEG2000"),
        # Found by this fuzzer: OpenCV raised cv2.error for a side over 2**20 (now InvalidInput).
        "photo_taller_than_opencv_reads.tiff": _tiff_taller_than_opencv_reads(photo),
        # Found by this fuzzer: Pillow reads this PGM header as 4x44, OpenCV as 4x4 (refused: not in the contract).
        "pgm_read_two_ways.pgm": bytes.fromhex(
            "50350d230d340d0d2350230d34230d340d0d2350230d340d0d23dbdbdbdb0d3430380d0d0d23dbdbdbdb0d3430380d000109ba00"
        ),
    }


def write_seeds(directory: str | Path) -> list[Path]:
    """Write the seeds into directory; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in seeds().items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fuzz.seeds DIR")
    print(f"{len(write_seeds(sys.argv[1]))} seeds in {sys.argv[1]}")
