"""Any image file or bytes to one RGB PIL image (or straight to a centre crop), fast and safely."""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier.errors import ImageLoadError
from store.imageformats import (
    EXPECTED,
    PILLOW_FORMATS,
    SNIFF_BYTES,
    FileRefused,
    open_image_file,
    refusal,
    sniff_format,
)
from store.warning_context import warnings_about

log = logging.getLogger(__name__)

# What Pillow raises on damaged data: truncated streams (OSError), broken headers
# (SyntaxError, struct.error), bad chunk values (ValueError), short reads (EOFError).
# on_decoded(frame, declared size): see load_rgb.
OnDecoded = Callable[[Image.Image, tuple[int, int]], None]

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)
# Modes Image.reduce() handles directly; reducing before conversion saves converting big images.
_REDUCIBLE = {"L", "RGB", "CMYK"}
# Modes converted to 8 bits by the image's own peak value: a partial decode could see another peak.
_WIDE_GREY = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_WHITE = (255, 255, 255)
_ORIENTATION = 0x0112
# Rows a resampling filter reaches past its centre, per unit of scale (Pillow's lanczos is widest).
_FILTER_REACH = 3.0

# No image under a max_pixels limit needs more than 8 bytes a pixel (16-bit RGBA, stored
# uncompressed), plus room for metadata: a larger file is refused before it is read.
_BYTES_PER_PIXEL = 8
_METADATA_BYTES = 16 << 20


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file (or bytes) decoded under a ``max_pixels`` limit."""
    return max_pixels * _BYTES_PER_PIXEL + _METADATA_BYTES


@dataclass(frozen=True)
class CenterCrop:
    """Resize the short side to ``resize_to``, then take the centred ``crop`` x ``crop`` square.

    The geometry of torchvision's ``Resize(resize_to)`` + ``CenterCrop(crop)`` on PIL images.
    """

    resize_to: int
    crop: int
    resample: Image.Resampling = Image.Resampling.BICUBIC


def load_rgb(
    source: Path | str | bytes,
    *,
    max_pixels: int,
    min_side: int | None = None,
    on_decoded: OnDecoded | None = None,
) -> Image.Image:
    """Decode an image file or bytes into an RGB image.

    Transparency is composited on white, EXIF orientation applied, 16-bit and 1-bit images
    scaled to 8-bit, and only the first frame of an animation is used. Only the formats of
    :mod:`store.imageformats` are decoded, and a path must be a regular file (a FIFO or a
    device is refused before it is read) no larger than :func:`max_file_bytes`.

    Args:
        source: a file path or the encoded bytes.
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding, so a decompression bomb costs nothing).
        min_side: when given, the image may be decoded at reduced scale (JPEG DCT scaling, else
            ``Image.reduce``) as long as both sides stay at least this long.
        on_decoded: called as ``on_decoded(frame, size)`` once the whole first frame is
            decoded, before anything else is done to it: ``frame`` as the decoder gave it (at
            reduced scale where JPEG DCT scaling applied; its mode and ``format`` untouched),
            ``size`` the size its header declares. Lets a caller that needs other facts of
            the same pixels (a perceptual hash) skip a second decode. It must not change
            ``frame`` and must not raise.

    Raises:
        ImageLoadError: not a regular file, empty, not an allowed format, truncated or damaged,
            or too large.
    """
    return _load(source, max_pixels=max_pixels, min_side=min_side, crop=None, on_decoded=on_decoded)


def load_center_crop(
    source: Path | str | bytes,
    *,
    max_pixels: int,
    crop: CenterCrop,
    on_decoded: OnDecoded | None = None,
) -> Image.Image:
    """Decode an image straight to the RGB centre crop a Resize + CenterCrop transform takes.

    Like ``CenterCrop(crop.crop)(Resize(crop.resize_to)(load_rgb(source,
    min_side=crop.resize_to)))``, but only the crop is resampled, and a tall PNG (a phone
    screenshot) is decoded only down to the last row the crop reads: a 1080x8000 one in a bit
    over half the time. The decoded pixels are exactly those of a full decode; the crop may
    differ from a whole-image resize by a few levels where Pillow rounds between its two
    resampling passes or orders them differently. ``crop.crop`` must not exceed
    ``crop.resize_to``. ``on_decoded`` is as for :func:`load_rgb`, and is not called when only
    the top rows were decoded.

    Raises:
        ImageLoadError: as :func:`load_rgb`.
    """
    if crop.crop > crop.resize_to:
        raise ValueError(f"a {crop.crop} px crop does not fit a {crop.resize_to} px short side")
    return _load(
        source, max_pixels=max_pixels, min_side=crop.resize_to, crop=crop, on_decoded=on_decoded
    )


def _load(
    source: Path | str | bytes,
    *,
    max_pixels: int,
    min_side: int | None,
    crop: CenterCrop | None,
    on_decoded: OnDecoded | None = None,
) -> Image.Image:
    max_bytes = max_file_bytes(max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageLoadError(None, f"empty input; {EXPECTED}")
        if len(data) > max_bytes:
            raise ImageLoadError(
                None, f"{len(data):,} bytes, over the {max_bytes:,}-byte limit for an image"
            )
        return _decode(
            io.BytesIO(data),
            None,
            max_pixels=max_pixels,
            min_side=min_side,
            crop=crop,
            on_decoded=on_decoded,
        )
    path = Path(source)
    try:
        fp = open_image_file(path, max_bytes=max_bytes)
    except FileRefused as exc:
        raise ImageLoadError(path, exc.reason) from None
    # Pillow's warnings (corrupt EXIF...) do not say which file they are about: this does.
    with fp, warnings_about(path):
        return _decode(
            fp,
            path,
            max_pixels=max_pixels,
            min_side=min_side,
            crop=crop,
            on_decoded=on_decoded,
        )


def _decode(
    fp: BinaryIO,
    path: Path | None,
    *,
    max_pixels: int,
    min_side: int | None,
    crop: CenterCrop | None,
    on_decoded: OnDecoded | None = None,
) -> Image.Image:
    try:
        head = fp.read(SNIFF_BYTES)
        fp.seek(0)
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read file ({exc.strerror or exc})") from None
    # Pillow is only ever offered the allowed formats, and only bytes that start like one.
    if sniff_format(head) is None:
        raise ImageLoadError(path, refusal(head))
    try:
        img = Image.open(fp, formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(path, refusal(head)) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, _bomb_reason(exc, max_pixels)) from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(path, f"unreadable image header ({exc}); {EXPECTED}") from None

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
        rows = _rows_for_crop(img, fp, crop) if crop else None
        if rows is not None and not _load_top_rows(img, rows):
            fp.seek(0)
            img, rows = Image.open(fp, formats=PILLOW_FORMATS), None
        if rows is None:
            img.load()
            rows = img.height
            if on_decoded is not None:
                on_decoded(img, (width, height))
        size = img.size  # the whole picture's, even where only its top rows were decoded
        img = _apply_orientation(img)
        if img.size != size:
            size, rows = img.size, img.height
        first = _reduction(size, min_side) if min_side and img.mode in _REDUCIBLE else 1
        img, size = _shrink(img, size, rows, first)
        img = _to_rgb(img)
        img, size = _shrink(img, size, img.height, _reduction(size, min_side))
        if crop:
            img = _resize_crop(img, size, crop)
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
    # A broken EXIF block should not cost us an otherwise good image. In place: without an
    # orientation tag exif_transpose would otherwise copy the whole image.
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _DECODE_ERRORS + (KeyError, AttributeError) as exc:
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
    return img


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The ``Image.reduce`` factor that keeps both sides >= min_side (1: none)."""
    factor = min(size) // min_side if min_side else 1
    return min(factor, 16) if factor >= 2 else 1


def _shrink(
    img: Image.Image, size: tuple[int, int], rows: int, factor: int
) -> tuple[Image.Image, tuple[int, int]]:
    """Reduce the image's top ``rows`` rows by ``factor``; ``size`` is the whole picture's.

    ``rows`` is the whole height or a multiple of every factor applied to it, so each reduced
    block is the one a full-height reduce would average.
    """
    if factor > 1:
        img = img.reduce(factor, box=(0, 0, img.width, min(rows, img.height)))
        size = (-(-size[0] // factor), -(-size[1] // factor))
    elif rows < img.height:
        img = img.crop((0, 0, img.width, rows))
    return img, size


def _crop_box(size: tuple[int, int], crop: CenterCrop) -> tuple[float, float, float, float]:
    """Where the centre crop lies in an image of this size, as torchvision computes it."""
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(crop.resize_to * long / short)
    new_w, new_h = (crop.resize_to, new_long) if width <= height else (new_long, crop.resize_to)
    left = int(round((new_w - crop.crop) / 2.0))
    top = int(round((new_h - crop.crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop.crop) * sx, (top + crop.crop) * sy)


def _resize_crop(img: Image.Image, size: tuple[int, int], crop: CenterCrop) -> Image.Image:
    # Resampling just the crop's box gives the pixels a full resize followed by a crop would:
    # Pillow places each output pixel's filter by the box and clips it against the source, and
    # the source holds every row those filters reach (see _rows_for_crop).
    return img.resize((crop.crop, crop.crop), crop.resample, box=_crop_box(size, crop))


def _rows_for_crop(img: Image.Image, fp: BinaryIO, crop: CenterCrop) -> int | None:
    """How many top rows of a tall PNG the centre crop reads; None: decode it all.

    Only plain PNGs qualify: rows stored top-down (not interlaced), one frame, no rotation, and
    a mode converted to RGB row by row.
    """
    width, height = img.size
    if (
        img.format != "PNG"
        or height <= width
        or img.mode in _WIDE_GREY
        or img.info.get("interlace")
        or getattr(img, "n_frames", 1) != 1
        or ("exif" in img.info and _orientation(img) != 1)
        or not _png_ends_cleanly(fp)
    ):
        return None
    first = _reduction(img.size, crop.resize_to) if img.mode in _REDUCIBLE else 1
    mid = (-(-width // first), -(-height // first))
    second = _reduction(mid, crop.resize_to)
    factor = first * second
    final = (-(-mid[0] // second), -(-mid[1] // second))
    _, top, _, bottom = _crop_box(final, crop)
    scale = (bottom - top) / crop.crop
    needed = math.ceil(bottom + _FILTER_REACH * max(scale, 1.0)) + 2
    rows = needed * factor
    return rows if rows < height else None


def _orientation(img: Image.Image) -> int | None:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except _DECODE_ERRORS + (KeyError, AttributeError):
        return None  # unreadable: the full decode path decides what to make of it


def _png_ends_cleanly(fp: BinaryIO) -> bool:
    """True when the PNG's chunks run whole to IEND with no EXIF block after the pixels.

    A trailing eXIf could rotate the image, and a truncated file should fail the way a full
    decode fails; both go the full-decode way.
    """
    start = fp.tell()
    try:
        fp.seek(8)
        seen_pixels = False
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return True
            if kind == b"IDAT":
                seen_pixels = True
            elif kind == b"eXIf" and seen_pixels:
                return False
            fp.seek(length + 4, os.SEEK_CUR)  # data and CRC
    except (OSError, ValueError, struct.error):
        return False
    finally:
        fp.seek(start)


def _load_top_rows(img: Image.Image, rows: int) -> bool:
    """Decode only the top ``rows`` rows of a PNG; False if that failed and it must be reopened.

    Pillow inflates PNG data top-down and stops once its tile is full, so a shorter tile skips
    the rest of the file. The tile list is a Pillow internal: anything unexpected about it, or
    any error while decoding this way, means a fresh full decode (which reports real damage).
    """
    try:
        (tile,) = img.tile
        if tile[0] != "zip" or tuple(tile[1]) != (0, 0, *img.size):
            img.load()
            return True
        img.tile = [tile._replace(extents=(0, 0, img.width, rows))]
        img.load()
    except Exception as exc:  # noqa: BLE001 - internals: any failure means a full decode
        log.debug("partial PNG decode failed, decoding it all: %s", exc)
        return False
    return True


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_GREY:
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
