"""`memetag ingest …`: bring a chat's history into the store, one source format per sub-command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from memetag.commands._common import ProgressBars, UserError, run_async
from memetag.commands._text import shown, shown_line
from memetag.config import AppConfig

FORMATS = {
    "hangouts": "Google Takeout Hangouts: Hangouts.json, or a whole Takeout .zip/.tgz read in place",
    "gchat": "Google Takeout Google Chat: the 'Google Chat' folder or a Takeout .zip/.tgz",
    "discord-export": "DiscordChatExporter JSON: one .json file, or a folder of them",
    "folder": "Already-labelled images: an ImageFolder tree (<label>/<image>), as a folder or a "
    ".zip/.tar/.tgz of one, or a CSV (filename,sender,labels,timestamp)",
}
# Sources whose images are all files inside the export: nothing is downloaded, so no option
# about URLs is offered for them.
LOCAL_ONLY = frozenset({"gchat", "folder"})
PATH_HELP = {
    "hangouts": "Hangouts.json, or a Takeout .zip/.tgz",
    "gchat": "the 'Google Chat' folder, or a Takeout .zip/.tgz",
    "discord-export": "one export .json, or a folder of them",
    "folder": "a folder of images, a .zip/.tar/.tgz of one, or a labels .csv",
}
RETRY_HELP = {
    "hangouts": "re-attempt images that failed in an earlier run (downloads cut off by a "
    "timeout, a lost connection or a busy server)",
    "gchat": "re-read attachments that failed in an earlier run (e.g. from a re-downloaded, "
    "complete Takeout)",
    "discord-export": "re-attempt images that failed in an earlier run (downloads cut off by a "
    "timeout, a lost connection or a busy server; --media files from a complete export)",
    "folder": "re-read files that failed in an earlier run (e.g. after raising [ingest] max_bytes)",
}
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz")
SOURCE_NAMES = {
    "hangouts": "hangouts",
    "gchat": "gchat",
    "discord-export": "discord",
    "folder": "folder",
}


def register(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="bring chat history in (hangouts, gchat, discord-export, folder)",
        description="Bring a chat's history into the store. Every ingest is idempotent and "
        "resumable: re-running it adds nothing new, and an interrupted run finishes where it "
        "stopped.",
    )
    kinds = ingest.add_subparsers(dest="format", metavar="FORMAT")
    kinds.required = True
    for name, help_text in FORMATS.items():
        p = kinds.add_parser(name, help=help_text, description=help_text)
        p.add_argument("path", metavar="PATH", help=PATH_HELP[name])
        p.add_argument("--retry-failed", action="store_true", help=RETRY_HELP[name])
        downloads = name not in LOCAL_ONLY
        p.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help=("parallel downloads and image checks" if downloads else "images read and "
                  "checked at once") + " (default: [ingest] concurrency)",
        )  # fmt: skip
        if downloads:
            p.add_argument(
                "--allow-private",
                action="store_true",
                help="allow URLs that resolve to loopback/private addresses (off by default)",
            )
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name == "hangouts":
            p.add_argument(
                "--list", action="store_true", help="list conversations and exit, storing nothing"
            )
            p.add_argument(
                "--conversation",
                action="append",
                metavar="ID|NAME",
                help="ingest only this conversation (repeatable; default: all)",
            )
            p.add_argument(
                "--include-stickers",
                action="store_true",
                help="keep Google's built-in stickers (skipped by default)",
            )
        if name == "folder":
            p.add_argument(
                "--csv",
                metavar="FILE",
                help="CSV inside PATH to read labels from (default: PATH itself if it is a CSV, "
                "else labels come from sub-folder names)",
            )
        p.set_defaults(handler=handle_ingest)


def _progress_bars(enabled: bool):
    """on_progress callback drawing one tqdm bar per phase (parse, download), and a closer."""
    bars = ProgressBars(enabled, units={"parse": "post", "download": "img"})

    def on_progress(phase: str, done: int, total: int | None, failures: int) -> None:
        bars.update(phase, done, total, failures=failures)

    return on_progress, bars.close


def _member_label(path: Path, member: str) -> str:
    """How errors name a member: the file itself, a path inside a folder, or archive:member."""
    if path.is_dir():
        return str(path / member)
    if path.suffix.lower() == ".json":
        return str(path)
    return f"{path}:{member}"


def _hangouts_files(source) -> list[str]:
    """Hangouts*.json by name (a broken one then fails loudly in the parser), else by content."""
    from ingest.parsers.detect import list_export_files

    return source.find("**/Hangouts*.json") or list_export_files(source, "hangouts")


def _parsed_posts(args: argparse.Namespace, cfg: AppConfig, stack: ExitStack, stats):
    """Open the export and return (iterator of ParsedPost, reader for bytes inside it)."""
    from ingest.archive import open_export
    from ingest.errors import ParseError
    from ingest.parsers.detect import list_export_files

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    csv_member = getattr(args, "csv", None)
    if (
        args.format == "folder"
        and path.is_file()
        and not path.name.lower().endswith(_ARCHIVE_SUFFIXES)
    ):
        if path.suffix.lower() != ".csv":
            raise UserError(
                f"{path}: expected a folder of images, a .zip/.tar/.tgz of one, or a .csv file"
            )
        # Filenames in the CSV are relative to its folder, whose files are then read on demand
        # (never listed: a million-row CSV's folder holds a million files).
        csv_member = path.name
    source = stack.enter_context(open_export(path))
    if args.format == "hangouts":
        from ingest.parsers import hangouts

        def gen_hangouts() -> Iterator:
            for member in _hangouts_files(source):
                with source.open(member) as stream:
                    yield from hangouts.iter_posts(
                        stream,
                        file=_member_label(path, member),
                        stats=stats,
                        conversations=args.conversation,
                        skip_stickers=cfg.ingest.skip_stickers and not args.include_stickers,
                    )
            unmatched = sorted(set(args.conversation or ()) - stats.selected_conversations)
            if unmatched:
                raise ParseError(
                    str(path),
                    f"no conversation with id or name {unmatched[0]!r} "
                    "(expected one that `memetag ingest hangouts PATH --list` shows)",
                )

        return gen_hangouts(), source
    if args.format == "gchat":
        from ingest.parsers import gchat

        return gchat.iter_posts(source, stats=stats), source
    if args.format == "discord-export":
        from ingest.parsers import discord_export

        def gen_dce() -> Iterator:
            for member in list_export_files(source, "discord-export"):
                with source.open(member) as stream:
                    yield from discord_export.iter_posts(
                        stream,
                        file=_member_label(path, member),
                        base_dir=member.rpartition("/")[0],
                        stats=stats,
                    )

        return gen_dce(), source
    from ingest.parsers import folder

    return folder.iter_posts(source, stats=stats, csv_member=csv_member), source


def _list_conversations(args: argparse.Namespace) -> int:
    from ingest.archive import open_export
    from ingest.parsers import hangouts

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    with open_export(path) as source:
        rows = []
        for member in _hangouts_files(source):
            with source.open(member) as stream:
                rows.extend(hangouts.list_conversations(stream, file=_member_label(path, member)))
    if args.json:
        from dataclasses import asdict

        from memetag.commands._common import print_json

        print_json([asdict(r) for r in rows])
        return 0
    print(f"{'id':<30} {'messages':>8} {'images':>6}  name [type]: participants")
    for r in rows:
        # Every name comes from the export: escaped and cut, so none can rewrite the terminal.
        people = ", ".join(shown(p, 80) for p in r.participants)
        print(
            f"{shown(r.id, 60):<30} {r.messages:>8} {r.images:>6}  "
            f"{shown(r.name or '(unnamed)')} [{shown(r.type, 30)}]: {people}"
        )
    return 0


def _print_summary(summary, path: str) -> None:
    from memetag.commands.failures import retryable

    d = summary.as_dict()
    print(f"ingested {shown(path)} ({d['source']}) in {d['seconds']:.1f}s")
    print(f"  messages read        {d['messages_read']}")
    print(
        f"  image items          {d['image_items']} ({d['new_posts']} new, "
        f"{d['already_known_posts']} already known)"
    )
    print(
        f"  images stored        {d['stored']} ({d['new_images']} new, "
        f"{d['duplicates_by_hash']} duplicates by hash)"
    )
    if d["links_not_images"]:
        print(f"  links not images     {d['links_not_images']}")
    failures = d["failures_by_reason"]
    total_failures = sum(failures.values())
    detail = ", ".join(f"{k} {v}" for k, v in failures.items())
    print(f"  failures             {total_failures}" + (f" ({detail})" if detail else ""))
    # --retry-failed only helps where the network was the trouble: a file missing from the
    # export or a 404 fails the same way on every run.
    again = retryable(failures)
    if again:
        print(f"                       {again} may succeed later: re-run with --retry-failed")
    if total_failures:
        print("                       list them with `memetag failures`")
    if d["retried"]:
        print(f"  retried              {d['retried']}")
    if d["skipped"]:
        print("  skipped              " + ", ".join(f"{k} {v}" for k, v in d["skipped"].items()))
    if d["bad_records"]:
        example = shown_line(d["bad_examples"][0])
        print(f"  bad records          {d['bad_records']} (e.g. {example})")
    if d["orphan_files_swept"]:
        print(f"  orphan files swept   {d['orphan_files_swept']} (left by an interrupted run)")
    sys.stdout.flush()
    # One line per failed item on stderr, after the summary, so scripts can grep them.
    for line in d["failure_examples"]:
        print(f"memetag: failed: {shown_line(line)}", file=sys.stderr)
    more = total_failures - len(d["failure_examples"])
    if more > 0:
        print(f"memetag: … and {more} more (see `memetag failures`)", file=sys.stderr)


def handle_ingest(args: argparse.Namespace, cfg: AppConfig) -> int:
    if args.format == "hangouts" and args.list:
        return _list_conversations(args)
    concurrency = cfg.ingest.concurrency if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    return run_async(_ingest(args, cfg, concurrency))


async def _ingest(args: argparse.Namespace, cfg: AppConfig, concurrency: int) -> int:
    from ingest.download import Downloader, create_session
    from ingest.parsers.base import ParseStats
    from ingest.pipeline import ingest_lock, run_ingest
    from memetag.commands.labels import sync_configured_labels
    from store.db import open_database
    from store.files import ImageFiles

    stats = ParseStats()
    allow_private = getattr(args, "allow_private", False)  # only sources that download have it
    on_progress, close_bars = _progress_bars(not args.no_progress and not args.json)
    with ExitStack() as stack:
        parsed, reader = _parsed_posts(args, cfg, stack, stats)
        stack.enter_context(ingest_lock(cfg.data_dir))
        async with open_database(cfg.db_path) as db:
            await sync_configured_labels(db, cfg)
            session = create_session(
                concurrency=concurrency,
                timeout_s=cfg.ingest.timeout_s,
                allow_private=allow_private,
            )
            async with session:
                fetcher = Downloader(
                    session,
                    concurrency=concurrency,
                    retries=cfg.ingest.retries,
                    deadline_s=cfg.ingest.deadline_s,
                    max_bytes=cfg.ingest.max_bytes,
                    allow_private=allow_private,
                )
                try:
                    summary = await run_ingest(
                        db,
                        ImageFiles(cfg.images_dir),
                        parsed,
                        stats,
                        source=SOURCE_NAMES[args.format],
                        people=cfg.people,
                        reader=reader,
                        fetcher=fetcher,
                        retry_failed=args.retry_failed,
                        max_bytes=cfg.ingest.max_bytes,
                        max_pixels=cfg.ingest.max_pixels,
                        concurrency=concurrency,
                        batch_size=cfg.ingest.batch_size,
                        on_progress=on_progress,
                    )
                finally:
                    close_bars()
    if args.json:
        from memetag.commands._common import print_json

        print_json(summary.as_dict())
    else:
        _print_summary(summary, args.path)
    # Items that could not be stored make the run incomplete: say so in the exit status.
    return 1 if summary.failures else 0
