"""The image formats memetag ever decodes, how to recognise them, and how to open an image file.

One allow-list for every decoder: ingest (what the store keeps), training, ``predict``,
``explain`` and the bot (members' attachments). Anything else Pillow could open is refused from
its first bytes, before any format plugin sees it: EPS would run Ghostscript, and TGA, PCX,
PPM, SGI, DDS, ICNS, XBM and friends are parsers nobody here needs to expose.

It lives in ``store`` because both ``ingest`` and ``classifier`` may import ``store`` while
``store`` imports neither, and because the store's files are named by these formats'
extensions (``images/ab/<sha256>.<ext>``). It needs Pillow only to learn whether this build
reads AVIF and which of its openers to allow; it decodes nothing itself.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from PIL import Image, features

# Pillow format name -> file extension. MPO is how Pillow names the multi-picture JPEGs many
# phone cameras write; its images come out of the JPEG opener.
EXTENSIONS: dict[str, str] = {
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
    EXTENSIONS["AVIF"] = "avif"

# Register every plugin once, here, in one thread (Image.open would otherwise do it lazily,
# possibly from several decode threads at once); then keep only the allowed openers.
Image.init()
# Pass as ``Image.open(fp, formats=PILLOW_FORMATS)``: Pillow then tries no other plugin.
PILLOW_FORMATS: tuple[str, ...] = tuple(f for f in EXTENSIONS if f in Image.OPEN)

_NAMES = ["JPEG", "PNG", "GIF", "WebP", "BMP", "TIFF", "ICO"] + (
    ["AVIF"] if "AVIF" in EXTENSIONS else []
)
# "JPEG, PNG, GIF, WebP, BMP, TIFF, ICO or AVIF": what error messages say is expected.
DESCRIPTION = ", ".join(_NAMES[:-1]) + " or " + _NAMES[-1]
EXPECTED = f"expected a {DESCRIPTION} image"

# How many leading bytes the sniffers look at (ftyp brand lists need more than 16).
SNIFF_BYTES = 64


class FileRefused(Exception):
    """A path that must not be opened as an image; ``reason`` is one line for the user."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sniff_format(head: bytes) -> str | None:
    """The allowed Pillow format that ``head`` (a file's first bytes) starts like, else None.

    Only a prefilter: the bytes may still turn out damaged. MPO files sniff as JPEG.
    """
    head = head[:SNIFF_BYTES]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        # The BITMAPFILEHEADER's reserved words are zero; a text body starting "BM" is not.
        return "BMP"
    if head[:4] == b"\x00\x00\x01\x00" and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "ICO"  # reserved 0, type 1, at least one image
    if "AVIF" in EXTENSIONS and head[4:8] == b"ftyp" and _ftyp_brands(head) & {b"avif", b"avis"}:
        return "AVIF"
    return None


def refused_image_format(head: bytes) -> str | None:
    """The name of a known image format memetag does not read that ``head`` starts like.

    Recognised from signatures only, so that a refusal can say what the file is; no Pillow
    plugin is asked (TGA has no signature: its header fields are checked instead).
    """
    head = head[:SNIFF_BYTES]
    if head.startswith(b"%!PS") or head[:4] == b"\xc5\xd0\xd3\xc6":
        return "EPS/PostScript"
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"F", b"f"):
        if head[2:3] in (b" ", b"\t", b"\n", b"\r"):
            return "PPM/PGM/PBM (Netpbm)"
    if len(head) >= 4 and head[0] == 0x0A and head[1] in (0, 2, 3, 4, 5) and head[2] in (0, 1):
        if head[3] in (1, 2, 4, 8):
            return "PCX"
    if head[:2] == b"\x01\xda":
        return "SGI"
    if head[:4] == b"DDS ":
        return "DDS"
    if head[:4] == b"icns":
        return "ICNS"
    if head[:4] == b"8BPS":
        return "Photoshop PSD"
    if head[:4] == b"qoif":
        return "QOI"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#define") and b"_width" in text:
        return "XBM"
    if text.startswith(b"/* XPM */"):
        return "XPM"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & {b"heic", b"heix", b"mif1", b"msf1", b"hevc"} and not (
            brands & {b"avif", b"avis"}
        ):
            return "HEIC/HEIF"
        if brands & {b"avif", b"avis"} and "AVIF" not in EXTENSIONS:
            return "AVIF (this Pillow has no AVIF support)"
    if _looks_like_tga(head):
        return "TGA"
    return None


def describe_prefix(data: bytes) -> str:
    """A short guess at what bytes that are not an allowed image are, for error details."""
    head = data[:512]
    refused = refused_image_format(head)
    if refused:
        return f"unsupported format: {refused}"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or (
        text.startswith(b"<") and b"<html" in text
    ):
        return "looks like HTML"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "looks like XML/markup"
    if head.startswith(b"%PDF"):
        return "looks like PDF"
    if text.startswith((b"{", b"[")):
        return "looks like JSON"
    if head.startswith(b"PK\x03\x04"):
        return "looks like a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "looks like gzip data"
    if head[4:8] == b"ftyp":
        return "looks like an MP4/QuickTime video"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "looks like WebM/Matroska video"
    if _looks_like_text(head):
        return "looks like text"
    return f"unrecognised; first bytes {head[:16].hex(' ')}"


def refusal(head: bytes) -> str:
    """The one-line reason every decoder gives for bytes :func:`sniff_format` does not accept.

    ``"unsupported format: TGA; expected a JPEG, PNG, … image"`` for an image format memetag
    does not read, ``"not an image (looks like HTML); expected …"`` for anything else.
    """
    described = describe_prefix(head)
    if described.startswith("unsupported format"):
        return f"{described}; {EXPECTED}"
    return f"not an image ({described}); {EXPECTED}"


def open_image_file(path: str | os.PathLike[str], *, max_bytes: int) -> BinaryIO:
    """Open ``path`` for reading as an image: only a regular file, non-empty, at most max_bytes.

    A FIFO, socket or device is refused before it is opened (opening a FIFO blocks until a
    writer appears; ``/dev/zero`` never ends), and checked again on the open descriptor, which
    is opened non-blocking, in case the path was swapped in between.

    Raises:
        FileRefused: missing or unreadable, not a regular file, empty, or over ``max_bytes``.
    """
    try:
        before = os.stat(path)
    except OSError as exc:
        raise FileRefused(path, f"cannot open file ({exc.strerror or exc})") from None
    _check_regular(path, before.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(path, f"cannot open file ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        _check_regular(path, st.st_mode)
        if st.st_size == 0:
            raise FileRefused(path, f"empty file (0 bytes); {EXPECTED}")
        if st.st_size > max_bytes:
            raise FileRefused(
                path,
                f"file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit for an image",
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(path: str | os.PathLike[str], mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        kind = "a directory"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a file"
    raise FileRefused(path, f"not a regular file ({kind}); {EXPECTED}")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the prefix.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text.strip()) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _looks_like_tga(head: bytes) -> bool:
    # No magic number: a colour-map type of 0/1, a known image type and a known pixel depth.
    return (
        len(head) >= 18
        and head[1] in (0, 1)
        and head[2] in (1, 2, 3, 9, 10, 11, 32, 33)
        and head[16] in (1, 8, 15, 16, 24, 32)
        and head[17] & 0xC0 == 0
    )


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF ``ftyp`` box at the start of ``head``."""
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if size >= 16 else len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands
