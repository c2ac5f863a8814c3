"""Setting up an ingest: the export opened and parsed, the download session, the label table.

``open_parsed_source`` turns "this file, this format" into the parser's posts and a reader for
bytes inside the export; ``open_downloader`` makes the one guarded download session a process
uses; ``ingest_source`` runs a whole ingest with both (the CLI's ``memetag ingest``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memetag.config import AppConfig
from memetag.services.errors import BadRequest, ServiceError
from store.db import Database, open_database
from store.queries.labels import LabelDef, sync_labels

if TYPE_CHECKING:
    from ingest.download import Downloader
    from ingest.parsers.base import ParsedPost, ParseStats
    from ingest.pipeline import Fetcher, IngestSummary, LocalReader, ProgressFn

# The export formats `memetag ingest` reads, and the post source each records.
SOURCE_NAMES = {
    "hangouts": "hangouts",
    "gchat": "gchat",
    "discord-export": "discord",
    "folder": "folder",
}
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz")


class SourceNotFound(ServiceError):
    """The export path does not exist."""


@dataclass(frozen=True)
class SourceRequest:
    """Which export to read and how.

    Args:
        format: one of :data:`SOURCE_NAMES` (``discord-export``, ``hangouts``...).
        conversations: Hangouts only: ids or names to keep (None: all).
        include_stickers: Hangouts only: keep Google's built-in stickers.
        csv: folder only: the labels CSV inside ``path``.
    """

    format: str
    path: Path
    conversations: tuple[str, ...] | None = None
    include_stickers: bool = False
    csv: str | None = None

    @property
    def source(self) -> str:
        """The posts' source name in the store (``discord`` for ``discord-export``)."""
        return SOURCE_NAMES[self.format]


@dataclass(frozen=True)
class ParsedSource:
    """An open export: its posts (a lazy iterator, read once) and a reader for its files."""

    posts: Iterator[ParsedPost]
    reader: LocalReader
    source: str


@dataclass(frozen=True)
class IngestOptions:
    """How to fetch: ``concurrency`` None means ``[ingest] concurrency``."""

    retry_failed: bool = False
    concurrency: int | None = None
    allow_private: bool = False


async def sync_configured_labels(db: Database, cfg: AppConfig) -> None:
    """Keep the store's label table in step with the configured label set."""
    await sync_labels(db, [LabelDef(s.name, s.emoji, s.description) for s in cfg.labels])


def member_label(path: Path, member: str) -> str:
    """How errors name a member: the file itself, a path inside a folder, or archive:member."""
    if path.is_dir():
        return str(path / member)
    if path.suffix.lower() == ".json":
        return str(path)
    return f"{path}:{member}"


def hangouts_files(source) -> list[str]:
    """Hangouts*.json by name (a broken one then fails loudly in the parser), else by content."""
    from ingest.parsers.detect import list_export_files

    return source.find("**/Hangouts*.json") or list_export_files(source, "hangouts")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise SourceNotFound(f"{path}: no such file or directory")
    return path


@contextmanager
def open_parsed_source(
    request: SourceRequest, cfg: AppConfig, stats: ParseStats
) -> Iterator[ParsedSource]:
    """Open the export and yield its posts and a reader for bytes inside it; closed on exit.

    Parsing is lazy: the posts are read as the iterator is consumed (by the ingest pipeline,
    in a worker thread), and ``stats`` is filled in as they are.

    Raises:
        SourceNotFound: no such path.
        BadRequest: a file that is none of the kinds the format reads.
        ParseError: the export is broken (also later, while the posts are read).
    """
    from ingest.archive import open_export
    from ingest.errors import ParseError
    from ingest.parsers.detect import list_export_files

    path = _existing(Path(request.path))
    csv_member = request.csv
    if (
        request.format == "folder"
        and path.is_file()
        and not path.name.lower().endswith(_ARCHIVE_SUFFIXES)
    ):
        if path.suffix.lower() != ".csv":
            raise BadRequest(
                f"{path}: expected a folder of images, a .zip/.tar/.tgz of one, or a .csv file"
            )
        # Filenames in the CSV are relative to its folder, whose files are then read on demand
        # (never listed: a million-row CSV's folder holds a million files).
        csv_member = path.name
    with ExitStack() as stack:
        source = stack.enter_context(open_export(path))
        posts: Iterator[Any]
        if request.format == "hangouts":
            from ingest.parsers import hangouts

            def gen_hangouts() -> Iterator:
                for member in hangouts_files(source):
                    with source.open(member) as stream:
                        yield from hangouts.iter_posts(
                            stream,
                            file=member_label(path, member),
                            stats=stats,
                            conversations=request.conversations,
                            skip_stickers=cfg.ingest.skip_stickers and not request.include_stickers,
                        )
                unmatched = sorted(set(request.conversations or ()) - stats.selected_conversations)
                if unmatched:
                    raise ParseError(
                        str(path),
                        f"no conversation with id or name {unmatched[0]!r} "
                        "(expected one that `memetag ingest hangouts PATH --list` shows)",
                    )

            posts = gen_hangouts()
        elif request.format == "gchat":
            from ingest.parsers import gchat

            posts = gchat.iter_posts(source, stats=stats)
        elif request.format == "discord-export":
            from ingest.parsers import discord_export

            def gen_dce() -> Iterator:
                for member in list_export_files(source, "discord-export"):
                    with source.open(member) as stream:
                        yield from discord_export.iter_posts(
                            stream,
                            file=member_label(path, member),
                            base_dir=member.rpartition("/")[0],
                            stats=stats,
                        )

            posts = gen_dce()
        elif request.format == "folder":
            from ingest.parsers import folder

            posts = folder.iter_posts(source, stats=stats, csv_member=csv_member)
        else:
            raise BadRequest(f"unknown export format {request.format!r}")
        yield ParsedSource(posts, source, request.source)


def list_hangouts_conversations(path: Path) -> list:
    """The conversations of a Hangouts export (``ingest.parsers.hangouts`` rows), storing nothing.

    Raises:
        SourceNotFound: no such path.
    """
    from ingest.archive import open_export
    from ingest.parsers import hangouts

    path = _existing(Path(path))
    rows = []
    with open_export(path) as source:
        for member in hangouts_files(source):
            with source.open(member) as stream:
                rows.extend(hangouts.list_conversations(stream, file=member_label(path, member)))
    return rows


@asynccontextmanager
async def open_downloader(
    cfg: AppConfig, *, concurrency: int | None = None, allow_private: bool = False
) -> AsyncIterator[Downloader]:
    """The process's one guarded download session, wrapped in a Downloader; closed on exit.

    ``[ingest]`` sets its timeout, retries, per-URL deadline and byte cap; loopback and private
    addresses are refused unless ``allow_private``.
    """
    from ingest.download import Downloader, create_session

    concurrency = cfg.ingest.concurrency if concurrency is None else concurrency
    session = create_session(
        concurrency=concurrency, timeout_s=cfg.ingest.timeout_s, allow_private=allow_private
    )
    async with session:
        yield Downloader(
            session,
            concurrency=concurrency,
            retries=cfg.ingest.retries,
            deadline_s=cfg.ingest.deadline_s,
            max_bytes=cfg.ingest.max_bytes,
            allow_private=allow_private,
        )


async def ingest_source(
    cfg: AppConfig,
    request: SourceRequest,
    options: IngestOptions = IngestOptions(),
    *,
    on_progress: ProgressFn | None = None,
    fetcher: Fetcher | None = None,
) -> IngestSummary:
    """Run one whole ingest: lock the data dir, open the store, sync labels, record, fetch.

    Args:
        fetcher: a downloader to share (e.g. the bot's); by default one is opened for the run.

    Raises:
        BadRequest: ``concurrency`` below 1; else as :func:`open_parsed_source`,
        ``ingest.pipeline.run_ingest`` and ``ingest_lock`` (another ingest running).
    """
    from ingest.parsers.base import ParseStats
    from ingest.pipeline import ingest_lock, run_ingest
    from store.files import ImageFiles

    concurrency = cfg.ingest.concurrency if options.concurrency is None else options.concurrency
    if concurrency < 1:
        raise BadRequest("concurrency must be at least 1")
    stats = ParseStats()
    with open_parsed_source(request, cfg, stats) as parsed, ingest_lock(cfg.data_dir):
        async with open_database(cfg.db_path) as db:
            await sync_configured_labels(db, cfg)

            async def run(fetch: Fetcher | None) -> IngestSummary:
                return await run_ingest(
                    db,
                    ImageFiles(cfg.images_dir),
                    parsed.posts,
                    stats,
                    source=parsed.source,
                    people=cfg.people,
                    reader=parsed.reader,
                    fetcher=fetch,
                    retry_failed=options.retry_failed,
                    max_bytes=cfg.ingest.max_bytes,
                    max_pixels=cfg.ingest.max_pixels,
                    concurrency=concurrency,
                    batch_size=cfg.ingest.batch_size,
                    on_progress=on_progress,
                )

            if fetcher is not None:
                return await run(fetcher)
            async with open_downloader(
                cfg, concurrency=concurrency, allow_private=options.allow_private
            ) as downloader:
                return await run(downloader)
