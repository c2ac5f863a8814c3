"""Ingest errors. A broken file is fatal (ParseError); a bad record is counted, not raised."""

from __future__ import annotations

# Longest a value from an export (a name, URL or file name) may be inside an error message:
# a 1 MB URL must not become a 1 MB error line.
CLIP_LIMIT = 300


def clip(value: object, limit: int = CLIP_LIMIT) -> str:
    """``value`` as text of at most about ``limit`` characters: start and end kept, middle cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[: limit - tail]}…[{len(text) - limit} chars cut]…{text[-tail:]}"


class IngestError(Exception):
    """Base for everything ingest reports to the user as one line."""


class ParseError(IngestError):
    """The export file itself is broken or not the expected format.

    The message always names the file and says what was expected; ``offset`` is the byte
    offset where parsing stopped, when known.
    """

    def __init__(self, file: str, message: str, offset: int | None = None) -> None:
        self.file = file
        self.offset = offset
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{clip(file)}{where}: {clip(message, 3 * CLIP_LIMIT)}")


class MemberMissing(ParseError):
    """A file an export refers to is not in it (or not a regular file inside it): only that item
    fails, not the export."""

    def __init__(self, file: str, member: str) -> None:
        self.member = member
        super().__init__(file, f"no member {clip(member)!r} in this export")


class MemberTooLarge(ParseError):
    """One file inside an export is over the size limit; only that item fails, not the export."""

    def __init__(self, file: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(file, f"file is larger than the {max_bytes}-byte limit")


class DownloadError(IngestError):
    """A fetch failed for good; ``reason`` is a short machine-readable code (http_404, timeout...).

    ``url`` is kept whole; ``detail`` and the message are clipped (see :func:`clip`).
    """

    def __init__(self, url: str, reason: str, detail: str = "") -> None:
        self.url = url
        self.reason = reason
        self.detail = clip(detail, 3 * CLIP_LIMIT)
        super().__init__(f"{clip(url)}: {reason}{': ' + self.detail if detail else ''}")


class ImageRejected(IngestError):
    """Bytes that are not an acceptable image; ``reason`` is a short code (not_image, empty, bomb...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
