"""Labelled image folders: an ImageFolder tree (<label>/<image>) or a CSV of filename,sender,labels,timestamp."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime

from ingest.archive import ExportSource, normalize_member
from ingest.errors import MemberMissing, ParseError
from ingest.parsers._encoding import python_codec, sniff_encoding
from ingest.parsers.base import ParsedPost, ParseStats, as_utc

log = logging.getLogger(__name__)

SOURCE = "folder"
CSV_COLUMNS = ("filename", "sender", "labels", "timestamp")
_METADATA_EXTENSIONS = frozenset({".csv", ".json", ".txt"})
_METADATA_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_METADATA_DIRS = frozenset({"__MACOSX"})


def is_metadata(member: str) -> bool:
    """True for files that are obviously not images: .csv/.json/.txt, dotfiles, OS droppings."""
    parts = member.split("/")
    if any(p.startswith(".") or p in _METADATA_DIRS for p in parts):
        return True
    name = parts[-1].lower()
    return name in _METADATA_NAMES or posixpath.splitext(name)[1] in _METADATA_EXTENSIONS


def parse_csv_timestamp(value: str) -> datetime | None:
    """ISO-8601 (naive means UTC) or Unix seconds -> aware UTC datetime; ValueError if neither."""
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = as_utc(datetime.fromisoformat(value))  # ValueError propagates: a bad row
        if parsed is None:
            raise ValueError(f"timestamp out of range: {value}") from None
        return parsed
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp out of range: {value}") from exc


def find_label_csv(source: ExportSource) -> str | None:
    """The top-level CSV whose header has a ``filename`` column, if there is exactly one."""
    found = []
    for member in source.find("*.csv"):
        try:
            head = source.read_bytes(member, 1 << 20) if source.size(member) < (1 << 20) else b""
        except ParseError:
            continue
        first = head.decode(python_codec(*sniff_encoding(head[:4])), "replace").splitlines()[:1]
        if first and "filename" in [c.strip().lower() for c in next(csv.reader(first), [])]:
            found.append(member)
    return found[0] if len(found) == 1 else None


def _common_root(members: list[str]) -> str:
    """The single top folder every member sits in (a zipped folder), else ''."""
    tops = {m.split("/", 1)[0] for m in members}
    if len(tops) == 1 and all("/" in m for m in members):
        return tops.pop() + "/"
    return ""


def _content_id(source: ExportSource, member: str, rel: str) -> str:
    """A post id that names the file by its bytes and its place in the labelled set.

    A folder has no message ids. Keying on the path alone would make two different folders
    that both hold ``funny/001.png`` one post; the bytes tell them apart, and the same set
    ingested again — from a zip or unpacked, from any location — keeps its ids.
    """
    try:
        fh = source.open(member)
    except MemberMissing:
        return f"missing:{rel}"  # the pipeline records it as missing_file
    digest = hashlib.sha256()
    with fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{digest.hexdigest()[:16]}:{rel}"


def _iter_tree(source: ExportSource, stats: ParseStats) -> Iterator[ParsedPost]:
    members = sorted(m for m in source.iter_members() if not is_metadata(m))
    # A zip of a labelled folder usually wraps it in one top folder, which is no label; a
    # folder the user named is the root itself, even when it holds a single label folder.
    root = _common_root(members) if source.is_archive else ""
    for member in members:
        rel = member[len(root) :]
        label = rel.split("/", 1)[0] if "/" in rel else None
        stats.messages += 1
        stats.image_items += 1
        yield ParsedPost(
            source=SOURCE,
            source_id=_content_id(source, member, rel),
            conversation_id=None,
            conversation_name=None,
            author_ref=None,
            author_name=None,
            posted_at=None,
            local_ref=member,
            media_hint="file",
            labels=(label,) if label else (),
        )


def _iter_csv(source: ExportSource, csv_member: str, stats: ParseStats) -> Iterator[ParsedPost]:
    label = source.label(csv_member)
    base = posixpath.dirname(csv_member)
    with source.open(csv_member) as raw:
        # UTF-8 (with or without a mark, as Excel writes it), or UTF-16/32 ("Unicode text")
        codec = python_codec(*sniff_encoding(raw.peek(4)[:4]))
        text = io.TextIOWrapper(raw, encoding=codec, errors="replace", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                raise ParseError(label, f"empty CSV: expected a header {','.join(CSV_COLUMNS)}")
            columns = [c.strip().lower() for c in header]
            for required in CSV_COLUMNS:
                if required not in columns:
                    raise ParseError(
                        label,
                        f"missing column '{required}': expected a header {','.join(CSV_COLUMNS)}",
                    )
            index = {name: columns.index(name) for name in CSV_COLUMNS}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                stats.messages += 1
                cells = {
                    name: (row[i].strip() if i < len(row) else "") for name, i in index.items()
                }
                rel = cells["filename"].replace("\\", "/")
                member = normalize_member(posixpath.join(base, rel)) if rel else None
                if member is None or (base and not member.startswith(base + "/")):
                    stats.bad(f"{csv_member} line {line}: bad filename {cells['filename']!r}")
                    continue
                try:
                    posted_at = parse_csv_timestamp(cells["timestamp"])
                except ValueError:
                    stats.bad(f"{csv_member} line {line}: bad timestamp {cells['timestamp']!r}")
                    posted_at = None
                labels = tuple(dict.fromkeys(cells["labels"].split()))
                stats.image_items += 1
                yield ParsedPost(
                    source=SOURCE,
                    source_id=_content_id(source, member, posixpath.relpath(member, base or ".")),
                    conversation_id=None,
                    conversation_name=None,
                    author_ref=cells["sender"] or None,
                    author_name=cells["sender"] or None,
                    posted_at=posted_at,
                    local_ref=member,
                    media_hint="file",
                    labels=labels,
                    listed_at=f"{csv_member} line {line}",
                )
        except csv.Error as exc:
            raise ParseError(label, f"malformed CSV near line {reader.line_num}: {exc}") from exc


def iter_posts(
    source: ExportSource, *, stats: ParseStats, csv_member: str | None = None
) -> Iterator[ParsedPost]:
    """Yield one ParsedPost per file (tree mode) or per CSV row (``csv_member`` given).

    Tree mode: ``<label>/<image>`` gives ``labels=(label,)``, top-level files no label, and a
    single folder wrapping everything (a zipped folder) is not taken for a label. Every file
    except obvious metadata is emitted; the pipeline sniffs the bytes and rejects non-images.
    CSV mode: filenames are relative to the CSV's folder; a row whose file is missing still
    gives a post, so the pipeline reports it.

    Raises:
        ParseError: the CSV lacks a required column or is malformed.
    """
    if csv_member is None:
        yield from _iter_tree(source, stats)
    else:
        yield from _iter_csv(source, csv_member, stats)
