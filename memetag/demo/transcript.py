"""The demo's live conversation as a transcript: recorded as it happens, saved as text and PNG.

Each entry is one thing that happened in the channel: a member posting an image (with the bot's
reply, how long it took, and what the image really is), a reaction, a "Fix tags" answer, an
admin's command and what the bot answered, a review post. The PNG shows each image as a
thumbnail beside the bot's words (drawn with Pillow and matplotlib's DejaVu fonts, which have
no colour emoji, so the emoji are left out of the picture; the text file keeps them).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BOT_NAME = "memetag"


@dataclass
class Entry:
    """One thing that happened. ``kind``: phase | post | reaction | fix | command | review (a
    review post by the bot) | tap (a member's answer to it) | note. ``bot`` is what the bot answered (a reply, a picker's answer, a command's result)."""

    kind: str
    who: str = ""
    text: str = ""
    image: Path | None = None
    truth: str | None = None
    bot: str | None = None
    latency_ms: float | None = None
    right: bool | None = None


@dataclass
class Transcript:
    title: str = "memetag demo: the live chat"
    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        return entry

    def phase(self, text: str) -> None:
        self.add(Entry("phase", text=text))

    def note(self, text: str) -> None:
        self.add(Entry("note", text=text))


# --- text --------------------------------------------------------------------------------------


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def entry_lines(entry: Entry) -> list[str]:
    """The entry as plain text lines (what the demo prints as the conversation goes)."""
    if entry.kind == "phase":
        return ["", f"--- {entry.text} ---"]
    if entry.kind == "note":
        return [f"  ({entry.text})"]
    lines: list[str] = []
    if entry.kind == "review":
        what = f" [{entry.truth.replace('_', ' ')}]" if entry.truth else ""
        name = entry.image.name if entry.image else "an image"
        head, *rest = entry.text.splitlines() or [""]
        lines.append(f"{entry.who}: {head} <{name}>{what}")
        lines.extend(f"  {line}" for line in rest)
    elif entry.kind == "post":
        what = f" [{entry.truth.replace('_', ' ')}]" if entry.truth else ""
        name = entry.image.name if entry.image else "an image"
        lines.append(f"{entry.who}: {entry.text or ''}{' ' if entry.text else ''}<{name}>{what}")
    else:
        lines.append(f"{entry.who}: {entry.text}")
    if entry.bot is not None:
        timing = f"  ({entry.latency_ms:.0f} ms)" if entry.latency_ms is not None else ""
        mark = {True: "  ✓", False: "  ✗"}.get(entry.right, "")  # type: ignore[arg-type]
        head = f"  {BOT_NAME}: "
        body = entry.bot.splitlines() or [""]
        lines.append(f"{head}{body[0]}{timing}{mark}")
        lines.extend(_indent("\n".join(body[1:]), " " * len(head)).splitlines() if body[1:] else [])
    return lines


def to_text(transcript: Transcript) -> str:
    lines = [transcript.title, "=" * len(transcript.title)]
    for entry in transcript.entries:
        lines.extend(entry_lines(entry))
    return "\n".join(lines) + "\n"


def write_text(transcript: Transcript, path: Path) -> Path:
    path.write_text(to_text(transcript), encoding="utf-8")
    return path


# --- PNG ---------------------------------------------------------------------------------------

_WIDTH = 1000
_THUMB = 120
_PAD = 14
_TEXT_X = _PAD * 2 + _THUMB
_INK = (32, 34, 37)
_MUTED = (110, 114, 120)
_BOT = (88, 101, 242)
_RIGHT = (35, 134, 54)
_WRONG = (200, 55, 45)
_EMOJI = re.compile("[\u2600-\u27bf\ufe0f\u200d\U0001f000-\U0001faff]")


@functools.cache
def _font(bold: bool, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def plain(text: str) -> str:
    """``text`` without emoji (the fonts have none), spaces tidied."""
    cleaned = _EMOJI.sub("", text).replace("**", "").replace("||", "").replace("`", "")
    cleaned = "".join(c for c in cleaned if unicodedata.category(c) != "Co")
    return re.sub(r"[ \t]+", " ", cleaned.replace(" · ", " · ")).strip()


@dataclass
class _Block:
    lines: list[tuple[str, ImageFont.FreeTypeFont, tuple[int, int, int]]]
    image: Path | None
    rule: bool = False
    thumb: Image.Image | None = None

    def __post_init__(self) -> None:
        if self.image is not None and self.image.exists():
            with Image.open(self.image) as src:
                thumb = src.convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB))
            self.thumb = thumb

    @property
    def height(self) -> int:
        text_h = sum(int(f.size * 1.45) for _, f, _ in self.lines)
        thumb_h = self.thumb.height if self.thumb is not None else 0
        return max(text_h, thumb_h) + _PAD + (10 if self.rule else 0)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Lines of ``text`` no wider than ``width`` pixels in ``font`` (words kept whole)."""
    out: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and font.getlength(trial) > width:
                out.append(line)
                line = word
            else:
                line = trial
        out.append(line)
    return out


def _blocks(transcript: Transcript) -> list[_Block]:
    body, bold, small = _font(False, 15), _font(True, 15), _font(False, 13)
    heading = _font(True, 17)
    width = _WIDTH - _TEXT_X - _PAD
    blocks: list[_Block] = []
    for entry in transcript.entries:
        if entry.kind == "phase":
            blocks.append(_Block([(plain(entry.text), heading, _INK)], None, rule=True))
            continue
        if entry.kind == "note":
            lines = [(t, small, _MUTED) for t in _wrap(plain(entry.text), small, width)]
            blocks.append(_Block(lines, None))
            continue
        lines = []
        what = f"   (really: {entry.truth.replace('_', ' ')})" if entry.truth else ""
        said = plain(entry.text).splitlines() or [""]
        first_line = f"{entry.who}: {said[0]}" if said[0] else entry.who
        for i, piece in enumerate(_wrap(first_line + what, bold, width)):
            lines.append(("  " * bool(i) + piece, bold, _INK))
        for extra in said[1:]:
            lines.extend((piece, body, _INK) for piece in _wrap(extra, body, width))
        if entry.bot is not None:
            colour = {True: _RIGHT, False: _WRONG}.get(entry.right, _BOT)  # type: ignore[arg-type]
            first = True
            indent = body.getlength(f"{BOT_NAME}: ")
            for line in plain(entry.bot).splitlines():
                for piece in _wrap(line, body, int(width - indent)):
                    prefix = f"{BOT_NAME}: " if first else "    "
                    lines.append((prefix + piece, body, colour))
                    first = False
            if entry.latency_ms is not None:
                lines.append((f"tagged in {entry.latency_ms:.0f} ms", small, _MUTED))
        blocks.append(_Block(lines, entry.image))
    return blocks


def render_png(
    transcript: Transcript, path: Path, *, max_height: int = 20000, palette: bool = False
) -> Path:
    """Draw the transcript: thumbnails on the left, who said what and the bot's answer beside.
    ``palette`` saves 256 colours (a third of the bytes; for pictures committed to docs)."""
    blocks = _blocks(transcript)
    title = _font(True, 22)
    height = _PAD * 3 + title.size + sum(b.height for b in blocks)
    height = min(height, max_height)
    img = Image.new("RGB", (_WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((_PAD, _PAD), plain(transcript.title), font=title, fill=_INK)
    y = _PAD * 2 + title.size
    for block in blocks:
        if y + block.height > height:
            break
        bottom = y + block.height
        if block.rule:
            draw.line([(_PAD, y + 4), (_WIDTH - _PAD, y + 4)], fill=(220, 222, 226), width=1)
            y += 10
        if block.thumb is not None:
            thumb = block.thumb
            x = _PAD + (_THUMB - thumb.width) // 2
            img.paste(thumb, (x, y))
            draw.rectangle(
                [x - 1, y - 1, x + thumb.width, y + thumb.height], outline=(210, 212, 216)
            )
        ty = y
        for text, font, colour in block.lines:
            draw.text((_TEXT_X, ty), text, font=font, fill=colour)
            ty += int(font.size * 1.45)
        y = bottom
    if palette:
        img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(path, optimize=True)
    return path


def excerpt(transcript: Transcript, per_phase: int = 3) -> Transcript:
    """A shorter transcript for the README picture: every phase header and at most
    ``per_phase`` entries after each, one of each kind first (a reaction and a "Fix tags")."""
    out = Transcript(transcript.title)
    phases: list[tuple[Entry | None, list[Entry]]] = [(None, [])]
    for entry in transcript.entries:
        if entry.kind == "phase":
            phases.append((entry, []))
        else:
            phases[-1][1].append(entry)
    for head, entries in phases:
        if head is not None:
            out.add(head)
        chosen: list[int] = []
        for i, entry in enumerate(entries):
            if len(chosen) < per_phase and entry.kind not in {entries[j].kind for j in chosen}:
                chosen.append(i)
        for i in range(len(entries)):
            if len(chosen) < per_phase and i not in chosen:
                chosen.append(i)
        for i in sorted(chosen):
            out.add(entries[i])
    return out
