"""atheris fuzz target for the image and ground-truth decode path, at the server's byte and pixel limits.

Every input must either decode into what the request path expects or raise ``segserve.errors.SegServeError``
(InvalidInput / TooLarge, which the transports answer as 400 / 413); any other exception, or a result of the
wrong shape, type, size or class ids, is a bug and stops the run with the input written out.

    python fuzz/fuzz_decode.py -runs=2000 CORPUS_DIR          # a short run (the suite's tests/test_fuzz.py)
    make fuzz                                                  # ten minutes from the seed corpus (fuzz/seeds.py)

Options after the script are libFuzzer's (``-help=1`` lists them). The limits are the server's own
(``SEGSERVE_MAX_IMAGE_BYTES``, ``SEGSERVE_MAX_IMAGE_PIXELS``, read as the server reads them).
"""

from __future__ import annotations

import os
import sys

import atheris

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # OpenCV logs every undecodable input; the verdict is ours

with atheris.instrument_imports(include=["segserve", "PIL"]):
    import numpy as np
    from PIL import Image

    Image.init()  # import every Pillow format plugin here, so that their code is instrumented too

    from segserve import imaging
    from segserve.classes import NUM_CLASSES
    from segserve.errors import SegServeError
    from segserve.settings import Settings

SETTINGS = Settings.from_env()
MAX_BYTES = SETTINGS.max_image_bytes
MAX_PIXELS = SETTINGS.max_image_pixels


def check_image(data: bytes) -> None:
    """decode_image either raises SegServeError or gives RGB uint8 (H, W, 3) of the size the header promised."""
    try:
        header = imaging.read_header(data, MAX_BYTES, MAX_PIXELS)
        width, height = header.width, header.height
    except SegServeError:
        width = height = None
    try:
        image = imaging.decode_image(data, MAX_BYTES, MAX_PIXELS)
    except SegServeError:
        return
    assert width is not None, "decode_image accepted what read_header refused"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (image.dtype, image.shape)
    h, w = image.shape[:2]
    assert 0 < h * w <= MAX_PIXELS, f"decoded {w}x{h} over the pixel limit {MAX_PIXELS}"
    # The header's size, possibly turned by an EXIF orientation, which the decoder applies.
    assert (w, h) in ((width, height), (height, width)), f"header says {width}x{height}, decoded {w}x{h}"


def check_mask(data: bytes) -> None:
    """decode_mask either raises SegServeError or gives class ids uint8 (H, W), each inside the class table."""
    try:
        mask = imaging.decode_mask(data, MAX_BYTES, MAX_PIXELS)
    except SegServeError:
        return
    assert mask.dtype == np.uint8 and mask.ndim == 2, (mask.dtype, mask.shape)
    assert 0 < mask.size <= MAX_PIXELS, f"decoded mask {mask.shape} over the pixel limit {MAX_PIXELS}"
    assert int(mask.max()) < NUM_CLASSES, f"mask holds class id {int(mask.max())}"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris's name)
    check_image(data)
    check_mask(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
