"""load_rgb: every odd mode to RGB, orientation, animation, reduced-scale decode, hostile files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ml_helpers import encode, photo_like, png_bomb_header, screenshot_like, write_hostile_files
from PIL import Image

from classifier.errors import ImageLoadError
from classifier.imaging import load_rgb

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
