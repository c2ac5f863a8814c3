"""The synthetic demo chat: its CSV, distinct images, and realistic shapes per category."""

from __future__ import annotations

import csv
import hashlib
import random
from datetime import datetime

from PIL import Image

from memetag.demo import CATEGORIES, MEMBERS, make_demo_chat, render


def test_demo_chat_is_varied_and_shaped_like_a_real_chat(tmp_path):
    rows = make_demo_chat(tmp_path, images=60, seed=3, size=64)
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["filename", "sender", "labels", "timestamp"]
        lines = list(reader)
    assert len(lines) == len(rows) == 60
    assert {line[1] for line in lines} == set(MEMBERS)
    assert all(set(line[2].split()) <= set(CATEGORIES) for line in lines)
    times = [datetime.fromisoformat(line[3]) for line in lines]
    assert times == sorted(times)
    digests = {hashlib.sha256((tmp_path / line[0]).read_bytes()).hexdigest() for line in lines}
    assert len(digests) == 60  # no two images byte-identical
    tall = 0
    for r in rows:
        with Image.open(tmp_path / r.filename) as img:
            w, h = img.size
            fmt = img.format
        if {"social_media", "news"} & set(r.labels):
            assert fmt == "PNG"
            tall += h >= 1.5 * w
        elif {"photo", "meme", "tv_cartoon"} & set(r.labels):
            assert fmt == "JPEG" and 0.7 <= w / h <= 1.8  # square, 4:3, 3:4 or 16:9
    assert tall >= 3  # tall captures, laid out down the whole page


def _tall(labels: tuple[str, ...]) -> Image.Image:
    for seed in range(20):  # three out of four are tall captures
        img = render(labels, random.Random(seed), 256).convert("RGB")
        if img.height >= 1.5 * img.width:
            return img
    raise AssertionError(f"no tall {labels} image in 20 tries")


def test_tall_screenshots_fill_the_page_with_the_signature_at_the_edges():
    for labels in (("news",), ("social_media",)):
        img = _tall(labels)
        w, h = img.size
        assert w >= 720 and 2000 <= h <= 6000
        for k in range(5):  # something drawn in every fifth of the height, not just the middle
            band = img.crop((0, k * h // 5, w, (k + 1) * h // 5))
            assert len(band.getcolors(w * h) or ()) > 3, (labels, k)
    # A news masthead: a full-width band of one saturated colour near the top, outside the
    # square a centre crop would keep.
    img = _tall(("news",))
    w, h = img.size
    rows = [img.crop((0, y, w, y + 1)).getcolors(w) for y in range(0, h // 10)]
    bands = [c[0][1] for c in rows if c and len(c) == 1 and max(c[0][1]) - min(c[0][1]) > 60]
    assert bands and h // 10 < (h - w) // 2
