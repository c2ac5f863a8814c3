"""load_rgb: every odd mode to RGB, orientation, animation, reduced-scale decode, hostile files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from ml_helpers import encode, photo_like, png_bomb_header, screenshot_like, write_hostile_files
from PIL import Image

from classifier.errors import ImageLoadError
from classifier.imaging import CenterCrop, load_center_crop, load_rgb

MAX = 80_000_000


def _load(data: bytes, **kw) -> Image.Image:
    img = load_rgb(data, max_pixels=MAX, **kw)
    assert img.mode == "RGB"
    return img


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = _load(encode(img, "PNG"))
    assert out.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white, not red or black
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_palette_with_transparency():
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    img.putpixel((1, 1), 1)
    out = _load(encode(img, "PNG", transparency=0))
    assert out.getpixel((4, 4)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (10, 200, 10)
    gif = _load(encode(img, "GIF", transparency=0))
    assert gif.getpixel((4, 4)) == (255, 255, 255)


def test_cmyk_jpeg():
    out = _load(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))
    r, g, b = out.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_grey_scaled_not_clipped(mode):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16 if mode == "I;16" else np.int32)
    img = Image.fromarray(arr.astype(np.uint16)) if mode == "I;16" else Image.fromarray(arr, "I")
    out = _load(encode(img, "PNG" if mode == "I;16" else "TIFF"))
    values = [out.getpixel((x, 0))[0] for x in range(3)]
    assert values[0] == 0 and 120 < values[1] < 135 and values[2] == 255


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_grey_modes(mode):
    img = Image.new(mode, (4, 4), 255 if mode != "LA" else (200, 255))
    assert _load(encode(img, "PNG")).getpixel((1, 1))[0] in (200, 255)


def test_exif_orientation_applied():
    img = photo_like(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(img, "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (40, 20)
    assert _load(data).size == (20, 40)


def test_animation_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    for fmt in ("GIF", "WEBP"):
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)
        r, g, b = _load(data).getpixel((8, 8))
        assert r > 200 and g < 50 and b < 50, fmt


def test_any_size(tmp_path):
    assert _load(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")).size == (1, 1)
    path = tmp_path / "tall.png"
    screenshot_like(1080, 8000).save(path)
    assert load_rgb(path, max_pixels=MAX).size == (1080, 8000)
    reduced = load_rgb(path, max_pixels=MAX, min_side=256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 1080


def test_jpeg_draft_decodes_at_reduced_scale():
    data = encode(photo_like(4000, 3000), "JPEG", quality=85)
    out = _load(data, min_side=256)
    assert 256 <= min(out.size) < 600 and abs(out.size[0] / out.size[1] - 4 / 3) < 0.02
    assert _load(data).size == (4000, 3000)


def test_pixel_limit_checked_from_header():
    with pytest.raises(ImageLoadError, match="limit"):
        load_rgb(png_bomb_header(50_000, 50_000), max_pixels=MAX)
    with pytest.raises(ImageLoadError, match="limit"):
        load_rgb(encode(photo_like(300, 300), "PNG"), max_pixels=300 * 299)


def test_hostile_files(tmp_path):
    bad = write_hostile_files(tmp_path)
    for name, path in bad.items():
        with pytest.raises(ImageLoadError) as info:
            load_rgb(path, max_pixels=MAX)
        err = info.value
        assert err.path == path and err.reason and "\n" not in str(err), name
        assert str(path) in str(err)
    # Truncated in the middle of the pixel data, not just the header.
    whole = encode(photo_like(400, 300), "JPEG", quality=95)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(whole[: len(whole) // 2], max_pixels=MAX)
    png = encode(photo_like(200, 200), "PNG")
    with pytest.raises(ImageLoadError):
        load_rgb(png[: len(png) // 2], max_pixels=MAX)
    with pytest.raises(ImageLoadError, match="empty"):
        load_rgb(b"", max_pixels=MAX)
    with pytest.raises(ImageLoadError, match="cannot open"):
        load_rgb(tmp_path / "missing.jpg", max_pixels=MAX)


# -- decoding straight to the centre crop ---------------------------------------------------

CROP = CenterCrop(resize_to=64, crop=56)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(arr: np.ndarray, *, color_type: int, interlace: bool = False, after: bytes = b"") -> bytes:
    """A PNG written by hand (16-bit colour and Adam7 interlacing, which Pillow can't write).

    ``arr`` is height x width x channels of uint8 or uint16; ``after`` goes after the pixels.
    """
    depth = 16 if arr.dtype == np.uint16 else 8
    height, width = arr.shape[:2]
    data = arr.astype(">u2" if depth == 16 else np.uint8)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes = [*passes, (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)]
    raw = b"".join(
        b"\x00" + data[y, x0::dx].tobytes()  # filter 0 (none) on every row
        for x0, y0, dx, dy in passes
        if x0 < width
        for y in range(y0, height, dy)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, int(interlace))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    return head + _chunk(b"IDAT", zlib.compress(raw)) + after + _chunk(b"IEND", b"")


def _tall(mode: str, width: int = 70, height: int = 400) -> Image.Image:
    """Content that changes row by row, so a wrongly placed or skipped row shows."""
    base = screenshot_like(width, height, seed=3)
    arr = np.asarray(base).copy()
    arr[:, :, 2] = (np.arange(height)[:, None] * 7 + np.arange(width)[None, :]) % 256
    rgb = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(((np.arange(height)[:, None] * 3) % 256).astype(np.uint8))
        alpha = alpha.resize((width, height))
        return Image.merge("RGBA", (*rgb.split(), alpha))
    if mode == "P":
        return rgb.quantize(64)
    return rgb.convert(mode)


def _full_then_crop(data: bytes, monkeypatch) -> Image.Image:
    """load_center_crop with the partial decode switched off: the reference."""
    import classifier.imaging as imaging

    with monkeypatch.context() as m:
        m.setattr(imaging, "_rows_for_crop", lambda *a: None)
        return load_center_crop(data, max_pixels=MAX, crop=CROP)


def _spy_partial(monkeypatch) -> list[int]:
    import classifier.imaging as imaging

    rows: list[int] = []
    real = imaging._load_top_rows
    monkeypatch.setattr(imaging, "_load_top_rows", lambda img, n: rows.append(n) or real(img, n))
    return rows


def _tall_inputs() -> dict[str, bytes]:
    arr = np.asarray(_tall("RGB"))
    ramp = np.arange(arr.shape[1], dtype=np.uint16)[None, :, None]  # below 8-bit precision
    rgb16 = arr.astype(np.uint16) * 256 + ramp
    grey16 = (np.asarray(_tall("L")).astype(np.uint16) * 200).astype(np.uint16)
    inputs = {mode: encode(_tall(mode), "PNG") for mode in ("RGB", "RGBA", "P", "L", "LA", "1")}
    return inputs | {
        "P+transparency": encode(_tall("P"), "PNG", transparency=5),
        "RGB 16-bit": _png(rgb16, color_type=2),
        "L 16-bit": _png(grey16[:, :, None], color_type=0),
        "GIF": encode(_tall("P"), "GIF"),
    }


@pytest.mark.parametrize("name", list(_tall_inputs()))
def test_partial_decode_is_pixel_identical_to_full_decode(name, monkeypatch):
    data = _tall_inputs()[name]
    expected = _full_then_crop(data, monkeypatch)
    rows = _spy_partial(monkeypatch)
    got = load_center_crop(data, max_pixels=MAX, crop=CROP)
    assert got.mode == "RGB" and got.size == (CROP.crop, CROP.crop)
    assert np.array_equal(np.asarray(got), np.asarray(expected)), name
    # The shortcut is taken where it is safe, and only there: PNG, with a mode converted to
    # RGB row by row (16-bit grey is scaled by the whole image's peak value).
    partial = name not in ("GIF", "L 16-bit")
    assert bool(rows) == partial, rows
    if partial:
        assert 200 < rows[0] < 400 * 0.8  # the crop's rows, not the whole 400


def test_partial_decode_rows_match_full_decode_rows():
    import classifier.imaging as imaging

    data = encode(_tall("RGB", 300, 2000), "PNG")
    full = Image.open(io.BytesIO(data))
    full.load()
    part = Image.open(io.BytesIO(data))
    assert imaging._load_top_rows(part, 700)
    assert np.array_equal(np.asarray(part)[:700], np.asarray(full)[:700])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_partial_decode_skipped_when_unsafe(monkeypatch):
    rows = _spy_partial(monkeypatch)
    arr = np.asarray(_tall("RGB"))
    interlaced = _png(arr, color_type=2, interlace=True)
    plain = _png(arr, color_type=2)
    assert np.array_equal(
        np.asarray(load_center_crop(interlaced, max_pixels=MAX, crop=CROP)),
        np.asarray(load_center_crop(plain, max_pixels=MAX, crop=CROP)),
    )
    assert len(rows) == 1  # only the plain one went partial
    rows.clear()
    # An EXIF block after the pixels rotates the image: it must be seen, so no shortcut.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _png(arr, color_type=2, after=_chunk(b"eXIf", exif.tobytes()))
    out = load_center_crop(rotated, max_pixels=MAX, crop=CROP)
    turned = load_center_crop(encode(_tall("RGB").transpose(Image.Transpose.ROTATE_270), "PNG"),
                              max_pixels=MAX, crop=CROP)  # fmt: skip
    assert np.array_equal(np.asarray(out), np.asarray(turned))
    # An animated PNG's first frame: no shortcut either.
    frames = [_tall("RGB"), _tall("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert np.array_equal(
        np.asarray(load_center_crop(apng, max_pixels=MAX, crop=CROP)),
        np.asarray(load_center_crop(encode(frames[0], "PNG"), max_pixels=MAX, crop=CROP)),
    )
    assert len(rows) == 1  # the still PNG only
    # Unreadable EXIF costs neither the image nor (here) the shortcut's correctness.
    broken = encode(_tall("RGB"), "PNG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert np.array_equal(
        np.asarray(load_center_crop(broken, max_pixels=MAX, crop=CROP)),
        np.asarray(_full_then_crop(broken, monkeypatch)),
    )


def test_partial_decode_failure_falls_back_to_full(monkeypatch):
    from PIL import ImageFile

    data = encode(_tall("RGB"), "PNG")
    expected = _full_then_crop(data, monkeypatch)
    real = ImageFile.ImageFile.load
    calls = []

    def flaky(self):
        if self.tile:  # not yet decoded
            calls.append(self.tile[0].extents[3])
            if len(calls) == 1:
                raise RuntimeError("an internal Pillow change")
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", flaky)
    got = load_center_crop(data, max_pixels=MAX, crop=CROP)
    assert len(calls) == 2 and calls[0] < 400 and calls[1] == 400  # partial, failed; full
    assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_truncated_tall_png_still_fails():
    data = encode(_tall("RGB", 300, 2000), "PNG")
    for cut in (len(data) // 3, len(data) - 30):  # inside the crop's rows; after them
        with pytest.raises(ImageLoadError, match="truncated|damaged"):
            load_center_crop(data[:cut], max_pixels=MAX, crop=CROP)


@pytest.mark.parametrize(
    ("kind", "size"),
    [("JPEG", (400, 300)), ("JPEG", (300, 1000)), ("PNG", (1000, 260)), ("PNG", (260, 1500)),
     ("GIF", (90, 60)), ("PNG", (56, 56)), ("PNG", (40, 200))],
)  # fmt: skip
def test_center_crop_matches_resize_then_crop(kind, size):
    from torchvision import transforms as T

    img = photo_like(*size) if kind == "JPEG" else screenshot_like(*size)
    data = encode(img, kind)
    reference = T.Compose([T.Resize(CROP.resize_to, T.InterpolationMode.BICUBIC),
                           T.CenterCrop(CROP.crop)])  # fmt: skip
    expected = np.asarray(reference(load_rgb(data, max_pixels=MAX, min_side=CROP.resize_to)))
    got = np.asarray(load_center_crop(data, max_pixels=MAX, crop=CROP))
    diff = np.abs(expected.astype(int) - got)
    # Pillow rounds to 8 bits between its two passes and may order them differently for a
    # box than for a whole image: a few levels at sharp edges, nothing systematic.
    assert diff.max() <= 4 and diff.mean() < 0.1, (diff.max(), diff.mean())


def test_center_crop_applies_orientation_and_checks():
    img = photo_like(300, 100)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(img, "JPEG", exif=exif.tobytes())
    out = load_center_crop(data, max_pixels=MAX, crop=CROP)
    upright = load_center_crop(encode(img.transpose(Image.Transpose.ROTATE_270), "JPEG"),
                               max_pixels=MAX, crop=CROP)  # fmt: skip
    assert np.abs(np.asarray(out).astype(int) - np.asarray(upright)).mean() < 3
    with pytest.raises(ImageLoadError, match="limit"):
        load_center_crop(png_bomb_header(50_000, 50_000), max_pixels=MAX, crop=CROP)
    with pytest.raises(ValueError, match="does not fit"):
        load_center_crop(data, max_pixels=MAX, crop=CenterCrop(resize_to=50, crop=56))
