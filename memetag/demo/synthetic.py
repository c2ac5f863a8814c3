"""A quick synthetic chat for tests and benchmarks: labelled images with learnable structure.

Each category has a visual signature drawn with Pillow, laid out the way real chat images are:
social-media and news screenshots are usually tall phone captures (1080 px wide, 2000-6000 px
tall, saved as PNG) whose telling parts - a masthead, avatars, action rows, a reply bar - sit at
the top and bottom and repeat down the page, not only in the middle; photos, memes and cartoon
frames are square, 4:3 or 16:9 JPEGs; comics are strips or grids. Colours, offsets, line lengths
and layouts vary per image, so no two images are alike. Images may carry two categories, and each
of four members favours some categories, so both the category head and the sender head have
something real to learn. Nothing is downloaded.
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
# Share of social-media and news images that are tall full-page captures (the rest are a
# single post or headline cropped to a card).
TALL_SHARE = 0.75
# Phone screenshot widths in pixels at the default base size of 256 (1080 is the common one).
_PHONE_WIDTHS = (720, 828, 1080, 1080, 1080, 1170)
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class DemoImage:
    filename: str
    sender: str
    labels: tuple[str, ...]
    timestamp: datetime


def _rand_colour(rng: random.Random, lo: int = 0, hi: int = 255) -> _Colour:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _jitter(colour: _Colour, rng: random.Random, amount: int = 12) -> _Colour:
    r, g, b = (max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)
    return (r, g, b)


def _words(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    x0: int,
    y: int,
    x1: int,
    height: int,
    colour: _Colour,
    *,
    fill: float = 1.0,
) -> None:
    """One line of text-like word bars from x0 towards x1 (stopping early at ``fill``)."""
    end = x0 + int((x1 - x0) * fill)
    x = x0
    unit = max(3, height)
    while x < end - unit:
        w = rng.randint(unit, unit * 5)
        draw.rectangle([x, y, min(x + w, end), y + height], fill=colour)
        x += w + max(2, unit // 2) + rng.randint(0, unit // 2)


def _paragraph(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    box: tuple[int, int, int, int],
    colour: _Colour,
    line: int,
    n_lines: int,
) -> int:
    """``n_lines`` of words in box (x0, y0, x1, max y), last one short; returns the y below."""
    x0, y, x1, y_max = box
    for i in range(n_lines):
        if y + line > y_max:
            break
        last = i == n_lines - 1
        _words(draw, rng, x0, y, x1, line // 2, colour, fill=rng.uniform(0.3, 0.7) if last else 1)
        y += line
    return y


# --- pictures ----------------------------------------------------------------------------------


def _photo(rng: random.Random, width: int, height: int) -> Image.Image:
    """A smooth, blurry outdoor-ish scene: a sky gradient and soft blobs."""
    # Drawn small and scaled up: a big image costs the same to describe and far less to draw.
    w, h = max(8, width // 4), max(8, height // 4)
    top, bottom = _rand_colour(rng, 60, 220), _rand_colour(rng, 20, 150)
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / h
        draw.line(
            [(0, y), (w, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(rng.randint(3, 8)):
        r = rng.randint(max(2, min(w, h) // 10), max(3, min(w, h) // 3))
        cx, cy = rng.randint(0, w), rng.randint(h // 4, h)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rand_colour(rng, 30, 230))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6)))
    return img.resize((width, height), Image.Resampling.BILINEAR)


def _cartoon(rng: random.Random, width: int, height: int) -> Image.Image:
    """A flat-coloured TV frame: a plain backdrop, a ground band, characters with bold outlines."""
    sky = _jitter(
        rng.choice([(120, 190, 255), (255, 220, 60), (250, 250, 250), (250, 160, 90)]), rng
    )
    img = Image.new("RGB", (width, height), sky)
    draw = ImageDraw.Draw(img)
    ground = rng.randint(height * 3 // 5, height * 4 // 5)
    draw.rectangle([0, ground, width, height], fill=_jitter((110, 170, 70), rng, 30))
    outline = max(2, min(width, height) // 60)
    for _ in range(rng.randint(1, 4)):
        w = rng.randint(min(width, height) // 6, min(width, height) // 3)
        x, y = (
            rng.randint(0, max(1, width - w)),
            rng.randint(height // 6, max(height // 6 + 1, ground - w)),
        )
        skin = _jitter(rng.choice([(255, 217, 15), (250, 200, 160), (120, 220, 120)]), rng, 10)
        draw.ellipse([x, y, x + w, y + int(w * 1.3)], fill=skin, outline=(0, 0, 0), width=outline)
        for ex in (x + w // 4, x + w // 2):
            ey = y + w // 4
            draw.ellipse([ex, ey, ex + w // 4, ey + w // 4], fill="white", outline="black", width=2)
            draw.ellipse([ex + w // 10, ey + w // 10, ex + w // 6, ey + w // 6], fill="black")
        body = _rand_colour(rng, 0, 255)
        draw.rectangle(
            [x + w // 6, y + int(w * 1.25), x + w * 5 // 6, min(height, y + w * 2)],
            fill=body,
            outline=(0, 0, 0),
            width=outline,
        )
    return img


def _meme_captions(img: Image.Image, rng: random.Random) -> Image.Image:
    """Impact-style captions: white word bars with a black edge at the top and (often) bottom."""
    draw = ImageDraw.Draw(img)
    width, height = img.size
    line = max(8, height // rng.randint(9, 13))
    spots = [height // 30 + rng.randint(0, height // 40)]
    if rng.random() < 0.8:
        spots.append(height - line * 2 - height // 30)
    for y0 in spots:
        for k in range(rng.randint(1, 2)):
            y = y0 + k * line
            w = int(width * rng.uniform(0.45, 0.9))
            x = (width - w) // 2 + rng.randint(-width // 20, width // 20)
            for dx, dy, colour in ((2, 2, (0, 0, 0)), (0, 0, (255, 255, 255))):
                _words(
                    draw,
                    random.Random(y * 7 + x),
                    x + dx,
                    y + dy,
                    x + w + dx,
                    line * 3 // 5,
                    colour,
                )
    return img


def _square_ish(
    rng: random.Random, size: int, shapes: tuple[tuple[int, int], ...]
) -> tuple[int, int]:
    """A (width, height) for base ``size`` with one of the aspect ratios in ``shapes``."""
    aw, ah = rng.choice(shapes)
    scale = rng.uniform(0.9, 1.3)
    if aw >= ah:
        return int(size * scale * aw / ah), int(size * scale)
    return int(size * scale), int(size * scale * ah / aw)


# --- screenshots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Theme:
    page: _Colour
    ink: _Colour
    muted: _Colour
    rule: _Colour
    accent: _Colour


def _theme(rng: random.Random, accent: _Colour) -> _Theme:
    if rng.random() < 0.3:  # dark mode
        return _Theme((21, 32, 43), (231, 233, 234), (139, 152, 165), (56, 68, 77), accent)
    return _Theme(
        _jitter((250, 250, 250), rng, 5), (15, 20, 25), (101, 119, 134), (225, 232, 237), accent
    )


def _status_bar(
    draw: ImageDraw.ImageDraw, rng: random.Random, width: int, t: _Theme, u: int
) -> int:
    """A phone status bar (clock left, signal and battery right); returns its height."""
    h = u * 4
    draw.rectangle([0, 0, width, h], fill=t.page)
    draw.rectangle([u * 3, u * 1.4, u * 3 + rng.randint(u * 4, u * 6), u * 2.6], fill=t.ink)
    for i in range(3):
        x = width - u * (14 - 3 * i)
        draw.rectangle([x, u * 1.3, x + u * 2, u * 2.7], fill=t.ink)
    return h


def _social_post(
    draw: ImageDraw.ImageDraw,
    img: Image.Image,
    rng: random.Random,
    y: int,
    width: int,
    t: _Theme,
    u: int,
    *,
    body_lines: int,
    media: Image.Image | None = None,
) -> int:
    """One post: avatar, bold name and grey handle, text, optional media, action row, rule."""
    pad = u * 3
    avatar = u * 10
    draw.ellipse([pad, y, pad + avatar, y + avatar], fill=_rand_colour(rng, 40, 230))
    x = pad + avatar + u * 3
    draw.rectangle([x, y + u, x + rng.randint(u * 12, u * 24), y + u * 3], fill=t.ink)
    hx = x + u * 26
    draw.rectangle([hx, y + u * 1.3, hx + rng.randint(u * 10, u * 20), y + u * 2.7], fill=t.muted)
    y = _paragraph(draw, rng, (x, y + u * 6, width - pad, 10**9), t.ink, u * 4, body_lines)
    if media is not None:
        mw = width - x - pad
        mh = int(mw * media.height / media.width)
        img.paste(media.resize((mw, mh), Image.Resampling.BILINEAR), (x, y + u))
        draw.rectangle([x, y + u, x + mw, y + u + mh], outline=t.rule, width=max(1, u // 3))
        y += mh + u * 2
    y += u * 2
    for i in range(4):  # reply, repost, like, share: icons with counts
        ix = x + i * (width - x) // 4
        colour = t.accent if i == 2 and rng.random() < 0.3 else t.muted
        draw.ellipse([ix, y, ix + u * 3, y + u * 3], outline=colour, width=max(1, u // 3))
        draw.rectangle([ix + u * 4, y + u, ix + u * rng.randint(6, 9), y + u * 2], fill=t.muted)
    y += u * 6
    draw.rectangle([0, y, width, y + max(1, u // 4)], fill=t.rule)
    return y + u * 3


def _news_card(rng: random.Random, width: int) -> Image.Image:
    """A shared-link preview of a news article: masthead band, headline, photo."""
    height = int(width * rng.uniform(0.55, 0.75))
    card = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(card)
    band = height // 7
    draw.rectangle([0, 0, width, band], fill=_masthead_colour(rng))
    draw.rectangle([width // 20, band // 3, width // 3, band * 2 // 3], fill="white")
    photo_h = height - band * 3
    card.paste(_photo(rng, width, photo_h), (0, band))
    _paragraph(
        draw,
        rng,
        (width // 20, band + photo_h + band // 3, width * 19 // 20, height),
        (10, 10, 10),
        band // 2 + 2,
        2,
    )
    return card


def _phone_size(rng: random.Random, size: int, *, tall: bool) -> tuple[int, int]:
    """A full-page capture (2000-6000 px tall at base 256) or a post cropped to a card."""
    width = rng.choice(_PHONE_WIDTHS) * size // 256
    height = rng.randint(2000, 6000) * size // 256 if tall else int(width * rng.uniform(0.7, 1.3))
    return width, height


def _social(rng: random.Random, size: int, *, tall: bool, with_news: bool) -> Image.Image:
    """A social-media screenshot: an app bar, a thread of posts (or one long post with replies),
    a reply box and a tab bar; tall captures fill the whole height with posts."""
    width, height = _phone_size(rng, size, tall=tall)
    scale = width / 1080
    u = max(2, int(round(8 * scale)))
    t = _theme(rng, _jitter(rng.choice([(29, 161, 242), (255, 69, 0), (24, 119, 242)]), rng, 8))
    img = Image.new("RGB", (width, height), t.page)
    draw = ImageDraw.Draw(img)
    footer = u * 22 if tall else 0
    y = 0
    if tall:
        y = _status_bar(draw, rng, width, t, u)
        # App bar: back arrow and title in the accent colour, a rule below.
        draw.polygon([(u * 3, y + u * 5), (u * 6, y + u * 2), (u * 6, y + u * 8)], fill=t.accent)
        draw.rectangle(
            [u * 10, y + u * 3, u * 10 + rng.randint(u * 12, u * 20), y + u * 6], fill=t.ink
        )
        y += u * 10
        draw.rectangle([0, y, width, y + max(1, u // 4)], fill=t.rule)
    y += u * 3
    long_post = rng.random() < 0.4
    first = True
    while y < height - footer - u * 30:
        media = None
        if first and with_news:
            media = _news_card(rng, width // 2)
        elif rng.random() < 0.25:
            media = _photo(rng, width // 3, int(width // 3 * rng.uniform(0.5, 0.9)))
        lines = rng.randint(12, 40) if first and long_post else rng.randint(1, 6)
        y = _social_post(draw, img, rng, y, width, t, u, body_lines=lines, media=media)
        first = False
    if tall:
        # Reply box and tab bar pinned to the bottom of the screen.
        top = height - footer
        draw.rectangle([0, top, width, height], fill=t.page)
        draw.rectangle([0, top, width, top + max(1, u // 4)], fill=t.rule)
        draw.rounded_rectangle(
            [u * 3, top + u * 2, width - u * 14, top + u * 8],
            radius=u * 3,
            outline=t.rule,
            width=max(1, u // 3),
        )
        draw.ellipse([width - u * 11, top + u * 2, width - u * 5, top + u * 8], fill=t.accent)
        for i in range(5):
            ix = (2 * i + 1) * width // 10 - u * 2
            draw.rectangle(
                [ix, top + u * 13, ix + u * 4, top + u * 17], fill=t.accent if i == 0 else t.muted
            )
    return img


def _masthead_colour(rng: random.Random) -> _Colour:
    return _jitter(rng.choice([(180, 0, 0), (20, 30, 80), (15, 15, 15), (200, 120, 0)]), rng, 15)


def _news(rng: random.Random, size: int, *, tall: bool) -> Image.Image:
    """A news article captured on a phone: masthead, headline, byline, hero photo, then body
    paragraphs with subheads, inline photos and ad slots down the page, and a footer."""
    width, height = _phone_size(rng, size, tall=tall)
    scale = width / 1080
    u = max(2, int(round(8 * scale)))
    ink, muted = (rng.randint(5, 30),) * 3, (110, 110, 110)
    img = Image.new("RGB", (width, height), _jitter((255, 255, 255), rng, 4))
    draw = ImageDraw.Draw(img)
    y = (
        _status_bar(draw, rng, width, _Theme((255, 255, 255), ink, muted, muted, muted), u)
        if tall
        else 0
    )
    masthead = _masthead_colour(rng)
    band = u * rng.randint(10, 14)
    draw.rectangle([0, y, width, y + band], fill=masthead)
    logo = rng.randint(width // 4, width // 2)
    draw.rectangle(
        [(width - logo) // 2, y + band // 3, (width + logo) // 2, y + band * 2 // 3], fill="white"
    )
    y += band + u * 4
    pad = u * 4
    y = _paragraph(
        draw, rng, (pad, y, width - pad, height), ink, u * 7, rng.randint(2, 4)
    )  # headline
    y = _paragraph(draw, rng, (pad, y + u, width // 2, height), muted, u * 3, 1)  # byline
    hero_h = int((width - 2 * pad) * rng.uniform(0.5, 0.66))
    if y + hero_h < height:
        img.paste(_photo(rng, width - 2 * pad, hero_h), (pad, y + u * 2))
        y += hero_h + u * 4
    while y < height - u * 30:
        roll = rng.random()
        if roll < 0.12:  # a subhead in the masthead colour
            y = _paragraph(draw, rng, (pad, y + u * 2, width * 2 // 3, height), masthead, u * 5, 1)
        elif roll < 0.22:  # an inline photo with a caption
            ph = int((width - 2 * pad) * rng.uniform(0.4, 0.6))
            if y + ph + u * 8 > height:
                break
            img.paste(_photo(rng, width - 2 * pad, ph), (pad, y + u * 2))
            y = _paragraph(draw, rng, (pad, y + ph + u * 3, width - pad, height), muted, u * 3, 1)
        elif roll < 0.28:  # an ad slot
            ah = u * rng.randint(20, 35)
            draw.rectangle([pad, y + u * 2, width - pad, y + u * 2 + ah], fill=(238, 238, 238))
            draw.rectangle(
                [width // 2 - u * 8, y + u * 3, width // 2 + u * 8, y + u * 4], fill=muted
            )
            y += ah + u * 4
        else:
            y = _paragraph(
                draw, rng, (pad, y + u * 2, width - pad, height), ink, u * 4, rng.randint(3, 8)
            )
    if tall:  # footer: a band in the masthead colour with link rows
        top = height - u * 26
        draw.rectangle([0, top, width, height], fill=_jitter((30, 30, 30), rng, 10))
        draw.rectangle([0, top, width, top + u], fill=masthead)
        _paragraph(draw, rng, (pad, top + u * 5, width // 2, height), (200, 200, 200), u * 4, 4)
    return img


def _comic(rng: random.Random, size: int) -> Image.Image:
    """A comic: a horizontal strip of 3-4 panels or a 2x2 grid, each with a character and a
    speech bubble; borders, gutters and colours vary."""
    grid = rng.random() < 0.35
    cols, rows = (2, 2) if grid else (rng.choice([3, 4]), 1)
    panel = int(size * rng.uniform(0.7, 1.0))
    gutter = rng.randint(4, 14)
    width, height = cols * panel + (cols + 1) * gutter, rows * panel + (rows + 1) * gutter
    paper = _jitter(rng.choice([(255, 255, 255), (250, 245, 225)]), rng, 4)
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    border = rng.randint(2, 4)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = gutter + c * (panel + gutter), gutter + r * (panel + gutter)
            if rng.random() < 0.5:
                draw.rectangle([x0, y0, x0 + panel, y0 + panel], fill=_rand_colour(rng, 180, 255))
            draw.rectangle([x0, y0, x0 + panel, y0 + panel], outline="black", width=border)
            cx = x0 + rng.randint(panel // 4, panel * 3 // 4)
            cy = y0 + rng.randint(panel // 2, panel * 3 // 4)
            head = rng.randint(panel // 10, panel // 6)
            draw.ellipse(
                [cx - head, cy - head, cx + head, cy + head], fill=paper, outline="black", width=2
            )
            draw.line(
                [cx, cy + head, cx, min(y0 + panel - 4, cy + head * 3)], fill="black", width=2
            )
            bw, bh = rng.randint(panel // 3, panel * 2 // 3), rng.randint(panel // 6, panel // 4)
            bx = x0 + rng.randint(4, max(5, panel - bw - 4))
            by = y0 + rng.randint(4, panel // 8)
            draw.ellipse([bx, by, bx + bw, by + bh], fill="white", outline="black", width=2)
            draw.line([cx, cy - head, bx + bw // 2, by + bh], fill="black", width=1)
            _paragraph(
                draw,
                rng,
                (bx + bw // 5, by + bh // 4, bx + bw * 4 // 5, by + bh * 3 // 4),
                (0, 0, 0),
                max(5, bh // 4),
                2,
            )
    return img


def _draw(labels: tuple[str, ...], rng: random.Random, size: int) -> Image.Image:
    """One image for a label set (see ``render``)."""
    tall = rng.random() < TALL_SHARE
    if "social_media" in labels:
        return _social(rng, size, tall=tall, with_news="news" in labels)
    if "news" in labels:
        return _news(rng, size, tall=tall)
    if "comic_strip" in labels:
        return _comic(rng, size)
    if "tv_cartoon" in labels:
        img = _cartoon(rng, *_square_ish(rng, size, ((4, 3), (16, 9), (1, 1))))
    elif "photo" in labels or "meme" in labels:
        img = _photo(rng, *_square_ish(rng, size, ((1, 1), (4, 3), (3, 4))))
    else:
        raise ValueError(f"unknown demo categories {labels!r}")
    return _meme_captions(img, rng) if "meme" in labels else img


def render(labels: tuple[str, ...], rng: random.Random, size: int = 256) -> Image.Image:
    """Draw one image carrying the visual signature of every label given.

    ``size`` is the base size: photos and memes are about that big, screenshots a phone's width
    (720-1170 px, mostly 1080) and up to 6000 px tall at the default 256.
    """
    unknown = [label for label in labels if label not in CATEGORIES]
    if unknown or not labels:
        raise ValueError(f"unknown demo categories {unknown or labels!r}")
    return _draw(labels, rng, size)


def is_screenshot(labels: tuple[str, ...]) -> bool:
    """Saved as PNG like a real capture (flat colours and text); everything else is a JPEG."""
    return bool({"social_media", "news", "comic_strip"} & set(labels))


def make_demo_chat(
    folder: Path, *, images: int = 240, seed: int = 0, size: int = 256
) -> list[DemoImage]:
    """Write ``images`` demo images and ``labels.csv`` (filename,sender,labels,timestamp) into
    folder. ``size`` is the base size (see ``render``)."""
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
            labels = (first, companion)
        # Each image draws from its own generator, so one image's layout can't shift the next
        # image's choices (and a change to one drawing keeps the rest of the chat the same).
        img = render(labels, random.Random(rng.getrandbits(64)), size)
        if is_screenshot(labels):
            name = f"img_{i:04d}.png"
            # Fast zlib: a 1080x6000 capture would otherwise take most of the generation time.
            img.save(folder / name, compress_level=1)
        else:
            name = f"img_{i:04d}.jpg"
            img.save(folder / name, quality=rng.randint(80, 92))
        ts = start + timedelta(hours=i * 36 + rng.randint(0, 30))
        rows.append(DemoImage(name, sender, labels, ts))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "sender", "labels", "timestamp"])
        for r in rows:
            writer.writerow([r.filename, r.sender, " ".join(r.labels), r.timestamp.isoformat()])
    return rows
