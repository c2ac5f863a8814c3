"""DiscordChatExporter (DCE) JSON parser: one channel file, messages streamed one by one."""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

from ingest.errors import ParseError
from ingest.parsers._jsonstream import JsonCursor, UnreadableValue, clean_text
from ingest.parsers.base import ParsedPost, ParseStats, as_utc

log = logging.getLogger(__name__)

SOURCE = "discord"
# DCE's Attachment.IsImage list
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
VIDEO_EXTENSIONS = frozenset({".gifv", ".mp4", ".webm", ".mov"})
# Lottie stickers are JSON animations, not images; PngAnimated is the pre-2.3x name of Apng.
STICKER_IMAGE_FORMATS = frozenset({"png", "apng", "gif", "pnganimated"})
_NOT_DCE = (
    "not a DiscordChatExporter JSON export: expected a top-level object starting with 'guild'"
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ABSOLUTE = re.compile(r"^(?:/|[A-Za-z]:/)")


def parse_iso(value: Any) -> datetime | None:
    """ISO-8601 with any fraction length and offset (``…25.25+00:00``) -> aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return as_utc(parsed)  # DCE always writes an offset; a bare time is taken as UTC


def resolve_asset(base_dir: str, ref: str) -> tuple[str | None, str | None]:
    """Split a DCE asset reference into (url, local member path); both None if unusable.

    ``--media`` exports replace URLs by paths relative to the JSON's folder, written with the
    exporting machine's separator (``\\`` on Windows). Paths that are absolute or climb out of
    the export cannot be read from it.
    """
    ref = ref.strip()
    if not ref:
        return None, None
    if _URL.match(ref):
        return (ref, None) if ref.lower().startswith(("http://", "https://")) else (None, None)
    path = ref.replace("\\", "/")
    if _ABSOLUTE.match(path):
        return None, None
    member = (
        posixpath.normpath(posixpath.join(base_dir, path)) if base_dir else posixpath.normpath(path)
    )
    if member == ".." or member.startswith("../") or member == ".":
        return None, None
    return None, member


def _ext(name: str) -> str:
    return posixpath.splitext(name.lower())[1]


class _MessageReader:
    def __init__(self, file: str, base_dir: str, stats: ParseStats) -> None:
        self.file = file
        self.base_dir = base_dir.strip("/")
        self.stats = stats
        self.conversation_id: str | None = None
        self.conversation_name: str | None = None

    def set_header(self, guild: Any, channel: Any) -> None:
        guild = guild if isinstance(guild, dict) else {}
        channel = channel if isinstance(channel, dict) else {}
        self.conversation_id = clean_text(channel.get("id"))
        names = [clean_text(guild.get("name")), clean_text(channel.get("name"))]
        self.conversation_name = " / ".join(n for n in names if n) or None

    def posts(self, message: Any) -> list[ParsedPost]:
        self.stats.messages += 1
        if isinstance(message, UnreadableValue):
            self.stats.bad(f"{self.file}: message {message}")
            return []
        if not isinstance(message, dict):
            self.stats.bad(f"{self.file}: a message is not an object")
            return []
        attachments = message.get("attachments")
        embeds = message.get("embeds")
        stickers = message.get("stickers")  # absent before DCE 2.33
        if not attachments and not embeds and not stickers:
            return []
        try:
            return self._items(message, attachments, embeds, stickers)
        except (AttributeError, TypeError, ValueError) as exc:
            self.stats.bad(f"message {clean_text(message.get('id'))!r}: malformed ({exc})")
            return []

    def _items(
        self, message: dict, attachments: Any, embeds: Any, stickers: Any
    ) -> list[ParsedPost]:
        message_id = clean_text(message.get("id"))
        if not message_id:
            self.stats.bad(f"{self.file}: a message with attachments has no id")
            return []
        posted_at = parse_iso(message.get("timestamp"))
        if posted_at is None:
            self.stats.bad(
                f"message {message_id}: unparseable timestamp {clean_text(message.get('timestamp'))!r}"
            )
        author = message.get("author")
        author = author if isinstance(author, dict) else {}
        author_ref = clean_text(author.get("id"))
        # nickname falls back to the display name; older exports have no nickname at all
        author_name = clean_text(author.get("nickname")) or clean_text(author.get("name"))
        reactions = message.get("reactions")
        reaction_count = 0
        for reaction in reactions if isinstance(reactions, list) else ():
            count = reaction.get("count") if isinstance(reaction, dict) else None
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                reaction_count += count

        out: list[ParsedPost] = []
        n = 0

        def add(ref: Any, hint: str, *, sniff: bool = False, fallback: Any = None) -> None:
            url, local = resolve_asset(self.base_dir, clean_text(ref) or "")
            fallbacks = tuple(
                u for u in (clean_text(fallback),) if u and u != url and _URL.match(u)
            )
            if url is None and local is None:
                if fallbacks:
                    url, fallbacks = fallbacks[0], ()
                else:
                    self.stats.skipped["media_outside_export"] += 1
                    return
            out.append(
                ParsedPost(
                    source=SOURCE,
                    source_id=f"{message_id}:{n}",
                    conversation_id=self.conversation_id,
                    conversation_name=self.conversation_name,
                    author_ref=author_ref,
                    author_name=author_name,
                    posted_at=posted_at,
                    url=url,
                    local_ref=local,
                    media_hint=hint,
                    must_sniff=sniff,
                    reaction_count=reaction_count,
                    fallback_urls=fallbacks,
                )
            )

        # n numbers attachments, then embed images, then stickers, in file order
        for attachment in attachments if isinstance(attachments, list) else ():
            name = clean_text(attachment.get("fileName")) if isinstance(attachment, dict) else None
            ext = _ext(name or "")
            if ext in IMAGE_EXTENSIONS:  # SPOILER_ images included: only the name differs
                add(attachment.get("url"), "attachment")
            else:
                self.stats.skipped["video" if ext in VIDEO_EXTENSIONS else "not_image"] += 1
            n += 1
        for embed in embeds if isinstance(embeds, list) else ():
            for image in _embed_images(embed):
                add(image.get("url"), "embed", sniff=True, fallback=image.get("canonicalUrl"))
                n += 1
        for sticker in stickers if isinstance(stickers, list) else ():
            fmt = clean_text(sticker.get("format")) if isinstance(sticker, dict) else None
            if fmt and fmt.lower() in STICKER_IMAGE_FORMATS:
                add(sticker.get("sourceUrl"), "sticker")
            else:
                self.stats.skipped["sticker_lottie" if fmt == "Lottie" else "sticker_unknown"] += 1
            n += 1
        self.stats.image_items += len(out)
        return out


def _embed_images(embed: Any) -> list[dict]:
    """The images of one embed, best first: ``image``, then ``images[]``, else ``thumbnail``."""
    if not isinstance(embed, dict):
        return []
    found: list[dict] = []
    seen: set[str] = set()
    candidates = [embed.get("image")]
    images = embed.get("images")
    if isinstance(images, list):
        candidates.extend(images)
    for image in candidates:
        if isinstance(image, dict):
            key = clean_text(image.get("canonicalUrl")) or clean_text(image.get("url"))
            if key and key not in seen:
                seen.add(key)
                found.append(image)
    if not found:
        thumb = embed.get("thumbnail")
        if isinstance(thumb, dict) and (thumb.get("url") or thumb.get("canonicalUrl")):
            found.append(thumb)
    return found


def iter_posts(
    stream: BinaryIO, *, file: str, base_dir: str, stats: ParseStats
) -> Iterator[ParsedPost]:
    """Yield one ParsedPost per image attachment, embed image and image sticker.

    Args:
        stream: one DCE channel JSON (read once, front to back).
        file: the name used in errors.
        base_dir: the JSON's folder as a member path ('' at the root): ``--media`` paths are
            relative to it.

    Raises:
        ParseError: the file is not JSON, is truncated, or is not a DCE export.
    """
    cur = JsonCursor(stream, file=file)
    if cur.peek() != "{":
        raise cur.error(_NOT_DCE)
    reader = _MessageReader(file, base_dir, stats)
    guild: Any = None
    channel: Any = None
    first = True
    try:
        for key in cur.iter_object():
            if first and key != "guild":
                raise cur.error(_NOT_DCE)
            first = False
            if key == "guild":
                guild = cur.read_value()
            elif key == "channel":
                channel = cur.read_value()
            elif key == "messages" and cur.peek() == "[":
                reader.set_header(guild, channel)
                for message in cur.iter_values():
                    posts = reader.posts(message)
                    if posts:
                        yield from posts
            else:
                cur.skip_value()
        if first:
            raise cur.error(_NOT_DCE)
        cur.expect_end()
    except RecursionError:
        raise ParseError(file, "JSON nested too deeply") from None
