"""Tell which export format a source holds, from file names and the first bytes of its JSON files."""

from __future__ import annotations

import logging
import re

from ingest.archive import ExportSource
from ingest.errors import ParseError
from ingest.parsers._encoding import python_codec, sniff_encoding

log = logging.getLogger(__name__)

FORMATS = ("hangouts", "gchat", "discord-export", "folder")
HANGOUTS_GLOB = "**/Hangouts*.json"
GCHAT_GLOB = "**/Groups/*/messages.json"
_SNIFF_BYTES = 4096
_FIRST_KEY = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"((?:[^"\\]|\\.)*)"\s*:')


def first_key(source: ExportSource, member: str) -> str | None:
    """The first top-level key of a JSON object file, read from its first bytes only."""
    try:
        with source.open(member) as f:
            head = f.read(_SNIFF_BYTES)
    except ParseError:
        return None
    encoding, bom = sniff_encoding(head[:4])
    if encoding != "UTF-8":  # found, so that the parser can say what is wrong with it
        head = head.decode(python_codec(encoding, bom), "replace").encode("utf-8")
    m = _FIRST_KEY.match(head)
    return m.group(1).decode("utf-8", "replace") if m else None


def _is_hangouts(source: ExportSource, member: str) -> bool:
    return first_key(source, member) in (
        "conversations",
        "conversation_state",
        "continuation_end_timestamp",
    )


def detect_format(source: ExportSource) -> str:
    """Return "hangouts", "gchat", "discord-export" or "folder" (the fallback), per formats.md §0.

    Hangouts: a JSON whose first key is ``conversations``/``conversation_state``. Google Chat: a
    ``Groups/<group>/messages.json``. DCE: a JSON whose first key is ``guild``.
    """
    named = source.find(HANGOUTS_GLOB)
    if any(_is_hangouts(source, m) for m in named):
        return "hangouts"
    if source.find(GCHAT_GLOB):
        return "gchat"
    for member in source.find("**/*.json"):
        key = first_key(source, member)
        if key in ("conversations", "conversation_state"):
            return "hangouts"
        if key == "guild":
            return "discord-export"
    return "folder"


def list_export_files(source: ExportSource, fmt: str) -> list[str]:
    """The members a parser of ``fmt`` should read (sorted); ParseError if there are none.

    hangouts: ``Hangouts*.json`` files that really are Hangouts exports (Hangouts.json and the
    Hangouts2.json of some 2014 takeouts); discord-export: every DCE channel JSON; gchat: every
    ``Groups/*/messages.json``; folder: every member.
    """
    if fmt == "hangouts":
        found = [m for m in source.find(HANGOUTS_GLOB) if _is_hangouts(source, m)]
        if not found:  # a renamed file: accept any JSON that sniffs as Hangouts
            found = [m for m in source.find("**/*.json") if _is_hangouts(source, m)]
        what = "a Google Takeout Hangouts export (Takeout/Hangouts/Hangouts.json)"
    elif fmt == "discord-export":
        found = [m for m in source.find("**/*.json") if first_key(source, m) == "guild"]
        what = "DiscordChatExporter JSON files (top-level key 'guild')"
    elif fmt == "gchat":
        found = source.find(GCHAT_GLOB)
        what = "a Google Takeout Google Chat export (Google Chat/Groups/*/messages.json)"
    elif fmt == "folder":
        found = sorted(source.iter_members())
        what = "image files"
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not found:
        raise ParseError(source.name, f"nothing to import: expected {what}")
    return found
