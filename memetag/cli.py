"""`memetag` command line: parses arguments, loads config, calls into the packages, prints."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from memetag import __version__
from memetag.commands._text import shown, shown_line
from memetag.config import load_config

# Each module exposes register(subparsers); a registered parser sets `handler(args, cfg) -> int`.
# Modules import torch and friends lazily, inside their handlers, so `--help` stays fast.
COMMAND_MODULES = (
    "memetag.commands.ingest",
    "memetag.commands.export",
    "memetag.commands.failures",
    "memetag.commands.train",
    "memetag.commands.predict",
    "memetag.commands.demo",
    "memetag.commands.bot",
    "memetag.commands.audit",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every package's error base: shown as one line, exit 1, never a traceback."""
    from classifier.errors import ClassifierError
    from ingest.errors import IngestError
    from memetag.errors import MemetagError
    from store.errors import StoreError

    return (MemetagError, StoreError, IngestError, ClassifierError)


class _WarningsToLog:
    """``warnings.showwarning`` for the CLI: each library warning becomes one log line.

    Python would print the warning's source file and line of code; a user needs the file it is
    about (named by ``store.warning_context`` where an image is decoded) and the message, once.
    The logger is named after the library that warned (``PIL``, ``sklearn``), so ``-v`` output
    and a warning read alike.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str | None, type, str]] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        from store.warning_context import current_subject

        subject = current_subject()
        text = shown_line(" ".join(str(message).split()))
        key = (subject, category, text)
        if key in self._seen:
            return
        if len(self._seen) < 10_000:
            self._seen.add(key)
        logger = logging.getLogger(_origin(filename))
        if subject is None:
            logger.warning("%s", text)
        else:
            logger.warning("%s: %s", shown(subject), text)


def _origin(filename: str) -> str:
    """The top-level package a source file belongs to (``PIL`` for .../site-packages/PIL/x.py)."""
    path = Path(filename)
    roots = sorted((Path(p) for p in sys.path if p), key=lambda p: len(p.parts), reverse=True)
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            return rel.parts[0].removesuffix(".py")
    return path.stem or "warnings"


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
        with warnings.catch_warnings():
            # Every file with damaged metadata is named, not only the first (the default filter
            # shows a message once per line of library code); _WarningsToLog drops repeats.
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = _WarningsToLog()
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
