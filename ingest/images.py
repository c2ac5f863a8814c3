"""Image validation: decode untrusted bytes under a pixel limit and describe them (hashes, size)."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass

import imagehash
from PIL import Image, UnidentifiedImageError

from ingest.errors import ImageRejected
from store.imageformats import (
    EXTENSIONS,
    PILLOW_FORMATS,
    describe_prefix,
    refusal,
    sniff_format,
)

__all__ = [
    "ImageInfo",
    "describe_decoded",
    "describe_prefix",
    "inspect_image",
    "sniff_image_prefix",
]

log = logging.getLogger(__name__)

# phash resizes to 32x32; reducing to at least this many pixels a side first is indistinguishable
# for the hash and avoids converting a full-size photo.
_PHASH_MIN_SIDE = 128


@dataclass(frozen=True)
class ImageInfo:
    """What ``inspect_image`` learnt about one image's bytes.

    ``width``/``height`` are the full image size (of the first frame); ``phash`` is
    ``imagehash.phash`` of the first frame as 16 hex characters, computed from a reduced copy
    (always the same way, so phashes from this function are comparable with each other; see
    :func:`describe_decoded` for the one exception).
    """

    sha256: str
    phash: str
    width: int
    height: int
    format: str  # Pillow's name: JPEG, PNG, GIF, WEBP, BMP, TIFF, ICO, MPO, AVIF
    ext: str  # from the decoded format, never from a URL or file name
    bytes: int


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Decode ``data`` as an image and describe it, refusing anything unsafe or unusable.

    Only the formats of :mod:`store.imageformats` are decoded: bytes that do not start like one
    are refused before Pillow sees them, and Pillow is offered no other plugin. The pixel count in the header is checked against ``max_pixels`` before any pixel is
    decoded, so a decompression bomb costs nothing. Then the first frame is fully decoded, which
    proves the bytes are a whole image. CPU-bound: call it from a thread in async code.

    Raises:
        ImageRejected: reason ``empty``, ``not_image`` (with :func:`store.imageformats.refusal`:
            what the bytes look like, e.g. "unsupported format: TGA"), ``decompression_bomb``
            (with the claimed size), ``truncated`` or ``corrupt``.
    """
    _check_sniffed(data)
    try:
        img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected("not_image", refusal(data)) from None
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (twice Image.MAX_IMAGE_PIXELS) fired while reading the header.
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except Exception as exc:  # hostile headers raise a zoo of exception types
        raise ImageRejected("corrupt", f"unreadable header: {_short(exc)}") from None

    with img:
        fmt = img.format or ""
        width, height = img.size
        _check_size(fmt, width, height, max_pixels)
        try:
            phash = _decode_and_phash(img)
        except Image.DecompressionBombError as exc:
            raise ImageRejected("decompression_bomb", str(exc)) from None
        except Exception as exc:  # any decoder failure means unusable bytes
            message = str(exc)
            reason = "truncated" if "truncat" in message.lower() else "corrupt"
            if isinstance(exc, EOFError):
                reason = "truncated"
            raise ImageRejected(reason, f"{fmt} {width}x{height}: {_short(exc)}") from None
    return _info(data, phash, fmt, width, height)


def describe_decoded(
    data: bytes, frame: Image.Image, size: tuple[int, int], *, max_pixels: int
) -> ImageInfo:
    """What :func:`inspect_image` says of ``data``, from a decode another reader already did.

    For a reader that must decode the bytes anyway (the live bot's model input, through
    ``classifier.imaging``'s ``on_decoded``): ``frame`` is the whole first frame as that
    decoder gave it, ``size`` the size the header declares. That decoder refused what
    ``inspect_image`` refuses before decoding (formats outside :mod:`store.imageformats`, bad
    headers) and decoded the whole frame, which proves the bytes whole; this repeats the cheap
    checks and takes the hashes. The phash is taken from ``frame``: where that decoder used
    another JPEG DCT scale than ``inspect_image`` (the model's decode keeps more pixels), the
    phash can differ by a bit or two (measured on 62 JPEGs: 60 equal, 2 two bits apart), far
    inside ``[train] phash_distance``; for every other format it is the same.

    Raises:
        ImageRejected: ``not_image`` or ``decompression_bomb``, as ``inspect_image``.
    """
    _check_sniffed(data)
    fmt = frame.format or ""
    if fmt not in EXTENSIONS:
        raise ImageRejected("not_image", refusal(data))
    width, height = size
    _check_size(fmt, width, height, max_pixels)
    try:
        phash = _phash(frame)
    except Exception as exc:  # a frame its decoder took but Pillow cannot convert
        raise ImageRejected("corrupt", f"{fmt} {width}x{height}: {_short(exc)}") from None
    return _info(data, phash, fmt, width, height)


def _check_sniffed(data: bytes) -> None:
    """Refuse empty bytes and bytes that do not start like an allowed format."""
    if not data:
        raise ImageRejected("empty", "zero bytes")
    if sniff_format(data) is None:
        raise ImageRejected("not_image", refusal(data))


def _check_size(fmt: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse a declared size that is empty or over the pixel limit (before any decoding)."""
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"{fmt} claims {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{fmt} claims {width}x{height} = {width * height} pixels (limit {max_pixels})",
        )


def _info(data: bytes, phash: str, fmt: str, width: int, height: int) -> ImageInfo:
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=phash,
        width=width,
        height=height,
        format=fmt,
        ext=EXTENSIONS[fmt],
        bytes=len(data),
    )


def _decode_and_phash(img: Image.Image) -> str:
    """Decode the first frame (proving the bytes are whole) and phash a reduced copy of it."""
    if img.format in ("JPEG", "MPO"):
        # DCT scaling: the decoder still walks every byte of the scan (so truncation is caught)
        # but builds an image up to 8x smaller per side.
        img.draft("RGB", (_PHASH_MIN_SIDE, _PHASH_MIN_SIDE))
    img.load()
    return _phash(img)


def _phash(frame: Image.Image) -> str:
    """phash of a decoded first frame, from a copy reduced to at least _PHASH_MIN_SIDE a side."""
    if frame.mode not in ("L", "RGB"):
        # phash works on luminance anyway; this also covers P, RGBA, CMYK, 1, I;16, F...
        frame = frame.convert("L")
    factor = min(frame.size) // _PHASH_MIN_SIDE
    if factor > 1:
        frame = frame.reduce(factor)
    return str(imagehash.phash(frame))


def sniff_image_prefix(first_bytes: bytes) -> bool:
    """Whether ``first_bytes`` (the first 16 to 64 bytes of a body) start like a readable image.

    True for exactly the formats ``inspect_image`` accepts (:mod:`store.imageformats`).
    """
    return sniff_format(first_bytes) is not None


def _short(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."
