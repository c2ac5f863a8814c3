"""inspect_image and sniff_image_prefix: real images accepted, hostile bytes rejected by reason."""

from __future__ import annotations

import hashlib
import io

import imagehash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ingest.errors import ImageRejected
from ingest.images import ImageInfo, describe_prefix, inspect_image, sniff_image_prefix
from tests.helpers.imagegen import (
    HTML_PAGE,
    PDF_BYTES,
    make_animated_gif,
    make_bomb_png,
    make_image,
    make_noise_jpeg,
    truncate,
)

MAX_PIXELS = 50_000_000


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [
        ("JPEG", "jpg"),
        ("PNG", "png"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ],
)
def test_accepts_each_format(fmt: str, ext: str) -> None:
    data = make_image(fmt, (64, 48), seed=1)
    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert info == ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=info.phash,
        width=64,
        height=48,
        format=fmt,
        ext=ext,
        bytes=len(data),
    )
    assert len(info.phash) == 16
    int(info.phash, 16)


def test_ext_comes_from_the_bytes_not_a_name() -> None:
    # There is no name to lie: a PNG is "png" whatever URL it came from.
    assert inspect_image(make_image("PNG"), max_pixels=MAX_PIXELS).ext == "png"


def test_phash_is_stable_across_formats_and_sizes() -> None:
    big = make_image("PNG", (1600, 1200), seed=9)
    png = inspect_image(big, max_pixels=MAX_PIXELS)
    jpeg_bytes = io.BytesIO()
    Image.open(io.BytesIO(big)).convert("RGB").save(jpeg_bytes, "JPEG", quality=85)
    jpeg = inspect_image(jpeg_bytes.getvalue(), max_pixels=MAX_PIXELS)
    small = io.BytesIO()
    Image.open(io.BytesIO(big)).resize((200, 150)).save(small, "PNG")
    thumb = inspect_image(small.getvalue(), max_pixels=MAX_PIXELS)

    def distance(a: str, b: str) -> int:
        return imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)

    assert distance(png.phash, jpeg.phash) <= 4
    assert distance(png.phash, thumb.phash) <= 4
    other = inspect_image(make_image("PNG", (1600, 1200), seed=10), max_pixels=MAX_PIXELS)
    assert distance(png.phash, other.phash) > 10


def test_animated_gif_uses_the_first_frame() -> None:
    info = inspect_image(make_animated_gif((40, 30), frames=3), max_pixels=MAX_PIXELS)
    first = inspect_image(make_image("GIF", (40, 30), seed=0), max_pixels=MAX_PIXELS)
    assert (info.format, info.ext, info.width, info.height) == ("GIF", "gif", 40, 30)
    assert info.phash == first.phash


def test_odd_modes_still_hash() -> None:
    for mode in ("RGBA", "LA", "1", "I;16", "CMYK"):
        img = Image.new(mode, (40, 40))
        out = io.BytesIO()
        img.save(out, "TIFF" if mode == "CMYK" else "PNG")
        assert inspect_image(out.getvalue(), max_pixels=MAX_PIXELS).width == 40


def test_large_jpeg_reports_full_size() -> None:
    # phash is computed from a draft-decoded copy; the size reported is still the full one.
    data = make_noise_jpeg((4000, 3000), quality=80)
    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert (info.width, info.height) == (4000, 3000)


def test_empty() -> None:
    with pytest.raises(ImageRejected) as err:
        inspect_image(b"", max_pixels=MAX_PIXELS)
    assert err.value.reason == "empty"


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (HTML_PAGE, "HTML"),
        (b"  \n<html><body>hi</body></html>", "HTML"),
        (PDF_BYTES, "PDF"),
        (b'{"error": "not found"}', "JSON"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "PostScript"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x01\x02\x03 random junk", "first bytes 00 01 02 03"),
    ],
)
def test_not_image_says_what_it_looks_like(data: bytes, looks_like: str) -> None:
    with pytest.raises(ImageRejected) as err:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert err.value.reason == "not_image"
    assert looks_like in err.value.detail


def test_bomb_header_is_rejected_without_decoding() -> None:
    with pytest.raises(ImageRejected) as err:
        inspect_image(make_bomb_png(50_000, 50_000), max_pixels=MAX_PIXELS)
    assert err.value.reason == "decompression_bomb"
    assert "2500000000" in err.value.detail  # judged from the header's claim


def test_pixel_limit_is_ours_not_only_pillows() -> None:
    # 5000 x 5000 is under Pillow's own guard; max_pixels must still refuse it, from the header.
    with pytest.raises(ImageRejected) as err:
        inspect_image(make_bomb_png(5000, 5000), max_pixels=1_000_000)
    assert err.value.reason == "decompression_bomb"
    assert "5000x5000" in err.value.detail
    ok = inspect_image(make_image("PNG", (100, 100)), max_pixels=10_000)
    assert ok.width == 100


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = truncate(make_noise_jpeg((256, 256)) if fmt == "JPEG" else make_image(fmt, (256, 256)))
    with pytest.raises(ImageRejected) as err:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert err.value.reason in ("truncated", "corrupt")
    if fmt in ("JPEG", "PNG"):
        assert err.value.reason == "truncated"


def test_corrupt_body_after_a_valid_header() -> None:
    data = bytearray(make_image("PNG", (64, 64)))
    data[60:90] = b"\xff" * 30  # inside the IDAT stream
    with pytest.raises(ImageRejected) as err:
        inspect_image(bytes(data), max_pixels=MAX_PIXELS)
    assert err.value.reason in ("corrupt", "truncated")


def test_bomb_png_without_pillow_guard_still_fails_cleanly() -> None:
    # A claimed size under the limit but with no real pixel data: decoding must fail, not hang.
    with pytest.raises(ImageRejected) as err:
        inspect_image(make_bomb_png(300, 300), max_pixels=MAX_PIXELS)
    assert err.value.reason in ("truncated", "corrupt")


SAMPLES = [make_image(f, (24, 24), seed=3) for f in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about hostile TIFF tags
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_mutated_images_only_ever_raise_image_rejected(
    sample: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample[: max(cut, 1)] if cut < len(sample) else sample)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        info = inspect_image(bytes(data), max_pixels=MAX_PIXELS)
    except ImageRejected as exc:
        assert exc.reason in ("empty", "not_image", "decompression_bomb", "truncated", "corrupt")
    else:
        assert info.width * info.height <= MAX_PIXELS


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_only_ever_raise_image_rejected(data: bytes) -> None:
    try:
        inspect_image(data, max_pixels=MAX_PIXELS)
    except ImageRejected:
        pass


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO"])
def test_sniff_recognises_images(fmt: str) -> None:
    data = make_image(fmt, (32, 32))
    assert sniff_image_prefix(data[:64])
    assert sniff_image_prefix(data[:32])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        HTML_PAGE,
        PDF_BYTES,
        b'{"a": 1}',
        b"BM is not always a bitmap, sometimes it is text",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
    ],
)
def test_sniff_refuses_non_images(data: bytes) -> None:
    assert not sniff_image_prefix(data[:64])


def test_sniff_and_inspect_agree_on_avif_support() -> None:
    try:
        data = make_image("AVIF", (32, 32))
    except (KeyError, OSError):
        pytest.skip("this Pillow cannot write AVIF")
    assert sniff_image_prefix(data[:64])
    assert inspect_image(data, max_pixels=MAX_PIXELS).ext == "avif"


def test_describe_prefix_for_unknown_bytes() -> None:
    assert describe_prefix(b"\x01\x02\x03").startswith("unrecognised; first bytes 01 02 03")
