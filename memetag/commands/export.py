"""`memetag export` and `memetag stats`: take the data elsewhere, see what is in the store."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from memetag.commands._common import UserError, print_json, run_async
from memetag.commands._text import shown
from memetag.config import AppConfig

# The row writer lives in memetag.services.export, shared with the bot's `/tagger export`.
from memetag.services.export import EXPORT_HEADER, FORMULA_STARTS, neutralise_cell

__all__ = ["EXPORT_HEADER", "FORMULA_STARTS", "neutralise_cell", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the labelled image list as CSV",
        description="Write one CSV row per stored image post: filename (relative to the data "
        "dir), sender, timestamp (ISO-8601 UTC), source, labels (space-separated), then "
        "conversation and url. Labels are those with net votes > 0. Names and URLs come from "
        "chat members, so a cell starting with =, +, -, @, a tab or a carriage return gets an "
        "apostrophe in front, which stops a spreadsheet from running it as a formula; --raw "
        "writes cells exactly as stored.",
    )
    p.add_argument("--csv", required=True, metavar="PATH|-", help="output file, or - for stdout")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write cells as stored, without the apostrophe before formula-like cells "
        "(for programs, not spreadsheets)",
    )
    p.set_defaults(handler=handle_export)

    s = sub.add_parser(
        "stats",
        help="posts per source, images, people, label votes, failures by reason",
        description="Summarise the store: posts per source, images, people, label votes and "
        "download failures by reason.",
    )
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(handler=handle_stats)


async def _write_rows(cfg: AppConfig, out, *, raw: bool) -> int:
    from memetag.services.export import write_export_csv
    from store.db import open_database

    async with open_database(cfg.db_path, readonly=True) as db:
        return await write_export_csv(db, out, raw=raw)


def handle_export(args: argparse.Namespace, cfg: AppConfig) -> int:
    if not cfg.db_path.exists():
        raise UserError(f"{cfg.db_path}: no store here yet (run `memetag ingest` first)")
    if args.csv == "-":
        n = run_async(_write_rows(cfg, sys.stdout, raw=args.raw))
        print(f"exported {n} rows", file=sys.stderr)
        return 0
    target = Path(args.csv)
    if target.is_dir():
        raise UserError(f"{target}: is a directory, expected a file path for the CSV")
    if not target.parent.exists():
        raise UserError(f"{target.parent}: folder does not exist")
    # Written beside the target and renamed, so a failed export never leaves half a CSV.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            n = run_async(_write_rows(cfg, fh, raw=args.raw))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"exported {n} rows to {target}")
    return 0


def handle_stats(args: argparse.Namespace, cfg: AppConfig) -> int:
    from dataclasses import asdict

    from store.db import open_database
    from store.queries.reports import get_stats

    if not cfg.db_path.exists():
        raise UserError(f"{cfg.db_path}: no store here yet (run `memetag ingest` first)")

    async def go():
        async with open_database(cfg.db_path, readonly=True) as db:
            return await get_stats(db)

    stats = run_async(go())
    if args.json:
        print_json(asdict(stats))
        return 0
    print(f"data dir: {shown(cfg.data_dir)}")
    print("posts per source:")
    for source, n in sorted(stats.posts_by_source.items()):
        stored = stats.image_posts_by_source.get(source, 0)
        print(f"  {shown(source, 40):<10} {n:>7} posts, {stored:>7} with a stored image")
    print(f"images:          {stats.images}")
    print(f"people:          {stats.people}")
    print(f"pending:         {stats.pending}")
    print(f"links not images {stats.not_images}")
    total_votes = sum(stats.label_votes.values())
    print(f"label votes:     {total_votes}")
    for label, n in sorted(stats.label_votes.items(), key=lambda kv: -kv[1]):
        print(f"  {shown(label, 80):<16} {n}")
    failures = sum(stats.failures_by_reason.values())
    print(f"download failures: {failures}")
    for reason, n in sorted(stats.failures_by_reason.items(), key=lambda kv: -kv[1]):
        print(f"  {shown(reason, 80):<16} {n}")
    print(f"models:          {stats.models}")
    return 0
