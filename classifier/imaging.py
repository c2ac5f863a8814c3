"""Any image file or bytes to one RGB PIL image, fast and safely (bombs, truncation, odd modes)."""

from __future__ import annotations

import io
import logging
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier.errors import ImageLoadError

log = logging.getLogger(__name__)

_EXPECTED = "expected a JPEG, PNG, GIF, WebP, BMP or TIFF image"
# What Pillow raises on damaged data: truncated streams (OSError), broken headers
# (SyntaxError, struct.error), bad chunk values (ValueError), short reads (EOFError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)
# Modes Image.reduce() handles directly; reducing before conversion saves converting big images.
_REDUCIBLE = {"L", "RGB", "CMYK"}
_WHITE = (255, 255, 255)

# Register all format plugins once, at import, in one thread; Image.open would otherwise do it
# lazily on first use, possibly from several decode threads at once.
Image.init()


def load_rgb(
    source: Path | str | bytes, *, max_pixels: int, min_side: int | None = None
) -> Image.Image:
    """Decode an image file or bytes into an RGB image.

    Transparency is composited on white, EXIF orientation applied, 16-bit and 1-bit images
    scaled to 8-bit, and only the first frame of an animation is used.

    Args:
        source: a file path or the encoded bytes.
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding, so a decompression bomb costs nothing).
        min_side: when given, the image may be decoded at reduced scale (JPEG DCT scaling, else
            ``Image.reduce``) as long as both sides stay at least this long.

    Raises:
        ImageLoadError: empty, not an image, truncated or damaged, or too large.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageLoadError(None, f"empty input; {_EXPECTED}")
        return _decode(io.BytesIO(data), None, max_pixels=max_pixels, min_side=min_side)
    path = Path(source)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ImageLoadError(path, f"cannot open file ({exc.strerror or exc})") from None
    with fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise ImageLoadError(path, f"empty file (0 bytes); {_EXPECTED}")
        return _decode(fp, path, max_pixels=max_pixels, min_side=min_side)


def _decode(
    fp: BinaryIO, path: Path | None, *, max_pixels: int, min_side: int | None
) -> Image.Image:
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise ImageLoadError(path, f"not an image; {_EXPECTED}") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, _bomb_reason(exc, max_pixels)) from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(path, f"unreadable image header ({exc}); {_EXPECTED}") from None

    width, height = img.size
    fmt = img.format or "image"
    if width < 1 or height < 1:
        raise ImageLoadError(path, f"{fmt} declares an empty {width}x{height} size")
    if width * height > max_pixels:
        raise ImageLoadError(
            path,
            f"{fmt} is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit; refusing to decode (decompression bomb?)",
        )
    try:
        if min_side and fmt == "JPEG":
            # DCT-domain downscaling (1/2, 1/4, 1/8) keeps both sides >= min_side: a 12 MP
            # photo decodes in a fraction of the time and memory.
            img.draft("RGB", (min_side, min_side))
        img.load()
        img = _apply_orientation(img)
        if min_side and img.mode in _REDUCIBLE:
            img = _reduce(img, min_side)
        img = _to_rgb(img)
        if min_side:
            img = _reduce(img, min_side)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, _bomb_reason(exc, max_pixels)) from None
    except MemoryError:
        reason = f"{fmt} {width}x{height} needs more memory than available"
        raise ImageLoadError(path, reason) from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(path, f"damaged or truncated {fmt} data ({exc})") from None
    return img


def _bomb_reason(exc: Exception, max_pixels: int) -> str:
    # Pillow refuses far-too-large headers inside Image.open, before we see the size; its
    # message carries the pixel count.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{int(match.group(1)) / 1e6:.0f} MP" if match else "more pixels than allowed"
    return (
        f"image header claims {claimed}, over the {max_pixels / 1e6:.0f} MP limit; "
        "refusing to decode (decompression bomb?)"
    )


def _apply_orientation(img: Image.Image) -> Image.Image:
    # A broken EXIF block should not cost us an otherwise good image.
    try:
        rotated = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS + (KeyError, AttributeError) as exc:
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img
    return rotated if rotated is not None else img


def _reduce(img: Image.Image, min_side: int) -> Image.Image:
    factor = min(img.size) // min_side
    if factor < 2:
        return img
    return img.reduce(min(factor, 16))


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _to_8bit_grey(img)
        mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, _WHITE)
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode == "1":
        img = img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """16/32-bit or float grey to 8-bit L; Pillow's own convert() clips instead of scaling."""
    arr = np.asarray(img, dtype=np.float64)
    peak = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and peak <= 1.0:
        arr = arr * 255.0
    elif peak > 255.0:
        arr = arr / (257.0 if peak <= 65535.0 else peak / 255.0)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
