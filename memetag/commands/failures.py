"""`memetag failures`: list the image items an ingest could not store, and why."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC

from memetag.commands._common import UserError, print_json, run_async
from memetag.commands._text import shown
from memetag.config import AppConfig

# Failure reasons a later run can fix by itself: the network or the server was in trouble (the
# reasons ingest/download.py retries, and "offline": no downloader at all). Everything else (a
# file missing from the export, a 404, an unknown host, bytes that are no image) fails the same
# way again until the export or the config changes.
RETRYABLE_REASONS = frozenset({"timeout", "connection", "http_429", "http_5xx", "offline"})
# `memetag ingest` sub-commands by the source name they record.
INGEST_COMMANDS = {
    "hangouts": "hangouts",
    "gchat": "gchat",
    "discord": "discord-export",
    "folder": "folder",
}
DEFAULT_LIMIT = 50


def retryable(failures_by_reason: Mapping[str, int]) -> int:
    """How many of these failures a re-run with --retry-failed may fix."""
    return sum(n for reason, n in failures_by_reason.items() if reason in RETRYABLE_REASONS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "failures",
        help="list image items that could not be stored: source, reason, URL or file, when",
        description="List the image items ingest could not store, the most recent failure "
        "first: when it failed, the source, the reason, the URL or file inside the export, and "
        "the detail. Reasons caused by the network (timeout, connection, http_429, http_5xx) "
        "may succeed on `memetag ingest … --retry-failed`; the others fail the same way until "
        "the export or the config changes.",
    )
    p.add_argument("--reason", metavar="REASON", help="only this reason (e.g. missing_file)")
    p.add_argument(
        "--source",
        metavar="SOURCE",
        help="only this source: hangouts, gchat, discord (or discord-export), folder",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N items (default: {DEFAULT_LIMIT}; 0: all)",
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON array, values unescaped and uncut"
    )
    p.set_defaults(handler=handle_failures)


def _source(value: str | None) -> str | None:
    if value is None:
        return None
    source = "discord" if value == "discord-export" else value
    if source not in INGEST_COMMANDS:
        raise UserError(
            f"--source {shown(value)}: expected one of hangouts, gchat, discord, folder"
        )
    return source


def handle_failures(args: argparse.Namespace, cfg: AppConfig) -> int:
    from store.db import open_database
    from store.queries.failures import count_failed_posts, list_failed_posts

    if args.limit < 0:
        raise UserError("--limit must be 0 (all) or more")
    if not cfg.db_path.exists():
        raise UserError(f"{cfg.db_path}: no store here yet (run `memetag ingest` first)")
    source = _source(args.source)

    async def go():
        async with open_database(cfg.db_path, readonly=True) as db:
            counts = await count_failed_posts(db, reason=args.reason, source=source)
            rows = await list_failed_posts(
                db, reason=args.reason, source=source, limit=args.limit or None
            )
            return counts, rows

    counts, rows = run_async(go())
    if args.json:
        print_json([_as_json(row) for row in rows])
        return 0
    _print(counts, rows, filtered=args.reason is not None or source is not None)
    return 0


def _as_json(row) -> dict:
    return {
        "post_id": row.post_id,
        "source": row.source,
        "reason": row.reason,
        "retryable": row.reason in RETRYABLE_REASONS,
        "url": row.url,
        "path": row.local_ref,
        "detail": row.detail,
        "conversation": row.conversation,
        "sender": row.sender,
        "posted_at": _iso(row.posted_at),
        "failed_at": _iso(row.failed_at),
        "attempts": row.attempts,
    }


def _iso(ts) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def _print(counts: dict[str, int], rows: list, *, filtered: bool) -> None:
    total = sum(counts.values())
    if not total:
        print("no failed image items" + (" match these filters" if filtered else ""))
        return
    by_reason = ", ".join(f"{shown(reason, 40)} {n}" for reason, n in counts.items())
    print(f"{total} failed image item{'s' if total != 1 else ''} ({by_reason}), newest first")
    width = max(len("reason"), *(len(shown(r.reason, 40)) for r in rows))
    print(f"{'failed (UTC)':<16}  {'source':<8}  {'reason':<{width}}  url or file / detail")
    for row in rows:
        when = row.failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if row.failed_at else ""
        where = row.local_ref or row.url or f"post {row.post_id}"
        print(f"{when:<16}  {row.source:<8}  {shown(row.reason, 40):<{width}}  {shown(where)}")
        if row.detail:
            print(f"{'':<16}  {'':<8}  {'':<{width}}  {shown(row.detail)}")
    if total > len(rows):
        print(f"… and {total - len(rows)} more (--limit 0 shows all)")
    again = retryable(counts)
    if again:
        sources = sorted(
            {INGEST_COMMANDS.get(r.source, r.source) for r in rows if r.reason in RETRYABLE_REASONS}
        )
        print(
            f"{again} of these failed for network reasons and may succeed on a re-run: "
            f"`memetag ingest {'|'.join(sources) or 'FORMAT'} PATH --retry-failed`"
        )
