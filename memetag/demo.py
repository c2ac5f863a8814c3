"""A synthetic chat for `memetag demo` and the benchmarks: labelled images with learnable structure.

Each category has a visual signature drawn with Pillow (meme caption bars, a social-media card,
comic panels, a news header, a smooth photo-like scene, flat cartoon colours), images may carry
two categories, and each of four members favours some categories, so both the category head and
the sender head have something real to learn. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CATEGORIES = ("meme", "social_media", "comic_strip", "news", "photo", "tv_cartoon")
# Pseudonyms from the chat the project grew out of; each favours some categories.
MEMBERS: dict[str, dict[str, float]] = {
    "Kappa": {
        "meme": 5,
        "tv_cartoon": 3,
        "comic_strip": 1,
        "social_media": 1,
        "news": 0.5,
        "photo": 0.5,
    },
    "Psi": {
        "news": 5,
        "social_media": 4,
        "meme": 1,
        "photo": 0.5,
        "comic_strip": 0.5,
        "tv_cartoon": 0.5,
    },
    "Omega": {
        "photo": 6,
        "meme": 1,
        "news": 1,
        "social_media": 0.5,
        "comic_strip": 0.5,
        "tv_cartoon": 0.5,
    },
    "Beta": {
        "comic_strip": 5,
        "tv_cartoon": 2,
        "meme": 1,
        "photo": 0.5,
        "news": 0.5,
        "social_media": 0.5,
    },
}
# Second labels that plausibly come with a first one.
_COMPANIONS = {"meme": "tv_cartoon", "news": "social_media", "tv_cartoon": "meme"}


@dataclass(frozen=True)
class DemoImage:
    filename: str
    sender: str
    labels: tuple[str, ...]
    timestamp: datetime


def _rand_colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _text_lines(draw: ImageDraw.ImageDraw, rng: random.Random, box, colour, n: int) -> None:
    x0, y0, x1, y1 = box
    step = max(6, (y1 - y0) // max(1, n))
    for i in range(n):
        y = y0 + i * step
        width = int((x1 - x0) * rng.uniform(0.5, 0.95))
        draw.rectangle([x0, y, x0 + width, y + max(2, step // 3)], fill=colour)


def _photo(rng: random.Random, size: int) -> Image.Image:
    top, bottom = _rand_colour(rng, 60, 200), _rand_colour(rng, 20, 140)
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        t = y / size
        draw.line(
            [(0, y), (size, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(rng.randint(3, 7)):
        cx, cy, r = (
            rng.randint(0, size),
            rng.randint(size // 3, size),
            rng.randint(size // 10, size // 3),
        )
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rand_colour(rng, 30, 220))
    return img.filter(ImageFilter.GaussianBlur(size / 60))


def _cartoon(rng: random.Random, size: int) -> Image.Image:
    img = Image.new(
        "RGB", (size, size), rng.choice([(120, 190, 255), (255, 220, 60), (250, 250, 250)])
    )
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 4)):
        x, y = rng.randint(0, size * 2 // 3), rng.randint(size // 4, size * 2 // 3)
        w = rng.randint(size // 6, size // 3)
        draw.ellipse(
            [x, y, x + w, y + w * 1.3],
            fill=(255, 217, 15),
            outline=(0, 0, 0),
            width=max(2, size // 60),
        )
        draw.ellipse(
            [x + w // 4, y + w // 4, x + w // 2, y + w // 2], fill="white", outline="black", width=2
        )
    return img


def _draw(category: str, base: Image.Image | None, rng: random.Random, size: int) -> Image.Image:
    if category == "photo":
        return _photo(rng, size)
    if category == "tv_cartoon":
        return _cartoon(rng, size)
    if category == "meme":
        img = base if base is not None else _photo(rng, size)
        draw = ImageDraw.Draw(img)
        bar = size // 7
        for y0 in (size // 30, size - bar - size // 30):
            _text_lines(draw, rng, (size // 10, y0, size * 9 // 10, y0 + bar), (255, 255, 255), 1)
            draw.rectangle(
                [size // 10, y0, size * 9 // 10, y0 + bar // 3], outline="black", width=2
            )
        return img
    if category == "social_media":
        img = Image.new("RGB", (size, size), (245, 248, 250))
        draw = ImageDraw.Draw(img)
        draw.ellipse([size // 20, size // 20, size // 5, size // 5], fill=_rand_colour(rng))
        draw.rectangle([size // 4, size // 14, size * 3 // 5, size // 9], fill=(20, 23, 26))
        _text_lines(
            draw, rng, (size // 20, size // 4, size * 19 // 20, size * 3 // 5), (60, 60, 60), 5
        )
        draw.rectangle([0, size * 5 // 6, size, size * 5 // 6 + 3], fill=(29, 161, 242))
        return img
    if category == "comic_strip":
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        panels = rng.choice([2, 3, 4])
        w = size // panels
        for i in range(panels):
            draw.rectangle(
                [i * w + 3, size // 4, (i + 1) * w - 3, size * 3 // 4], outline="black", width=3
            )
            cx = i * w + w // 2
            draw.ellipse(
                [cx - w // 8, size // 2 - w // 8, cx + w // 8, size // 2 + w // 8],
                outline="black",
                width=2,
            )
            draw.ellipse(
                [cx - w // 4, size // 4 + 8, cx + w // 6, size // 4 + 8 + w // 6],
                fill="white",
                outline="black",
            )
        return img
    if category == "news":
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, 0, size, size // 8], fill=rng.choice([(180, 0, 0), (20, 30, 80)]))
        _text_lines(draw, rng, (size // 20, size // 6, size * 19 // 20, size // 3), (10, 10, 10), 2)
        img.paste(_photo(rng, size // 2), (size // 20, size * 2 // 5))
        _text_lines(
            draw,
            rng,
            (size * 3 // 5, size * 2 // 5, size * 19 // 20, size * 9 // 10),
            (90, 90, 90),
            6,
        )
        return img
    raise ValueError(f"unknown demo category {category!r}")


def render(labels: tuple[str, ...], rng: random.Random, size: int = 256) -> Image.Image:
    """Draw one image carrying the visual signature of every label given (first one first)."""
    img = None
    for label in labels:
        img = _draw(label, img if label == "meme" else None, rng, size)
    assert img is not None
    return img


def make_demo_chat(
    folder: Path, *, images: int = 240, seed: int = 0, size: int = 256
) -> list[DemoImage]:
    """Write ``images`` demo images and ``labels.csv`` (filename,sender,labels,timestamp) into folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    members = list(MEMBERS)
    rows: list[DemoImage] = []
    for i in range(images):
        sender = members[i % len(members)] if i < len(members) else rng.choice(members)
        prefs = MEMBERS[sender]
        first = rng.choices(list(prefs), weights=list(prefs.values()))[0]
        labels: tuple[str, ...] = (first,)
        companion = _COMPANIONS.get(first)
        if companion and rng.random() < 0.3:
            # draw the cartoon first so meme captions land on top of it
            labels = tuple(sorted((first, companion), key=lambda c: c != "tv_cartoon"))
        img = render(labels, rng, size)
        name = f"img_{i:04d}.{'png' if first in ('social_media', 'comic_strip') else 'jpg'}"
        img.save(folder / name, quality=90) if name.endswith("jpg") else img.save(folder / name)
        ts = start + timedelta(hours=i * 36 + rng.randint(0, 30))
        rows.append(DemoImage(name, sender, labels, ts))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "sender", "labels", "timestamp"])
        for r in rows:
            writer.writerow([r.filename, r.sender, " ".join(r.labels), r.timestamp.isoformat()])
    return rows
