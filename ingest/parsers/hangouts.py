"""Google Takeout Hangouts.json parser (both layouts), streaming conversation by conversation."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from ingest.errors import ParseError
from ingest.parsers._jsonstream import JsonCursor, UnreadableValue, clean_text
from ingest.parsers.base import ParsedPost, ParseStats

log = logging.getLogger(__name__)

SOURCE = "hangouts"
# Owner of Google's built-in sticker set: the same id shows up in unrelated users' exports.
STICKER_OWNER_ID = "108618507921641169817"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_HANGOUTS = (
    "not a Hangouts export: expected a top-level 'conversations' or 'conversation_state' list"
)
# Keys a Hangouts file may carry before its conversation list (old dumps only).
_PREAMBLE_KEYS = frozenset({"continuation_end_timestamp"})
# Hosts whose links are certainly pages, not images; everything else is left to byte sniffing.
_NON_IMAGE_HOSTS = frozenset(
    {"maps.google.com", "goo.gl", "maps.app.goo.gl", "hangouts.google.com"}
)


@dataclass(frozen=True)
class ConversationSummary:
    """One conversation as :func:`list_conversations` reports it."""

    id: str
    name: str
    type: str | None
    participants: tuple[str, ...]
    messages: int
    images: int


@dataclass
class _Conversation:
    id: str | None
    name: str | None
    type: str | None
    names: dict[str, str]  # gaia_id / chat_id -> fallback_name
    participants: tuple[str, ...]
    group_name: str | None = None  # the group's own name, for filtering

    @classmethod
    def from_header(cls, conv: Any, conv_id: Any) -> _Conversation:
        """Build from the inner ``conversation`` object (same shape in both layouts)."""
        if not isinstance(conv, dict):
            conv = {}
        cid = clean_text(_dig(conv_id, "id")) or clean_text(_dig(conv, "id", "id"))
        names: dict[str, str] = {}
        participants: list[str] = []
        pdata = conv.get("participant_data")
        for p in pdata if isinstance(pdata, list) else ():
            if not isinstance(p, dict):
                continue
            gaia = clean_text(_dig(p, "id", "gaia_id"))
            chat = clean_text(_dig(p, "id", "chat_id"))
            # Absent for some PENDING_INVITATION users: fall back to the id, as public parsers do.
            name = clean_text(p.get("fallback_name")) or gaia or chat
            if name is None:
                continue
            participants.append(name)
            for key in (gaia, chat):
                if key and key not in names:
                    names[key] = name
        group_name = clean_text(conv.get("name")) or None
        display = group_name or ", ".join(participants) or cid
        return cls(
            id=cid,
            name=display,
            type=clean_text(conv.get("type")),
            names=names,
            participants=tuple(participants),
            group_name=group_name,
        )


def _shown(value: Any) -> str:
    """A short printable form of a raw value, for bad-record descriptions."""
    text = clean_text(value)
    return repr(text if text is not None else value)[:80]


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _types(embed: dict) -> list[str]:
    kinds = embed.get("type")
    if isinstance(kinds, str):
        return [kinds]
    return [k for k in kinds if isinstance(k, str)] if isinstance(kinds, list) else []


def parse_timestamp(value: Any) -> datetime | None:
    """Microseconds-since-epoch string -> aware UTC datetime (exact integer arithmetic)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(value))
    except (ValueError, OverflowError):
        return None


def unwrap_redirect(url: str) -> str:
    """``https://www.google.com/url?q=<target>&...`` -> ``<target>``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = (parts.hostname or "").lower()
    if parts.path == "/url" and (host == "google.com" or host.startswith("www.google.")):
        query = parse_qs(parts.query)
        for key in ("q", "url"):
            target = query.get(key)
            if target and target[0].startswith(("http://", "https://")):
                return target[0]
    return url


def _link_skip_reason(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "link_invalid"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return "link_not_http"
    if host in _NON_IMAGE_HOSTS or (
        host.startswith(("www.google.", "google.")) and parts.path.startswith("/maps")
    ):
        return "link_maps"
    return None


_NO_POSTS: list[ParsedPost] = []  # shared, never mutated
_NO_LINKS: list[Any] = []


class _EventReader:
    """Turns one event into ParsedPosts; holds what stays the same across a conversation."""

    def __init__(self, conv: _Conversation, stats: ParseStats, skip_stickers: bool) -> None:
        self.conv = conv
        self.stats = stats
        self.skip_stickers = skip_stickers

    def posts(self, event: Any) -> list[ParsedPost]:
        # The hot path (~1 call per event): plain text messages leave after a few lookups.
        try:
            content = event["chat_message"]["message_content"]
            attachments = content.get("attachment")
            segments = content.get("segment")
        except (KeyError, TypeError, AttributeError):
            return self._odd_event(event)
        self.stats.messages += 1
        links = _NO_LINKS
        if segments:
            try:
                for segment in segments:
                    if segment.get("type") == "LINK":
                        links = [
                            s for s in segments if isinstance(s, dict) and s.get("type") == "LINK"
                        ]
                        break
            except (AttributeError, TypeError):  # odd segments: keep the well-formed LINKs
                links = (
                    [s for s in segments if isinstance(s, dict) and s.get("type") == "LINK"]
                    if isinstance(segments, list)
                    else _NO_LINKS
                )
        if not attachments and not links:
            return _NO_POSTS
        try:
            return self._items(event, attachments if isinstance(attachments, list) else [], links)
        except (AttributeError, TypeError, ValueError) as exc:
            self.stats.bad(f"event {_shown(event.get('event_id'))}: malformed ({exc})")
            return _NO_POSTS

    def _odd_event(self, event: Any) -> list[ParsedPost]:
        """An event without the usual chat_message.message_content shape."""
        if isinstance(event, UnreadableValue):
            self.stats.bad(f"conversation {self.conv.id}: event {event}")
        elif not isinstance(event, dict):
            self.stats.bad(f"conversation {self.conv.id}: an event is not an object")
        elif event.get("chat_message") is not None:  # a message, but one with no content
            self.stats.messages += 1
        # else: HANGOUT_EVENT, ADD_USER, RENAME_CONVERSATION...: not a message
        return _NO_POSTS

    def _items(self, event: dict, attachments: list, links: list) -> list[ParsedPost]:
        event_id = clean_text(event.get("event_id"))
        if not event_id:
            self.stats.bad(f"conversation {self.conv.id}: a message with images has no event_id")
            return []
        posted_at = parse_timestamp(event.get("timestamp"))
        if posted_at is None:
            self.stats.bad(
                f"event {event_id}: unparseable timestamp {_shown(event.get('timestamp'))}"
            )
        sender = clean_text(_dig(event, "sender_id", "gaia_id")) or clean_text(
            _dig(event, "sender_id", "chat_id")
        )
        conv = self.conv
        conv_id = conv.id or clean_text(_dig(event, "conversation_id", "id"))

        def post(
            n: int, url: str, hint: str, fallbacks: tuple[str, ...] = (), sniff: bool = False
        ) -> ParsedPost:
            return ParsedPost(
                source=SOURCE,
                source_id=f"{event_id}:{n}",
                conversation_id=conv_id,
                conversation_name=conv.name,
                author_ref=sender,
                author_name=conv.names.get(sender, sender) if sender else None,
                posted_at=posted_at,
                url=url,
                media_hint=hint,
                must_sniff=sniff,
                fallback_urls=fallbacks,
            )

        out: list[ParsedPost] = []
        # n numbers every attachment, then every LINK segment: stable whatever gets skipped
        for n, attachment in enumerate(attachments):
            embed = attachment.get("embed_item") if isinstance(attachment, dict) else None
            if not isinstance(embed, dict):
                self.stats.skipped["attachment_without_embed"] += 1
                continue
            kinds = _types(embed)
            if "PLUS_PHOTO" not in kinds:
                self.stats.skipped[_other_kind(kinds)] += 1
                continue
            photo = embed.get("plus_photo") or embed.get("embeds.PlusPhoto.plus_photo")
            if not isinstance(photo, dict):
                self.stats.bad(f"event {event_id}: PLUS_PHOTO without plus_photo data")
                continue
            media_type = clean_text(photo.get("media_type")) or "PHOTO"
            if media_type == "VIDEO":
                self.stats.skipped["video"] += 1
                continue
            thumb = photo.get("thumbnail")
            thumb = thumb if isinstance(thumb, dict) else {}
            if self.skip_stickers and (
                photo.get("owner_obfuscated_id") == STICKER_OWNER_ID or not thumb.get("url")
            ):
                self.stats.skipped["sticker"] += 1
                continue
            # best first; never thumbnail.url (a dead Google+ album page, not an image)
            urls: list[str] = []
            for candidate in (
                photo.get("url"),
                thumb.get("image_url"),
                photo.get("original_content_url"),
            ):
                url = clean_text(candidate)
                if url and url not in urls:
                    urls.append(url)
            if not urls:
                self.stats.bad(f"event {event_id}: photo {n} has no usable URL")
                continue
            out.append(post(n, urls[0], media_type, tuple(urls[1:])))
        for n, segment in enumerate(links, start=len(attachments)):
            target = clean_text(_dig(segment, "link_data", "link_target")) or clean_text(
                segment.get("text")
            )
            if not target:
                self.stats.skipped["link_empty"] += 1
                continue
            target = unwrap_redirect(target.strip())
            reason = _link_skip_reason(target)
            if reason:
                self.stats.skipped[reason] += 1
                continue
            out.append(post(n, target, "LINK", sniff=True))
        self.stats.image_items += len(out)
        return out


def _other_kind(kinds: list[str]) -> str:
    if "PLUS_AUDIO_V2" in kinds:
        return "voicemail"
    if "PLACE_V2" in kinds:
        return "place"
    if "THING_V2" in kinds or "THING" in kinds:
        return "thing"
    return "other_attachment"


# -- walking the file ----------------------------------------------------------------------


def _iter_conversations(
    cur: JsonCursor, stats: ParseStats | None
) -> Iterator[tuple[_Conversation, Iterator[Any]]]:
    """Yield (conversation, its events) in file order, for either layout.

    The events iterator must be consumed before asking for the next conversation (whatever is
    left is drained). The header is always complete before its events in real files; if a file
    had them the other way round, events are read with an empty header (no names).
    """
    if cur.peek() != "{":
        raise cur.error(_NOT_HANGOUTS)
    layout = None
    for key in cur.iter_object():
        # Every copy of the key is read: a JSON object with a key twice is legal to stream, and
        # json.load would silently keep only the last one.
        if key in ("conversations", "conversation_state"):
            if layout is not None:
                log.warning("%s: more than one %r list; reading each of them", cur.file, key)
            layout = key
            if cur.peek() != "[":
                raise cur.error(_NOT_HANGOUTS)
            for _ in cur.iter_array():
                if cur.peek() != "{":
                    if stats is not None:
                        stats.bad("a conversation entry is not an object")
                    cur.skip_value()
                    continue
                reader = _new_layout_item if key == "conversations" else _old_layout_item
                yield from reader(cur)
        elif layout is None and key not in _PREAMBLE_KEYS:
            raise cur.error(_NOT_HANGOUTS)
        else:
            cur.skip_value()
    if layout is None:
        raise cur.error(_NOT_HANGOUTS)
    cur.expect_end()


def _new_layout_item(cur: JsonCursor) -> Iterator[tuple[_Conversation, Iterator[Any]]]:
    """``{"conversation": {"conversation_id", "conversation": {...}}, "events": [...]}``."""
    conv: _Conversation | None = None
    for key in cur.iter_object():
        if key == "conversation":
            header = cur.read_value()
            conv = _Conversation.from_header(
                _dig(header, "conversation"), _dig(header, "conversation_id")
            )
        elif key == "events" and cur.peek() == "[":
            events = cur.iter_values()
            yield conv or _Conversation.from_header(None, None), events
            for _ in events:
                pass
        else:
            cur.skip_value()


def _old_layout_item(cur: JsonCursor) -> Iterator[tuple[_Conversation, Iterator[Any]]]:
    """``{"conversation_id", "response_header"?, "conversation_state": {"conversation", "event": [...]}}``."""
    outer_id: Any = None
    for key in cur.iter_object():
        if key == "conversation_id":
            outer_id = cur.read_value()
        elif key == "conversation_state" and cur.peek() == "{":
            conv: _Conversation | None = None
            inner_id: Any = None
            for inner in cur.iter_object():
                if inner == "conversation_id":
                    inner_id = cur.read_value()
                elif inner == "conversation":
                    conv = _Conversation.from_header(cur.read_value(), inner_id or outer_id)
                elif inner == "event" and cur.peek() == "[":
                    events = cur.iter_values()
                    yield conv or _Conversation.from_header(None, inner_id or outer_id), events
                    for _ in events:
                        pass
                else:
                    cur.skip_value()
        else:
            cur.skip_value()


def _selected(conv: _Conversation, wanted: Collection[str] | None) -> bool:
    if wanted is None:
        return True
    return (conv.id is not None and conv.id in wanted) or any(
        n in wanted for n in (conv.group_name, conv.name) if n
    )


def _guard(file: str, gen: Iterator[Any]) -> Iterator[Any]:
    """Re-raise deep-nesting failures as ParseError (the walker recurses on nested values)."""
    try:
        yield from gen
    except RecursionError:
        raise ParseError(file, "JSON nested too deeply") from None


def iter_posts(
    stream: BinaryIO,
    *,
    file: str,
    stats: ParseStats,
    conversations: Collection[str] | None = None,
    skip_stickers: bool = True,
) -> Iterator[ParsedPost]:
    """Yield one ParsedPost per image item (PLUS_PHOTO attachment or LINK segment).

    Args:
        stream: the Hangouts.json bytes (any binary stream; read once, front to back).
        file: the name used in errors.
        conversations: keep only conversations whose id or name is in this collection.
        skip_stickers: drop Google's built-in stickers (counted as ``skipped["sticker"]``).

    Raises:
        ParseError: the file is not JSON, is truncated, or is not a Hangouts export.
    """
    wanted = set(conversations) if conversations is not None else None
    cur = JsonCursor(stream, file=file)
    for conv, events in _guard(file, _iter_conversations(cur, stats)):
        if not _selected(conv, wanted):
            continue  # the walker drains the skipped events
        stats.selected_conversations.update(n for n in (conv.id, conv.group_name, conv.name) if n)
        reader = _EventReader(conv, stats, skip_stickers)
        for event in events:
            posts = reader.posts(event)
            if posts:
                yield from posts


def list_conversations(stream: BinaryIO, *, file: str) -> list[ConversationSummary]:
    """Every conversation with its participants and message/image counts (one streaming pass)."""
    out: list[ConversationSummary] = []
    cur = JsonCursor(stream, file=file)
    for conv, events in _guard(file, _iter_conversations(cur, None)):
        stats = ParseStats()
        reader = _EventReader(conv, stats, skip_stickers=True)
        for event in events:
            reader.posts(event)
        out.append(
            ConversationSummary(
                id=conv.id or "",
                name=conv.name or conv.id or "",
                type=conv.type,
                participants=conv.participants,
                messages=stats.messages,
                images=stats.image_items,
            )
        )
    return out
