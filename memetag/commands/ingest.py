"""`memetag ingest …`: bring a chat's history into the store, one source format per sub-command.

Argument parsing and printing only; memetag.services.ingest opens the export and the download
session and runs the pipeline.
"""

from __future__ import annotations

import argparse
import sys
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


def _list_conversations(args: argparse.Namespace) -> int:
    from memetag.services.ingest import list_hangouts_conversations

    rows = list_hangouts_conversations(Path(args.path))
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
    from memetag.services.ingest import IngestOptions, SourceRequest, ingest_source

    request = SourceRequest(
        format=args.format,
        path=Path(args.path),
        conversations=tuple(args.conversation) if getattr(args, "conversation", None) else None,
        include_stickers=getattr(args, "include_stickers", False),
        csv=getattr(args, "csv", None),
    )
    options = IngestOptions(
        retry_failed=args.retry_failed,
        concurrency=concurrency,
        # only sources that download have the flag
        allow_private=getattr(args, "allow_private", False),
    )
    on_progress, close_bars = _progress_bars(not args.no_progress and not args.json)
    try:
        summary = await ingest_source(cfg, request, options, on_progress=on_progress)
    finally:
        close_bars()
    if args.json:
        from memetag.commands._common import print_json

        print_json(summary.as_dict())
    else:
        _print_summary(summary, args.path)
    # Items that could not be stored make the run incomplete: say so in the exit status.
    return 1 if summary.failures else 0
