"""Generated image bytes for tests: real images of every format, and hostile ones."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image


def make_image(
    fmt: str = "JPEG", size: tuple[int, int] = (64, 48), *, seed: int = 0, **save: object
) -> bytes:
    """A real image with some structure (so phash is meaningful), encoded as ``fmt``."""
    rng = random.Random(seed)
    width, height = size
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    # A few random blocks: cheap, deterministic, and different per seed.
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = min(width, x0 + rng.randrange(1, width))
        y1 = min(height, y0 + rng.randrange(1, height))
        box = (x0, y0, x1, y1)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), box)
    if fmt == "GIF":
        img = img.convert("P")
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def make_animated_gif(size: tuple[int, int] = (40, 30), frames: int = 3) -> bytes:
    """An animated GIF whose frames differ; the first frame is ``make_image("GIF", seed=0)``'s."""
    images = [Image.open(io.BytesIO(make_image("GIF", size, seed=i))) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def make_noise_jpeg(size: tuple[int, int], *, seed: int = 0, quality: int = 90) -> bytes:
    """A JPEG of random noise: incompressible, so its byte size is predictable-ish."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def truncate(data: bytes, keep: float = 0.6) -> bytes:
    """The first ``keep`` fraction of ``data``."""
    return data[: int(len(data) * keep)]


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Not an image</title></head><body>"
    + b"<p>lorem ipsum dolor sit amet</p>" * 200
    + b"</body></html>\n"
)
PDF_BYTES = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 4
