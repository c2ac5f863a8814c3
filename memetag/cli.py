"""`memetag` command line: parses arguments, loads config, calls into the packages, prints."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from memetag import __version__
from memetag.commands._text import shown_line
from memetag.config import load_config

# Each module exposes register(subparsers); a registered parser sets `handler(args, cfg) -> int`.
# Modules import torch and friends lazily, inside their handlers, so `--help` stays fast.
COMMAND_MODULES = (
    "memetag.commands.ingest",
    "memetag.commands.export",
    "memetag.commands.train",
    "memetag.commands.predict",
    "memetag.commands.demo",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every package's error base: shown as one line, exit 1, never a traceback."""
    from classifier.errors import ClassifierError
    from ingest.errors import IngestError
    from memetag.errors import MemetagError
    from store.errors import StoreError

    return (MemetagError, StoreError, IngestError, ClassifierError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memetag",
        description=(
            "Learn a chat's image culture: bring in its history, train a tagger for categories "
            "and likely sender, and explain what it sees."
        ),
    )
    parser.add_argument("--version", action="version", version=f"memetag {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $MEMETAG_CONFIG, else ./config.toml if present, else built-in defaults)",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data directory holding memetag.db, images/, models/, reports/ "
        "(default: $MEMETAG_DATA, else [storage] data_dir, else ./data)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    errors = _user_errors()
    try:
        from pathlib import Path

        cfg = load_config(Path(args.config) if args.config else None, data_dir=args.data)
        return int(args.handler(args, cfg) or 0)
    except errors as exc:
        # Messages name files, URLs and people from exports: escaped and cut to one sane line.
        print(f"memetag: error: {shown_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`memetag export --csv - | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("memetag: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
