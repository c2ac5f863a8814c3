"""Image validation: decode untrusted bytes under a pixel limit and describe them (hashes, size)."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass

import imagehash
from PIL import Image, UnidentifiedImageError, features

from ingest.errors import ImageRejected

log = logging.getLogger(__name__)

# Pillow format name -> file extension. Only these plugins are ever asked to parse untrusted
# bytes: everything else Pillow can open (EPS runs Ghostscript, PSD, TGA, PCX...) is refused as
# not_image. MPO is how Pillow names the multi-picture JPEGs many phone cameras write.
_EXTENSIONS: dict[str, str] = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "ICO": "ico",
}
if features.check("avif"):
    _EXTENSIONS["AVIF"] = "avif"
Image.init()
# The openers to try; MPO has none of its own (the JPEG opener returns MPO images).
_FORMATS: tuple[str, ...] = tuple(f for f in _EXTENSIONS if f in Image.OPEN)

# phash resizes to 32x32; reducing to at least this many pixels a side first is indistinguishable
# for the hash and avoids converting a full-size photo.
_PHASH_MIN_SIDE = 128


@dataclass(frozen=True)
class ImageInfo:
    """What ``inspect_image`` learnt about one image's bytes.

    ``width``/``height`` are the full image size (of the first frame); ``phash`` is
    ``imagehash.phash`` of the first frame as 16 hex characters, computed from a reduced copy
    (always the same way, so phashes from this function are comparable with each other).
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

    The pixel count in the header is checked against ``max_pixels`` before any pixel is
    decoded, so a decompression bomb costs nothing. Then the first frame is fully decoded, which
    proves the bytes are a whole image. CPU-bound: call it from a thread in async code.

    Raises:
        ImageRejected: reason ``empty``, ``not_image`` (with what the bytes look like),
            ``decompression_bomb`` (with the claimed size), ``truncated`` or ``corrupt``.
    """
    if not data:
        raise ImageRejected("empty", "zero bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected("not_image", describe_prefix(data)) from None
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (twice Image.MAX_IMAGE_PIXELS) fired while reading the header.
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except Exception as exc:  # hostile headers raise a zoo of exception types
        raise ImageRejected("corrupt", f"unreadable header: {_short(exc)}") from None

    with img:
        fmt = img.format or ""
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageRejected("corrupt", f"{fmt} claims {width}x{height} pixels")
        if width * height > max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"{fmt} claims {width}x{height} = {width * height} pixels (limit {max_pixels})",
            )
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

    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=phash,
        width=width,
        height=height,
        format=fmt,
        ext=_EXTENSIONS[fmt],
        bytes=len(data),
    )


def _decode_and_phash(img: Image.Image) -> str:
    """Decode the first frame (proving the bytes are whole) and phash a reduced copy of it."""
    if img.format in ("JPEG", "MPO"):
        # DCT scaling: the decoder still walks every byte of the scan (so truncation is caught)
        # but builds an image up to 8x smaller per side.
        img.draft("RGB", (_PHASH_MIN_SIDE, _PHASH_MIN_SIDE))
    img.load()
    frame: Image.Image = img
    if frame.mode not in ("L", "RGB"):
        # phash works on luminance anyway; this also covers P, RGBA, CMYK, 1, I;16, F...
        frame = frame.convert("L")
    factor = min(frame.size) // _PHASH_MIN_SIDE
    if factor > 1:
        frame = frame.reduce(factor)
    return str(imagehash.phash(frame))


def sniff_image_prefix(first_bytes: bytes) -> bool:
    """Whether ``first_bytes`` (the first 16 to 64 bytes of a body) start like a readable image.

    Covers the formats ``inspect_image`` accepts: JPEG, PNG, GIF, WEBP, BMP, TIFF, ICO, and AVIF
    where this Pillow has it. HEIC is not readable here, so it is not an image.
    """
    head = first_bytes[:64]
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return True
    if head[:2] == b"BM" and len(head) >= 14:
        # The BITMAPFILEHEADER's reserved words are zero; a text body starting "BM" is not.
        return head[6:10] == b"\x00\x00\x00\x00"
    if head[:4] == b"\x00\x00\x01\x00" and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return True  # ICO: reserved 0, type 1, at least one image
    if "AVIF" in _EXTENSIONS and head[4:8] == b"ftyp":
        return _ftyp_brands(head) & {b"avif", b"avis"} != set()
    return False


def describe_prefix(data: bytes) -> str:
    """A short human guess at what non-image bytes are ("looks like HTML"), for error details."""
    head = data[:512]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or (
        text.startswith(b"<") and b"<html" in text
    ):
        return "looks like HTML"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "looks like SVG (not supported)"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "looks like XML/markup"
    if head.startswith(b"%PDF"):
        return "looks like PDF"
    if head.startswith(b"%!PS"):
        return "looks like PostScript/EPS (not supported)"
    if text.startswith((b"{", b"[")):
        return "looks like JSON"
    if head.startswith(b"PK\x03\x04"):
        return "looks like a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "looks like gzip data"
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & {b"heic", b"heix", b"mif1", b"msf1", b"hevc"}:
            return "looks like HEIC/HEIF (not supported here)"
        if brands & {b"avif", b"avis"}:
            return "looks like AVIF (not supported here)"
        return "looks like an MP4/QuickTime video"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "looks like WebM/Matroska video"
    if head.startswith(b"8BPS"):
        return "looks like a Photoshop PSD (not supported)"
    return f"unrecognised; first bytes {head[:16].hex(' ')}"


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF ``ftyp`` box at the start of ``head``."""
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if size >= 16 else len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def _short(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."
