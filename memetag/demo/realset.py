"""A chat-like image set built from real photos and realistic screenshot layouts, offline.

Six categories, one true category per image: ``photo`` (crops of real photographs),
``meme`` (real photos with Impact-style captions, a caption band above, or a two-row
reaction template), ``social_media`` (post cards and tall phone captures of threads with real
text, light and dark), ``news`` (article captures with masthead, serif headline, hero photo and
body text; link-preview cards; print-style columns), ``comic_strip`` (strips, grids and tall
webtoon pages of line-art panels with speech bubbles) and ``tv_cartoon`` (flat-coloured,
outlined frames traced from real photos, with subtitles or a channel logo).

The photos are the ones that ship with installed packages, so nothing is downloaded and every
image can be used lawfully offline: scikit-image's ``data`` module, matplotlib's sample data
and scikit-learn's sample images. Text is set in matplotlib's DejaVu fonts.

Images differ from each other enough that no two are perceptual-hash reposts of each other
(Hamming distance above ``MIN_PHASH_DISTANCE``), so a time split never drops one as a leak.
Deterministic for a given seed. Used by ``memetag demo`` (``memetag.demo.samplechat``),
``bench/label_efficiency.py``, ``bench/active_learning.py`` and the tests. scikit-image is a
development dependency: without it the photos come from scikit-learn and matplotlib alone.
"""

from __future__ import annotations

import csv
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

CATEGORIES = ("meme", "social_media", "comic_strip", "news", "photo", "tv_cartoon")
MIN_PHASH_DISTANCE = 10
_Colour = tuple[int, int, int]

_WORDS = (
    "the a my our your this that every no one some new old last first big small real fake "
    "cat dog wifi monday coffee meeting deadline server printer boss intern weekend pizza "
    "phone laptop update bug release train bus city council mayor storm river festival team "
    "season finale episode game player coach fans crowd price market report study scientists "
    "moon rocket space telescope museum library school exam teacher student garden neighbour "
    "is was will could should never always finally just still already really totally "
    "breaks fixes wins loses opens closes finds misses leaves joins starts ends says asks "
    "announces reveals plans delays cancels approves rejects launches returns explains "
    "today tonight tomorrow again anyway somehow apparently officially quietly suddenly "
    "after before during without because while until since when if and but so or"
).split()
_MEME_LINES = (
    "me when the wifi drops for two seconds",
    "nobody: absolutely nobody: me at 3 am",
    "when the code works on the first try",
    "that moment when you realise it is monday",
    "one does not simply leave a meeting early",
    "they said it would be a quick fix",
    "my last brain cell during the exam",
    "when someone says the deadline moved",
    "i have no idea what i am doing",
    "this is fine",
    "how it started vs how it is going",
    "when the group chat goes silent",
    "me explaining the plot to my cat",
    "trust me i am an engineer",
    "not sure if tired or just monday",
    "and at this point i am too afraid to ask",
    "when the printer finally works",
    "nobody expects the weekend to end",
)
_NAMES = (
    "Kappa",
    "Psi",
    "Omega",
    "Beta",
    "Delta",
    "Sigma",
    "Lambda",
    "Theta",
    "Zeta",
    "Iota",
)
_MASTHEADS = (
    "THE DAILY LEDGER",
    "Morning Herald",
    "CITY TIMES",
    "The Observer Post",
    "NEWS NOW",
    "The Evening Star",
    "Metro Gazette",
)


@dataclass(frozen=True)
class RealImage:
    filename: str
    category: str
    width: int
    height: int


# --- sources -----------------------------------------------------------------------------------


@functools.cache
def _photo_sources() -> tuple[Image.Image, ...]:
    """The real photographs shipped by installed packages, as RGB images."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    try:
        import skimage.data as sk
    except ImportError:  # only scikit-learn's and matplotlib's photos (see _object_sources)
        arrays = list(load_sample_images().images)
    else:
        arrays = [
            sk.astronaut(),
            sk.chelsea(),
            sk.coffee(),
            sk.rocket(),
            sk.stereo_motorcycle()[0],
            sk.hubble_deep_field(),
            sk.retina(),
            sk.immunohistochemistry(),
            sk.camera(),
            sk.moon(),
            sk.coins(),
            sk.clock(),
            *load_sample_images().images,
        ]
    images = [Image.fromarray(np.asarray(a)).convert("RGB") for a in arrays]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        images.append(Image.open(fh).convert("RGB"))
    return tuple(images)


def _object_sources() -> tuple[int, ...]:
    """Indexes of ``_photo_sources`` with objects and clear shapes."""
    return _OBJECT_SOURCES if len(_photo_sources()) > len(_OBJECT_SOURCES) else (0, 1, 2)


@functools.cache
def _font_path(name: str) -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf")


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(name), max(6, int(size)))


# Sources with objects and clear shapes (no star fields, micrographs or textures): the ones a
# drawing or a cartoon frame can be traced from.
_OBJECT_SOURCES = (0, 1, 2, 3, 4, 8, 10, 11, 12, 13, 14)
_COLOUR_OBJECT_SOURCES = (0, 1, 2, 3, 4, 12, 13, 14)


def _photo(
    rng: random.Random,
    width: int,
    height: int,
    *,
    objects_only: bool = False,
    colour_only: bool = False,
) -> Image.Image:
    """A random crop of a real photo (50-100 % of its side), resized to width x height, with a
    little colour and brightness jitter and an occasional mirror. ``objects_only``: a source
    with clear shapes; ``colour_only``: one of those in colour."""
    sources = _photo_sources()
    if colour_only and len(sources) > max(_COLOUR_OBJECT_SOURCES):
        src = sources[rng.choice(_COLOUR_OBJECT_SOURCES)]
    elif objects_only or colour_only:
        src = sources[rng.choice(_object_sources())]
    else:
        src = rng.choice(sources)
    sw, sh = src.size
    aspect = width / height
    frac = rng.uniform(0.5, 1.0)
    cw = min(sw, int(sw * frac), int(sh * frac * aspect))
    ch = min(sh, int(cw / aspect))
    cw, ch = max(cw, 8), max(ch, 8)
    x, y = rng.randint(0, max(0, sw - cw)), rng.randint(0, max(0, sh - ch))
    img = src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    factor = rng.uniform(0.8, 1.2)
    return img.point(lambda v: max(0, min(255, int(v * factor))))


# --- text --------------------------------------------------------------------------------------


def _sentence(rng: random.Random, lo: int = 6, hi: int = 16) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"])


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines


def _text_block(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont,
    width: int,
    fill: _Colour,
    *,
    spacing: float = 1.3,
    max_y: int | None = None,
) -> int:
    """Wrapped text from xy; returns the y below the last line drawn."""
    x, y = xy
    step = int(font.size * spacing)
    for line in _wrap(text, font, width):
        if max_y is not None and y + step > max_y:
            break
        draw.text((x, y), line, font=font, fill=fill)
        y += step
    return y


def _outlined(
    draw: ImageDraw.ImageDraw,
    text: str,
    centre_x: int,
    y: int,
    font: ImageFont.FreeTypeFont,
    width: int,
) -> int:
    """Impact-style white capitals with a black edge, centred; returns the y below."""
    stroke = max(2, font.size // 12)
    for line in _wrap(text.upper(), font, width):
        w = font.getlength(line)
        draw.text(
            (centre_x - w / 2, y),
            line,
            font=font,
            fill="white",
            stroke_width=stroke,
            stroke_fill="black",
        )
        y += int(font.size * 1.1)
    return y


# --- categories --------------------------------------------------------------------------------


def _aspect_size(rng: random.Random, base: int, shapes: tuple[tuple[int, int], ...]) -> tuple:
    aw, ah = rng.choice(shapes)
    scale = rng.uniform(0.8, 1.4)
    if aw >= ah:
        return int(base * scale * aw / ah), int(base * scale)
    return int(base * scale), int(base * scale * ah / aw)


def draw_photo(rng: random.Random) -> Image.Image:
    return _photo(rng, *_aspect_size(rng, 480, ((4, 3), (3, 4), (1, 1), (16, 9), (9, 16))))


def draw_meme(rng: random.Random) -> Image.Image:
    style = rng.random()
    if style < 0.5:  # classic image macro: top and bottom text over the photo
        w, h = _aspect_size(rng, 440, ((1, 1), (4, 3), (3, 4)))
        img = _photo(rng, w, h)
        draw = ImageDraw.Draw(img)
        font = _font("DejaVuSans-Bold", h // rng.randint(9, 12))
        _outlined(draw, rng.choice(_MEME_LINES), w // 2, h // 30, font, int(w * 0.92))
        if rng.random() < 0.85:
            bottom = rng.choice(_MEME_LINES)
            n = len(_wrap(bottom.upper(), font, int(w * 0.92)))
            _outlined(draw, bottom, w // 2, h - h // 25 - int(font.size * 1.1) * n, font, w * 0.92)
        return img
    if style < 0.8:  # a white caption band above the picture
        w = rng.randint(420, 640)
        ph = int(w * rng.uniform(0.6, 1.0))
        font = _font("DejaVuSans", w // rng.randint(16, 22))
        text = rng.choice(_MEME_LINES)
        lines = _wrap(text, font, w - 40)
        band = int(font.size * 1.3) * len(lines) + 40
        img = Image.new("RGB", (w, band + ph), "white")
        draw = ImageDraw.Draw(img)
        _text_block(draw, (20, 20), text, font, w - 40, (0, 0, 0))
        img.paste(_photo(rng, w, ph), (0, band))
        return img
    # two-row reaction template: text left, photo right, twice
    w = rng.randint(480, 640)
    row = w // 2
    img = Image.new("RGB", (w, 2 * row), "white")
    draw = ImageDraw.Draw(img)
    font = _font("DejaVuSans-Bold", w // 20)
    for r in range(2):
        img.paste(_photo(rng, row, row), (row, r * row))
        _text_block(
            draw, (14, r * row + row // 3), rng.choice(_MEME_LINES), font, row - 28, (0, 0, 0)
        )
    return img


@dataclass(frozen=True)
class _Theme:
    page: _Colour
    ink: _Colour
    muted: _Colour
    rule: _Colour
    accent: _Colour


def _social_theme(rng: random.Random) -> _Theme:
    accent = rng.choice([(29, 155, 240), (255, 69, 0), (24, 119, 242), (120, 86, 255)])
    if rng.random() < 0.35:
        return _Theme((0, 0, 0), (231, 233, 234), (113, 118, 123), (47, 51, 54), accent)
    return _Theme((255, 255, 255), (15, 20, 25), (83, 100, 113), (239, 243, 244), accent)


def _post(
    img: Image.Image,
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    y: int,
    width: int,
    t: _Theme,
    u: int,
    *,
    long: bool = False,
) -> int:
    """One post: round photo avatar, bold name, grey handle and time, text, optional photo,
    action counts, a rule. Returns the y below it."""
    pad = u * 2
    av = u * 6
    avatar = _photo(rng, av, av)
    mask = Image.new("L", (av, av), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, av - 1, av - 1], fill=255)
    img.paste(avatar, (pad, y), mask)
    x = pad + av + u * 2
    name = rng.choice(_NAMES)
    bold, regular = _font("DejaVuSans-Bold", u * 2), _font("DejaVuSans", u * 2)
    draw.text((x, y), name, font=bold, fill=t.ink)
    handle = f"@{name.lower()}{rng.randint(1, 999)} · {rng.randint(1, 23)}h"
    draw.text((x + bold.getlength(name) + u, y), handle, font=regular, fill=t.muted)
    text = " ".join(_sentence(rng) for _ in range(rng.randint(4, 9) if long else rng.randint(1, 3)))
    y = _text_block(draw, (x, y + int(u * 2.8)), text, regular, width - x - pad, t.ink)
    if rng.random() < 0.35:
        mw = width - x - pad
        mh = int(mw * rng.uniform(0.5, 0.8))
        img.paste(_photo(rng, mw, mh), (x, y + u))
        y += mh + u * 2
    y += u
    small = _font("DejaVuSans", int(u * 1.6))
    for i, icon in enumerate(("reply", "repost", "like", "share")):
        ix = x + i * (width - x) // 4
        colour = t.accent if icon == "like" and rng.random() < 0.3 else t.muted
        draw.ellipse([ix, y, ix + u * 2, y + u * 2], outline=colour, width=max(1, u // 5))
        if icon != "share":
            draw.text((ix + int(u * 2.6), y), str(rng.randint(0, 9999)), font=small, fill=t.muted)
    y += u * 4
    draw.rectangle([0, y, width, y + max(1, u // 6)], fill=t.rule)
    return y + u * 2


def draw_social(rng: random.Random) -> Image.Image:
    t = _social_theme(rng)
    if rng.random() < 0.35:  # one post cropped to a card
        width = rng.randint(520, 700)
        u = width // 50
        img = Image.new("RGB", (width, width * 3), t.page)
        draw = ImageDraw.Draw(img)
        y = _post(img, draw, rng, u * 2, width, t, u, long=rng.random() < 0.5)
        return img.crop((0, 0, width, y))
    # a tall phone capture: status bar, app bar, a thread, a reply box and a tab bar
    width = rng.choice((540, 585, 640, 720))
    height = int(width * rng.uniform(1.9, 4.2))
    u = width // 48
    img = Image.new("RGB", (width, height), t.page)
    draw = ImageDraw.Draw(img)
    small = _font("DejaVuSans-Bold", int(u * 1.5))
    draw.text((u * 2, u), f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}", font=small, fill=t.ink)
    for i in range(3):
        draw.rectangle([width - u * (9 - 3 * i), u, width - u * (7 - 3 * i), u * 2], fill=t.ink)
    y = u * 4
    draw.text((u * 2, y), "←", font=_font("DejaVuSans-Bold", u * 3), fill=t.ink)
    draw.text(
        (u * 7, y),
        rng.choice(("Post", "Thread", "Home")),
        font=_font("DejaVuSans-Bold", int(u * 2.4)),
        fill=t.ink,
    )
    y += u * 5
    draw.rectangle([0, y, width, y + max(1, u // 6)], fill=t.rule)
    y += u * 2
    footer = u * 11
    first = True
    while y < height - footer - u * 12:
        y = _post(img, draw, rng, y, width, t, u, long=first and rng.random() < 0.5)
        first = False
    top = height - footer
    draw.rectangle([0, top, width, height], fill=t.page)
    draw.rectangle([0, top, width, top + max(1, u // 6)], fill=t.rule)
    draw.rounded_rectangle(
        [u * 2, top + u, width - u * 2, top + u * 4], radius=u * 2, outline=t.rule, width=2
    )
    draw.text(
        (u * 4, top + int(u * 1.6)),
        "Post your reply",
        font=_font("DejaVuSans", int(u * 1.5)),
        fill=t.muted,
    )
    for i in range(5):
        ix = (2 * i + 1) * width // 10 - u
        draw.rectangle(
            [ix, top + u * 6, ix + u * 2, top + u * 8], fill=t.ink if i == 0 else t.muted
        )
    return img


def _headline(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 11))]
    return " ".join(w.capitalize() for w in words)


def draw_news(rng: random.Random) -> Image.Image:
    style = rng.random()
    ink = (rng.randint(0, 30),) * 3
    masthead_colour = rng.choice([(180, 0, 0), (20, 30, 80), (15, 15, 15), (0, 90, 60)])
    if style < 0.25:  # a link-preview card: photo, source, headline
        w = rng.randint(480, 640)
        ph = int(w * 0.52)
        font = _font("DejaVuSerif-Bold", w // 22)
        img = Image.new("RGB", (w, ph + w // 2), (247, 247, 247))
        draw = ImageDraw.Draw(img)
        img.paste(_photo(rng, w, ph), (0, 0))
        site = rng.choice(_MASTHEADS).lower().replace(" ", "") + ".com"
        draw.text((16, ph + 12), site.upper(), font=_font("DejaVuSans", w // 36), fill=(100,) * 3)
        y = _text_block(draw, (16, ph + 12 + w // 22), _headline(rng), font, w - 32, ink)
        y = _text_block(
            draw,
            (16, y + 6),
            _sentence(rng),
            _font("DejaVuSans", w // 34),
            w - 32,
            (90,) * 3,
            max_y=img.height - 8,
        )
        return img.crop((0, 0, w, min(img.height, y + 16)))
    if style < 0.4:  # a print-style page: masthead rule, headline, two columns, a photo
        w = rng.randint(700, 900)
        h = int(w * rng.uniform(1.2, 1.45))
        img = Image.new("RGB", (w, h), (rng.randint(238, 250),) * 2 + (rng.randint(225, 240),))
        draw = ImageDraw.Draw(img)
        mast = _font("DejaVuSerif-Bold", w // 12)
        name = rng.choice(_MASTHEADS)
        draw.text(((w - mast.getlength(name)) / 2, 14), name, font=mast, fill=(10, 10, 10))
        y = 24 + int(mast.size * 1.2)
        draw.rectangle([20, y, w - 20, y + 3], fill=(10, 10, 10))
        y = _text_block(
            draw,
            (24, y + 12),
            _headline(rng),
            _font("DejaVuSerif-Bold", w // 22),
            w - 48,
            (10, 10, 10),
        )
        col = (w - 72) // 2
        ph = int(col * 0.75)
        img.paste(_photo(rng, col, ph).convert("L").convert("RGB"), (24, y + 10))
        body = _font("DejaVuSerif", w // 50)
        text = " ".join(_sentence(rng) for _ in range(40))
        _text_block(draw, (24, y + ph + 20), text, body, col, (30, 30, 30), max_y=h - 20)
        _text_block(
            draw, (48 + col, y + 10), text[::-1].capitalize(), body, col, (30, 30, 30), max_y=h - 20
        )
        return img
    # an article captured on a phone: masthead band, headline, byline, hero photo, body
    width = rng.choice((540, 585, 640, 720))
    height = int(width * rng.uniform(1.8, 4.0))
    u = width // 48
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    band = u * 6
    draw.rectangle([0, 0, width, band], fill=masthead_colour)
    mast = _font("DejaVuSerif-Bold", int(u * 3))
    name = rng.choice(_MASTHEADS)
    draw.text(((width - mast.getlength(name)) / 2, u * 1.4), name, font=mast, fill="white")
    y = band + u * 2
    section = rng.choice(("POLITICS", "SCIENCE", "LOCAL", "BUSINESS", "WORLD", "SPORT"))
    draw.text(
        (u * 2, y), section, font=_font("DejaVuSans-Bold", int(u * 1.4)), fill=masthead_colour
    )
    y += u * 3
    y = _text_block(
        draw, (u * 2, y), _headline(rng), _font("DejaVuSerif-Bold", int(u * 3)), width - u * 4, ink
    )
    byline = f"By {rng.choice(_NAMES)} {rng.choice(_NAMES)}son · {rng.randint(2, 9)} min read"
    draw.text((u * 2, y + u), byline, font=_font("DejaVuSans", int(u * 1.4)), fill=(110,) * 3)
    y += u * 4
    hero = int((width - u * 4) * rng.uniform(0.55, 0.7))
    img.paste(_photo(rng, width - u * 4, hero), (u * 2, y))
    y += hero + u * 3
    body = _font("DejaVuSerif", int(u * 1.8))
    while y < height - u * 8:
        roll = rng.random()
        if roll < 0.12:
            ph = int((width - u * 4) * rng.uniform(0.45, 0.6))
            if y + ph + u * 6 > height:
                break
            img.paste(_photo(rng, width - u * 4, ph), (u * 2, y))
            y += ph + u
            y = (
                _text_block(
                    draw,
                    (u * 2, y),
                    _sentence(rng, 4, 8),
                    _font("DejaVuSans", int(u * 1.3)),
                    width - u * 4,
                    (110,) * 3,
                )
                + u * 2
            )
        elif roll < 0.2:
            ah = u * rng.randint(10, 18)
            draw.rectangle([u * 2, y, width - u * 2, y + ah], fill=(236, 236, 236))
            draw.text(
                (width // 2 - u * 5, y + u),
                "ADVERTISEMENT",
                font=_font("DejaVuSans", u),
                fill=(140,) * 3,
            )
            y += ah + u * 2
        else:
            text = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
            y = (
                _text_block(draw, (u * 2, y), text, body, width - u * 4, ink, max_y=height - u * 6)
                + u
            )
    return img


def _line_art(rng: random.Random, width: int, height: int) -> Image.Image:
    """A panel drawn in ink: the edges of a real photo on paper, sometimes lightly tinted."""
    photo = _photo(rng, width, height, objects_only=True).convert("L")
    photo = photo.filter(ImageFilter.GaussianBlur(1.5))
    edges = photo.filter(ImageFilter.FIND_EDGES).point(lambda v: 0 if v > 12 else 255)
    edges = edges.filter(ImageFilter.MinFilter(3))
    if rng.random() < 0.5:
        tint = Image.new("RGB", (width, height), tuple(rng.randint(200, 255) for _ in range(3)))
        return Image.composite(tint, Image.new("RGB", (width, height), "black"), edges)
    return edges.convert("RGB")


def _bubble(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    pw = x1 - x0
    font = _font(rng.choice(("DejaVuSans", "DejaVuSans-Bold")), max(9, pw // 16))
    text = rng.choice(_MEME_LINES) if rng.random() < 0.5 else _sentence(rng, 3, 8)
    lines = _wrap(text, font, int(pw * 0.7))[:3]
    bh = int(font.size * 1.25) * len(lines) + font.size
    bw = int(max(font.getlength(line) for line in lines)) + font.size * 2
    bx = x0 + rng.randint(4, max(5, pw - bw - 4))
    by = y0 + rng.randint(4, max(5, (y1 - y0) // 6))
    draw.ellipse([bx, by, bx + bw, by + bh], fill="white", outline="black", width=2)
    tail_x = bx + bw // 2
    draw.polygon(
        [
            (tail_x - 6, by + bh - 3),
            (tail_x + 6, by + bh - 3),
            (tail_x + rng.randint(-20, 20), by + bh + 18),
        ],
        fill="white",
        outline="black",
    )
    ty = by + font.size // 2
    for line in lines:
        draw.text((bx + (bw - font.getlength(line)) / 2, ty), line, font=font, fill="black")
        ty += int(font.size * 1.25)


def draw_comic(rng: random.Random) -> Image.Image:
    style = rng.random()
    if style < 0.5:
        cols, rows = rng.choice((3, 4)), 1
    elif style < 0.8:
        cols, rows = 2, 2
    else:
        cols, rows = 1, rng.choice((3, 4))  # a tall webtoon-style page
    panel = rng.randint(200, 300)
    gutter = rng.randint(6, 16)
    width = cols * panel + (cols + 1) * gutter
    height = rows * panel + (rows + 1) * gutter + (30 if rng.random() < 0.5 else 0)
    paper = rng.choice([(255, 255, 255), (250, 245, 228)])
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    top = height - (rows * panel + (rows + 1) * gutter)
    if top:
        draw.text(
            (gutter, 6),
            rng.choice(_MEME_LINES).title(),
            font=_font("DejaVuSans-Bold", 18),
            fill="black",
        )
    for r in range(rows):
        for c in range(cols):
            x0, y0 = gutter + c * (panel + gutter), top + gutter + r * (panel + gutter)
            img.paste(_line_art(rng, panel, panel), (x0, y0))
            draw.rectangle([x0, y0, x0 + panel, y0 + panel], outline="black", width=3)
            if rng.random() < 0.85:
                _bubble(draw, rng, (x0, y0, x0 + panel, y0 + panel))
    return img


def _cartoonize(img: Image.Image, rng: random.Random, *, quick: bool = False) -> Image.Image:
    """Flat colours and bold outlines: smooth, posterise to a small palette, ink the edges.

    ``quick`` smooths and posterises at half size (several times faster, a little blockier)."""
    colours = rng.randint(5, 9)
    if quick:
        # Posterise a smoothed half-size copy, then ink the borders between its flat regions.
        half = img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR)
        half = ImageEnhance.Color(half.filter(ImageFilter.MedianFilter(5))).enhance(1.8)
        flat = half.quantize(colors=colours, method=Image.Quantize.FASTOCTREE).convert("RGB")
        flat = flat.filter(ImageFilter.ModeFilter(5))
        edges = flat.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v else 0)
        size = img.size
        ink = Image.new("RGB", size, "black")
        return Image.composite(
            ink,
            flat.resize(size, Image.Resampling.NEAREST),
            edges.resize(size, Image.Resampling.NEAREST),
        )
    smooth = img.filter(ImageFilter.MedianFilter(7)).filter(ImageFilter.ModeFilter(5))
    flat = smooth.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).convert("RGB")
    enhance = flat.point(lambda v: min(255, int(v * 1.15) + 10))
    edges = (
        smooth.convert("L")
        .filter(ImageFilter.FIND_EDGES)
        .point(lambda v: 255 if v > 28 else 0)
        .filter(ImageFilter.MaxFilter(3))
    )
    return Image.composite(Image.new("RGB", img.size, "black"), enhance, edges)


def draw_cartoon(rng: random.Random, *, quick: bool = False) -> Image.Image:
    """A TV cartoon frame; ``quick`` draws it about 8 times faster (see ``_cartoonize``)."""
    w, h = rng.choice(((640, 360), (704, 396), (576, 432), (640, 480)))
    photo = _photo(rng, w, h, objects_only=True, colour_only=quick)
    img = _cartoonize(photo, rng, quick=quick)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # subtitles
        font = _font("DejaVuSans-Bold", h // 16)
        text = rng.choice(_MEME_LINES).capitalize()
        y = h - h // 14 - font.size
        lw = font.getlength(text)
        draw.text(
            ((w - lw) / 2, y),
            text,
            font=font,
            fill=(255, 255, 90),
            stroke_width=2,
            stroke_fill="black",
        )
    if rng.random() < 0.6:  # a channel logo in the corner
        font = _font("DejaVuSans-Bold", h // 18)
        logo = rng.choice(("FOX", "cc", "adult swim", "TOON", "HD"))
        draw.text((w - font.getlength(logo) - 14, 10), logo, font=font, fill=(255, 255, 255, 160))
    return img


_DRAW: dict[str, Callable[[random.Random], Image.Image]] = {
    "meme": draw_meme,
    "social_media": draw_social,
    "comic_strip": draw_comic,
    "news": draw_news,
    "photo": draw_photo,
    "tv_cartoon": draw_cartoon,
}
# Screenshots and drawings are saved as PNG like real captures; photos and memes as JPEG.
_PNG = frozenset({"social_media", "news", "comic_strip"})


# The public names other modules draw with.
DRAWERS = _DRAW
PNG_CATEGORIES = _PNG


def phash(img: Image.Image) -> int:
    """The image's 64-bit perceptual hash as an int (Hamming distance: ``(a ^ b).bit_count()``)."""
    import imagehash

    return int(str(imagehash.phash(img)), 16)


_phash = phash


def make_real_set(folder: Path, *, per_category: int = 30, seed: int = 0) -> list[RealImage]:
    """Write ``per_category`` images of each category into ``folder`` plus ``truth.csv``
    (filename,category,width,height). Categories are interleaved in a shuffled order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    order = [c for c in CATEGORIES for _ in range(per_category)]
    rng.shuffle(order)
    hashes: list[int] = []
    out: list[RealImage] = []
    for i, category in enumerate(order):
        for _attempt in range(20):
            img = _DRAW[category](random.Random(rng.getrandbits(64)))
            h = _phash(img)
            if all((h ^ other).bit_count() > MIN_PHASH_DISTANCE for other in hashes):
                break
        hashes.append(h)
        if category in _PNG:
            name = f"real_{i:04d}.png"
            img.save(folder / name, compress_level=1)
        else:
            name = f"real_{i:04d}.jpg"
            img.save(folder / name, quality=rng.randint(78, 92))
        out.append(RealImage(name, category, img.width, img.height))
    with open(folder / "truth.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "category", "width", "height"])
        for r in out:
            writer.writerow([r.filename, r.category, r.width, r.height])
    return out


def read_truth(folder: Path) -> list[RealImage]:
    """The images ``make_real_set`` wrote into ``folder``, in order."""
    with open(Path(folder) / "truth.csv", newline="", encoding="utf-8") as fh:
        return [
            RealImage(r["filename"], r["category"], int(r["width"]), int(r["height"]))
            for r in csv.DictReader(fh)
        ]
