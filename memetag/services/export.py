"""The CSV export of the labelled image list, written the same way by `memetag export --csv`
and by the bot's `/tagger export`.

One row per stored image post (see :func:`store.queries.reports.iter_export_rows`). Names and
URLs come from chat members, so unless ``raw`` a cell a spreadsheet would run as a formula gets
an apostrophe in front (OWASP's CSV injection list).
"""

from __future__ import annotations

import csv
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from memetag.services.errors import ServiceError

if TYPE_CHECKING:
    from store.db import Database

EXPORT_HEADER = ["filename", "sender", "timestamp", "source", "labels", "conversation", "url"]
# A spreadsheet runs a cell starting with one of these as a formula (OWASP's CSV injection
# list); member-chosen names and URLs must not, so such cells are prefixed with an apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportTooLarge(ServiceError):
    """The CSV grew past the byte cap asked for; nothing past the cap was written."""

    def __init__(self, max_bytes: int, rows: int) -> None:
        super().__init__(f"the CSV is larger than {max_bytes} bytes (stopped after {rows} rows)")
        self.max_bytes = max_bytes
        self.rows = rows


def neutralise_cell(value: str) -> str:
    """``value`` with an apostrophe in front if a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def format_timestamp(ts: datetime | None) -> str:
    """ISO-8601 UTC with a ``Z``, or empty when the post has no time."""
    return ts.isoformat().replace("+00:00", "Z") if ts else ""


class _CappedWriter:
    """Passes text on to ``out`` and counts its UTF-8 bytes; raises past ``max_bytes``."""

    def __init__(self, out: TextIO, max_bytes: int | None) -> None:
        self._out = out
        self._max = max_bytes
        self.bytes = 0
        self.rows = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8"))
        if self._max is not None and self.bytes > self._max:
            raise ExportTooLarge(self._max, max(0, self.rows - 1))
        self.rows += 1
        return self._out.write(text)


async def write_export_csv(
    db: Database, out: TextIO, *, raw: bool = False, max_bytes: int | None = None
) -> int:
    """Write the header and one row per stored image post to ``out``; returns the row count.

    Args:
        out: a text stream opened with ``newline=""`` (rows end in CRLF themselves).
        raw: write cells exactly as stored (for programs, not spreadsheets).
        max_bytes: stop with :class:`ExportTooLarge` before the CSV (UTF-8) would pass this
            many bytes; what was written up to then stays in ``out``.
    """
    from store.queries.reports import iter_export_rows

    # RFC 4180 "\r\n" rows: the csv module quotes a cell only when it holds a character of the
    # line terminator, so with "\n" rows a name holding a lone "\r" would split its row.
    counted = _CappedWriter(out, max_bytes)
    writer = csv.writer(counted, lineterminator="\r\n")
    writer.writerow(EXPORT_HEADER)
    n = 0
    async with aclosing(iter_export_rows(db)) as rows:
        async for r in rows:
            cells = [
                r.filename,
                r.sender or "",
                format_timestamp(r.timestamp),
                r.source,
                " ".join(r.labels),
                r.conversation or "",
                r.url or "",
            ]
            writer.writerow(cells if raw else [neutralise_cell(c) for c in cells])
            n += 1
    return n
