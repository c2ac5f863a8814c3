"""Google Takeout Google Chat parser: every Groups/*/messages.json, attachments found beside it."""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ingest.archive import ExportSource
from ingest.errors import ParseError
from ingest.parsers._jsonstream import JsonCursor, UnreadableValue, clean_text
from ingest.parsers.base import ParsedPost, ParseStats, as_utc

log = logging.getLogger(__name__)

SOURCE = "gchat"
MESSAGES_GLOB = "**/Groups/*/messages.json"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".heic"})
_GROUP_INFO_MAX = 16 << 20
# Characters Takeout replaces by '_' in file names (the rule public parsers apply).
_ILLEGAL = re.compile(r'[%?<>"|*/\\:]')
_STEM_CAP = 47  # "another undocumented fact": Takeout keeps 47 characters of the stem
_NAME_CAP = 51  # the other public reading: 51 characters for the whole name
_MONTHS = {
    m: i
    for i, m in enumerate(
        "january february march april may june july august september october november december".split(),
        start=1,
    )
}
_MONTHS.update({name[:3]: i for name, i in list(_MONTHS.items())})
_TIME = r"(?P<H>\d{1,2}):(?P<M>\d{2}):(?P<S>\d{2})(?: (?P<ampm>[AaPp]\.?[Mm]\.?))? (?P<tz>UTC|GMT)"
_DATE_FORMS = [
    # "Sunday, April 19, 2015 at 11:11:30 PM UTC" and its 24-hour form
    re.compile(
        r"^(?:\w+, )?(?P<mon>[A-Za-z]+)\.? (?P<d>\d{1,2}), (?P<y>\d{4}),? (?:at )?" + _TIME + "$"
    ),
    # "Tuesday, 14 March 2021 at 22:41:03 UTC"
    re.compile(
        r"^(?:\w+, )?(?P<d>\d{1,2}) (?P<mon>[A-Za-z]+)\.?,? (?P<y>\d{4}),? (?:at )?" + _TIME + "$"
    ),
]
_SPACES = re.compile(r"[\s\u202f\u00a0\u2009]+")


def parse_created_date(value: Any) -> datetime | None:
    """Parse a Takeout ``created_date`` (English prose, 12- or 24-hour, UTC) to aware UTC.

    U+202F / U+00A0 (newer exports put U+202F before AM/PM) become plain spaces first.
    Localized forms (e.g. Hungarian) return None.
    """
    raw = clean_text(value)  # the cursor hands out latin-1 views of the UTF-8 bytes
    if raw is None:
        return None
    text = _SPACES.sub(" ", raw).strip()
    for form in _DATE_FORMS:
        m = form.match(text)
        if not m:
            continue
        month = _MONTHS.get(m["mon"].lower())
        if month is None:
            return None
        hour = int(m["H"])
        ampm = (m["ampm"] or "").replace(".", "").upper()
        if ampm:
            if not 1 <= hour <= 12:
                return None
            hour = hour % 12 + (12 if ampm == "PM" else 0)
        try:
            return datetime(
                int(m["y"]), month, int(m["d"]), hour, int(m["M"]), int(m["S"]), tzinfo=UTC
            )
        except ValueError:
            return None
    try:  # not seen in real exports, but cheap to accept
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return as_utc(parsed)


def export_file_name(name: str) -> str:
    """The on-disk name Takeout gives an attachment name, before any ``(n)`` suffix.

    Illegal characters become ``_`` and the stem is cut to 47 characters, extension kept.
    """
    name = _ILLEGAL.sub("_", name)
    stem, ext = posixpath.splitext(name)
    return stem[:_STEM_CAP] + ext


def _with_suffix(name: str, n: int) -> str:
    if n == 0:
        return name
    stem, ext = posixpath.splitext(name)
    return f"{stem}({n}){ext}"


def _alternatives(raw: str, n: int) -> list[str]:
    """Other spellings seen in the wild, tried when the main rule names no existing file:
    the name untruncated, and the name capped at 51 characters in all (extension kept)."""
    name = _ILLEGAL.sub("_", raw)
    out = [_with_suffix(name, n)]
    if len(name) > _NAME_CAP:
        stem, ext = posixpath.splitext(name)
        out.append(_with_suffix(stem[: max(0, _NAME_CAP - len(ext))] + ext, n))
    return out


class _Group:
    """One Groups/<name>/ folder: its name, and per-folder counters for the (n) suffix rule."""

    def __init__(self, source: ExportSource, messages_member: str, stats: ParseStats) -> None:
        self.source = source
        self.folder = posixpath.dirname(messages_member)
        self.id = posixpath.basename(self.folder)
        self.name = self._read_name(stats)
        self.seen: Counter[str] = Counter()

    def _read_name(self, stats: ParseStats) -> str:
        member = f"{self.folder}/group_info.json"
        if not self.source.exists(member):
            return self.id
        try:
            # latin-1, like the cursor: clean_text() below expects its views of UTF-8 bytes
            info = json.loads(self.source.read_bytes(member, _GROUP_INFO_MAX).decode("latin-1"))
        except (ValueError, ParseError) as exc:
            stats.bad(f"{member}: unreadable group_info.json ({exc})")
            return self.id
        if not isinstance(info, dict):
            return self.id
        name = clean_text(info.get("name"))
        if name:
            return name
        members = info.get("members")  # DMs have no name: use the members'
        names = (
            [clean_text(m.get("name")) for m in members if isinstance(m, dict)]
            if isinstance(members, list)
            else []
        )
        return ", ".join(n for n in names if n) or self.id

    def resolve(self, attachment: dict) -> str | None:
        """The member path of an attachment's file (counted even when it does not exist)."""
        raw = clean_text(attachment.get("export_name")) or clean_text(
            attachment.get("original_name")
        )
        if not raw:
            return None
        name = export_file_name(raw)
        n = self.seen[name]
        self.seen[name] += 1
        primary = f"{self.folder}/{_with_suffix(name, n)}"
        if self.source.exists(primary):
            return primary
        fallbacks = _alternatives(raw, n)
        original = clean_text(attachment.get("original_name"))
        if original:
            fallbacks.append(export_file_name(original))
        for candidate in fallbacks:
            member = f"{self.folder}/{candidate}"
            if self.source.exists(member):
                return member
        log.debug("%s: attachment %r not found on disk", self.folder, raw)
        return primary  # the pipeline records it as missing_file


def _message_posts(group: _Group, message: Any, stats: ParseStats) -> list[ParsedPost]:
    stats.messages += 1
    if isinstance(message, UnreadableValue):
        stats.bad(f"{group.folder}: message {message}")
        return []
    if not isinstance(message, dict):
        stats.bad(f"{group.folder}: a message is not an object")
        return []
    creator = message.get("creator")
    files = message.get("attached_files")
    if not isinstance(creator, dict):  # deleted message: no creator, date or text
        stats.skipped["deleted"] += 1
        return []
    if not isinstance(files, list) or not files:
        return []
    message_id = clean_text(message.get("message_id"))
    if not message_id:
        stats.bad(f"{group.folder}: a message with attachments has no message_id")
        for attachment in files:  # keep the (n) counters in step with what is on disk
            if isinstance(attachment, dict):
                group.resolve(attachment)
        return []
    posted_at = parse_created_date(message.get("created_date"))
    if posted_at is None:
        stats.bad(
            f"message {message_id}: unparseable created_date {clean_text(message.get('created_date'))!r}"
        )
    email = clean_text(creator.get("email"))
    name = clean_text(creator.get("name"))
    reactors = 0
    reactions = message.get("reactions")
    for reaction in reactions if isinstance(reactions, list) else ():
        emails = reaction.get("reactor_emails") if isinstance(reaction, dict) else None
        if isinstance(emails, list):
            reactors += len(emails)
    out: list[ParsedPost] = []
    for n, attachment in enumerate(files):
        if not isinstance(attachment, dict):
            stats.bad(f"message {message_id}: attachment {n} is not an object")
            continue
        member = group.resolve(attachment)
        if member is None:
            stats.bad(f"message {message_id}: attachment {n} has no file name")
            continue
        if posixpath.splitext(member.lower())[1] not in IMAGE_EXTENSIONS:
            stats.skipped["not_image"] += 1
            continue
        out.append(
            ParsedPost(
                source=SOURCE,
                source_id=f"{message_id}:{n}",
                conversation_id=group.id,
                conversation_name=group.name,
                author_ref=email or name,
                author_name=name,
                posted_at=posted_at,
                local_ref=member,
                media_hint="attachment",
                reaction_count=reactors,
            )
        )
    stats.image_items += len(out)
    return out


def iter_posts(source: ExportSource, *, stats: ParseStats) -> Iterator[ParsedPost]:
    """Yield one ParsedPost per image attachment of every group, groups in path order.

    A referenced file missing on disk still gives a post (``local_ref`` set) so the pipeline
    records it as a missing file. Deleted messages are counted in ``skipped["deleted"]``.

    Raises:
        ParseError: a messages.json is not JSON, truncated, or not ``{"messages": [...]}``.
    """
    for member in source.find(MESSAGES_GLOB):
        group = _Group(source, member, stats)
        label = f"{source.name}:{member}"
        with source.open(member) as stream:
            cur = JsonCursor(stream, file=label)
            if cur.peek() != "{":
                raise cur.error('not a Google Chat messages.json: expected {"messages": [...]}')
            try:
                for key in cur.iter_object():
                    if key == "messages" and cur.peek() == "[":
                        for message in cur.iter_values():
                            posts = _message_posts(group, message, stats)
                            if posts:
                                yield from posts
                    else:
                        cur.skip_value()
                cur.expect_end()
            except RecursionError:
                raise ParseError(label, "JSON nested too deeply") from None
