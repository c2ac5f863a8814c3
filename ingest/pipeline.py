"""The ingest pipeline: parser output → posts in the store → image bytes fetched, checked, stored.

Two phases, both resumable. *Record*: parsed posts are written in batches (one transaction per
batch); a post already known is left alone, so re-running adds nothing. *Fetch*: every post of
this run still pending (and, with ``retry_failed``, every failed one) has its bytes fetched —
from the export itself (``local_ref``) or by URL — validated by decoding under the bomb limit,
written content-addressed, and only then linked in the store. Killing the process at any point
leaves pending posts pending and at worst an orphan file, which a later run sweeps once it is
old enough (``store.orphans``): another process (the bot) may be writing beside this one.

The parsers are synchronous; they run in a worker thread, so the event loop (and whatever else
shares it, such as a gateway connection) never waits on a large export.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ingest.errors import (
    DownloadError,
    ImageRejected,
    IngestError,
    MemberMissing,
    MemberTooLarge,
    clip,
)
from ingest.images import ImageInfo, inspect_image
from ingest.parsers.base import ParsedPost, ParseStats
from store.db import Database, translate_error
from store.errors import StoreError
from store.files import ImageFiles
from store.orphans import ORPHAN_GRACE_S, check_files_belong, sweep_orphans
from store.queries.images import claim_image_files
from store.queries.posts import (
    StoredImage,
    StoreOutcome,
    count_posts_to_fetch,
    find_post_ids,
    insert_posts,
    list_posts_to_fetch,
    record_failure,
    record_stored_many,
)
from store.queries.privacy import list_opted_out
from store.rows import NewPost, Post
from store.warning_context import warnings_about

log = logging.getLogger(__name__)

MAX_FAILURE_EXAMPLES = 10
_FETCH_PAGE = 500  # posts read from the store at a time in the fetch phase
# Posts whose bytes are in the export are stored in batches: one worker-thread job reads and
# checks a batch, one transaction claims its new files, one job writes them, one transaction
# links them all. Per post, the hand-offs between the event loop, worker threads and the
# database thread cost more than reading and checking a small image.
_LOCAL_BATCH = 64
_LOCAL_BATCH_BYTES = 32 * 1024 * 1024  # bytes one job reads ahead, at most (plus one file)
_LOCAL_BATCHES_IN_FLIGHT = 2  # one being read and checked while the other is stored

# on_progress(phase, done, total, failures): phase is "parse" or "download".
ProgressFn = Callable[[str, int, int | None, int], None]


class LocalReader(Protocol):
    """What the fetch phase needs from an export to read bytes stored inside it."""

    def read_bytes(self, member: str, max_bytes: int) -> bytes:
        """The member's bytes. Raises MemberMissing (no such member), MemberTooLarge (over
        ``max_bytes``) or another IngestError (the export's data for it is damaged)."""
        ...


class Fetcher(Protocol):
    async def fetch(
        self, url: str, *, must_be_image: bool = False, fallback_urls: Iterable[str] = ()
    ) -> bytes: ...


@dataclass
class IngestSummary:
    """What one ingest run did; the CLI prints it."""

    source: str
    messages: int = 0
    image_items: int = 0
    new_posts: int = 0
    known_posts: int = 0
    stored: int = 0
    new_images: int = 0
    duplicates: int = 0
    not_images: int = 0
    failures: Counter = field(default_factory=Counter)
    retried: int = 0
    skipped: Counter = field(default_factory=Counter)
    bad_records: int = 0
    bad_examples: list[str] = field(default_factory=list)
    # One line per failed item ("<file or URL>: <reason>: <detail>"), the first few only.
    failure_examples: list[str] = field(default_factory=list)
    orphans_swept: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "messages_read": self.messages,
            "image_items": self.image_items,
            "new_posts": self.new_posts,
            "already_known_posts": self.known_posts,
            "stored": self.stored,
            "new_images": self.new_images,
            "duplicates_by_hash": self.duplicates,
            "links_not_images": self.not_images,
            "failures_by_reason": dict(sorted(self.failures.items())),
            "retried": self.retried,
            "skipped": dict(sorted(self.skipped.items())),
            "bad_records": self.bad_records,
            "bad_examples": self.bad_examples,
            "failure_examples": self.failure_examples,
            "orphan_files_swept": self.orphans_swept,
            "seconds": round(self.seconds, 2),
        }


@contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    """One ingest at a time per data dir, so two runs do not fetch the same posts twice.

    It is not what keeps files safe: the bot writes while an ingest runs, and the orphan sweep
    is safe beside any writer (see ``store.orphans``).
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / ".ingest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise translate_error(exc, data_dir) or StoreError(
            f"{data_dir}: cannot lock the data dir: {exc.strerror or exc}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IngestError(f"{data_dir}: another ingest is running on this data dir") from None
        yield
    finally:
        os.close(fd)


def _to_new_post(p: ParsedPost) -> NewPost:
    return NewPost(
        source=p.source,
        source_id=p.source_id,
        conversation_id=p.conversation_id,
        conversation_name=p.conversation_name,
        author_source=p.source,
        author_ref=p.author_ref,
        author_name=p.author_name,
        posted_at=p.posted_at,
        url=p.url,
        local_ref=p.local_ref,
        media_hint=p.media_hint,
        must_sniff=p.must_sniff,
        reaction_count=p.reaction_count,
        labels=p.labels,
        fallback_urls=p.fallback_urls,
    )


def _one_line(group: BaseExceptionGroup, files_root: Path, db_path: Path) -> BaseException:
    """The first real error inside a TaskGroup's group, as the error the CLI shows in one line."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if isinstance(first, (IngestError, StoreError)):
        return first
    if isinstance(first, sqlite3.Error):
        return translate_error(first, db_path) or StoreError(f"{db_path}: {first}")
    if isinstance(first, OSError):
        return translate_error(first, files_root) or StoreError(
            f"{files_root}: cannot store images: {first}"
        )
    return first


async def record_posts(
    db: Database,
    parsed: Iterable[ParsedPost],
    stats: ParseStats,
    summary: IngestSummary,
    *,
    people: Mapping[str, str],
    batch_size: int = 500,
    on_progress: ProgressFn | None = None,
) -> PostIds:
    """Phase 1: write parsed posts in batches. Returns the ids of the posts seen in this run.

    The parser runs in a worker thread, one batch ahead of the writes: the event loop only
    waits for it when the next batch is not ready. The same item listed twice in one export is
    one post (the store keys posts by source id), counted once.
    """
    seen = PostIds()
    posts = iter(parsed)

    def next_batch() -> tuple[list[NewPost], list[str | None], IngestError | None]:
        # Worker thread. Only one call runs at a time, and only it touches the parser and
        # `stats` until the parse is over.
        batch: list[NewPost] = []
        listed: list[str | None] = []
        try:
            for post in posts:
                batch.append(_to_new_post(post))
                listed.append(post.listed_at)
                if len(batch) >= batch_size:
                    break
        except IngestError as exc:
            # The file broke part-way: the posts read before the break are still recorded.
            return batch, listed, exc
        return batch, listed, None

    repeats = (
        ParseStats()
    )  # listings repeated where that is a mistake; merged into stats at the end

    async def drop_repeats(batch: list[NewPost], listed: list[str | None]) -> list[NewPost]:
        """The batch less the items a labels CSV lists again (each a bad record)."""
        if not any(listed):
            return batch
        known: dict[tuple[str, str], int] = {}
        by_source: dict[str, list[str]] = {}
        for post, where in zip(batch, listed, strict=True):
            if where is not None:
                by_source.setdefault(post.source, []).append(post.source_id)
        for source, ids in by_source.items():
            for source_id, post_id in (await find_post_ids(db, source, ids)).items():
                known[(source, source_id)] = post_id
        kept: list[NewPost] = []
        in_batch: set[tuple[str, str]] = set()
        for post, where in zip(batch, listed, strict=True):
            if where is not None:
                key = (post.source, post.source_id)
                if key in in_batch or (key in known and known[key] in seen):
                    repeats.bad(f"{where}: the same file as an earlier line")
                    continue
                in_batch.add(key)
            kept.append(post)
        return kept

    async def flush(batch: list[NewPost]) -> None:
        # Members who opted out in Discord (`/tagger optout`, `forget-me`): nothing of theirs is
        # recorded, so nothing of theirs is ever fetched, not even from an export.
        discord_refs = {
            p.author_ref for p in batch if p.author_source == "discord" and p.author_ref
        }
        if discord_refs:
            opted_out = await list_opted_out(db, "discord", discord_refs)
            if opted_out:
                kept = [
                    p
                    for p in batch
                    if not (p.author_source == "discord" and p.author_ref in opted_out)
                ]
                summary.skipped["opted_out"] += len(batch) - len(kept)
                batch = kept
                if not batch:
                    return
        try:
            result = await insert_posts(db, batch, people)
        except sqlite3.Error as exc:
            raise translate_error(exc, db.path) or StoreError(
                f"{db.path}: cannot record posts: {exc}"
            ) from exc
        for post_id, recorded in result.post_ids:
            if seen.add(post_id):  # not listed earlier in this run
                if recorded:
                    summary.new_posts += 1
                else:
                    summary.known_posts += 1

    recorded = 0
    ahead = asyncio.ensure_future(asyncio.to_thread(next_batch))
    try:
        while True:
            # Shielded: a cancelled ingest must not forget a worker still inside the parser.
            batch, listed, broken = await asyncio.shield(ahead)
            if not batch and broken is None:
                break
            if broken is None:
                ahead = asyncio.ensure_future(asyncio.to_thread(next_batch))
            if batch:
                read = len(batch)
                batch = await drop_repeats(batch, listed)
                if batch:
                    await flush(batch)
                recorded += read
            if broken is not None:
                raise broken
            if on_progress:
                on_progress("parse", recorded, None, stats.bad_records)
    finally:
        # Leave no worker inside the parser: the caller closes the export right after.
        if not ahead.done():
            await asyncio.wait([ahead])
        close = getattr(posts, "close", None)
        if close is not None:
            try:
                await asyncio.to_thread(close)
            except Exception:  # never hide the error that brought us here
                log.debug("closing the parser failed", exc_info=True)
    if on_progress:
        on_progress("parse", recorded, recorded, stats.bad_records)
    for example in repeats.bad_examples:
        stats.bad(example)
    stats.bad_records += repeats.bad_records - len(repeats.bad_examples)
    summary.messages = stats.messages
    summary.image_items = len(seen)
    summary.skipped.update(stats.skipped)
    summary.bad_records = stats.bad_records
    summary.bad_examples = list(stats.bad_examples)
    return seen


class PostIds:
    """A set of post ids held as one bit per id up to the largest: what a run has seen, in
    memory that does not grow with the row count (a million posts: 125 KB)."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._count = 0

    def add(self, post_id: int) -> bool:
        """Add ``post_id``; True if it was not in the set yet."""
        byte, mask = post_id >> 3, 1 << (post_id & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self._count += 1
        return True

    def __contains__(self, post_id: object) -> bool:
        if not isinstance(post_id, int) or post_id < 0:
            return False
        byte = post_id >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (post_id & 7)))

    def __len__(self) -> int:
        return self._count


class FetchablePost(Protocol):
    """Where a post's bytes are: a stored ``Post`` or a ``NewPost`` not recorded yet."""

    source_id: str
    url: str | None
    local_ref: str | None
    must_sniff: bool
    fallback_urls: tuple[str, ...]


async def fetch_post_bytes(
    post: FetchablePost,
    reader: LocalReader | None,
    reader_lock: asyncio.Lock,
    fetcher: Fetcher | None,
    max_bytes: int,
) -> bytes:
    """The bytes of one post: read from the export (``local_ref``) or downloaded by URL.

    Raises:
        DownloadError: the file is missing, too large or unreadable, or the download failed.
    """
    if post.local_ref is not None:
        # Archive readers (tar in particular) are not safe to use from two threads at once.
        async with reader_lock:
            return await asyncio.to_thread(_read_local, reader, post.local_ref, max_bytes)
    if post.url is None:
        raise DownloadError(post.source_id, "bad_url", "the post has neither a URL nor a file")
    if fetcher is None:
        raise DownloadError(post.url, "offline", "no downloader available")
    return await fetcher.fetch(
        post.url, must_be_image=post.must_sniff, fallback_urls=post.fallback_urls
    )


def _read_local(reader: LocalReader | None, member: str, max_bytes: int) -> bytes:
    """The bytes of one export member (blocking; the caller keeps other threads off ``reader``).

    Raises:
        DownloadError: the file is missing, too large or unreadable.
    """
    if reader is None:
        raise DownloadError(member, "missing_file", "not found in the export")
    try:
        return reader.read_bytes(member, max_bytes)
    except MemberMissing:
        raise DownloadError(member, "missing_file", "not found in the export") from None
    except MemberTooLarge as exc:
        raise DownloadError(member, "too_large", str(exc)) from None
    except IngestError as exc:
        # The archive's data for this member is damaged: this post fails, the rest of the
        # export goes on.
        raise DownloadError(member, "unreadable", str(exc)) from None


class CheckedImages:
    """What ``inspect_image`` said of bytes already checked in this run, by their sha256.

    A chat reposts: the same bytes under another name. Checking them again would decode the
    same pixels to the same answer, so the answer is reused; it is keyed by the hash of the
    whole bytes, never by a name, so changed bytes are always checked. Bounded: holds the
    latest ``limit`` answers (each a few hundred bytes). Thread-safe.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._infos: dict[str, ImageInfo] = {}
        self._lock = threading.Lock()

    def check(self, data: bytes, *, max_pixels: int) -> ImageInfo:
        """``inspect_image(data, max_pixels=...)``, answered from memory for bytes seen before."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            info = self._infos.get(sha)
        if info is not None and info.width * info.height <= max_pixels:
            return info
        info = inspect_image(data, max_pixels=max_pixels)
        with self._lock:
            if len(self._infos) >= self._limit:
                del self._infos[next(iter(self._infos))]  # the oldest answer
            self._infos[sha] = info
        return info


def _read_and_check_local(
    posts: Sequence[FetchablePost],
    reader: LocalReader | None,
    read_lock: threading.Lock,
    checked: CheckedImages,
    *,
    max_bytes: int,
    max_pixels: int,
) -> list[tuple[ImageInfo, bytes] | DownloadError | ImageRejected]:
    """Worker thread: read and check the leading posts of ``posts`` whose bytes are local.

    Stops once ``_LOCAL_BATCH_BYTES`` are held (after at least one post), so a batch of large
    files never holds more than that: the caller goes on with the posts not reached. Returns
    one result per post reached, in order: the checked image, or why the post failed.
    """
    results: list[tuple[ImageInfo, bytes] | DownloadError | ImageRejected] = []
    held = 0
    for post in posts:
        if held >= _LOCAL_BATCH_BYTES:
            break
        member = post.local_ref or ""
        try:
            with read_lock:
                data = _read_local(reader, member, max_bytes)
            with warnings_about(member):
                info = checked.check(data, max_pixels=max_pixels)
        except (DownloadError, ImageRejected) as exc:
            results.append(exc)
        else:
            results.append((info, data))
            held += len(data)
    return results


async def check_image_bytes(data: bytes, *, max_pixels: int, about: object) -> ImageInfo:
    """Decode and describe untrusted bytes in a worker thread (see ``inspect_image``).

    Args:
        about: the item the bytes are (a URL, export member or source id): Pillow's warnings
            (corrupt EXIF...) then name it.

    Raises:
        ImageRejected: not an acceptable image (reason ``empty``, ``not_image``,
            ``decompression_bomb``, ``truncated``, ``corrupt``).
    """
    with warnings_about(about):
        return await asyncio.to_thread(inspect_image, data, max_pixels=max_pixels)


async def store_checked_image(
    db: Database, files: ImageFiles, post_id: int, info: ImageInfo, data: bytes
) -> StoreOutcome:
    """Write checked bytes content-addressed and link the post to them.

    Claim, write, then link: a sweep in any process deletes only a file whose claim is stale,
    and the link re-checks the file under the write lock. The file write runs in a thread.
    """
    (outcome,) = await store_checked_images(db, files, [(post_id, info, data)])
    return outcome


async def store_checked_images(
    db: Database, files: ImageFiles, checked: Sequence[tuple[int, ImageInfo, bytes]]
) -> list[StoreOutcome]:
    """:func:`store_checked_image` for many (post id, info, bytes): one claim transaction, one
    thread job writing the files, one transaction linking every post. Returns one outcome per
    item, in order."""
    if not checked:
        return []
    distinct: dict[str, tuple[ImageInfo, bytes]] = {}
    for _, info, data in checked:
        distinct.setdefault(info.sha256, (info, data))

    def put() -> None:
        for info, data in distinct.values():
            files.write(info.sha256, info.ext, data)

    def ensure() -> None:  # under the write lock: a sweep cannot take a file from here on
        for info, data in distinct.values():
            files.ensure(info.sha256, info.ext, data)

    await claim_image_files(db, [(info.sha256, info.ext) for info, _ in distinct.values()])
    await asyncio.to_thread(put)
    return await record_stored_many(
        db,
        [
            (
                post_id,
                StoredImage(
                    info.sha256,
                    info.phash,
                    info.width,
                    info.height,
                    info.format,
                    info.ext,
                    info.bytes,
                ),
            )
            for post_id, info, _ in checked
        ],
        ensure_files=ensure,
    )


async def fetch_images(
    db: Database,
    files: ImageFiles,
    summary: IngestSummary,
    *,
    source: str,
    only: Container[int] | None,
    reader: LocalReader | None,
    fetcher: Fetcher | None,
    retry_failed: bool,
    max_bytes: int,
    max_pixels: int,
    concurrency: int = 8,
    on_progress: ProgressFn | None = None,
) -> None:
    """Phase 2: fetch, validate and store every pending post (of this run, when ``only`` is set)."""
    # Posts are read a page at a time and only a few tasks exist at once: a million-row CSV
    # held as Post objects and tasks cost 3 KB a row, and the cyclic GC rescanned them all.
    total = await count_posts_to_fetch(db, source, retry_failed=retry_failed)  # until listed
    window = asyncio.Semaphore(4 * concurrency)
    batches = asyncio.Semaphore(_LOCAL_BATCHES_IN_FLIGHT)
    done = 0
    failures = 0
    sem = asyncio.Semaphore(concurrency)
    reader_lock = asyncio.Lock()
    read_lock = threading.Lock()  # local posts: archive readers are not thread-safe
    checked = CheckedImages()
    # One batch is read and checked while the one before it is stored; two checking at once
    # would only contend for the GIL.
    reading = asyncio.Lock()

    def count_stored(outcome: StoreOutcome) -> None:
        summary.stored += 1
        if outcome.is_new:
            summary.new_images += 1
        else:
            summary.duplicates += 1

    async def note_failure(post: Post, exc: DownloadError | ImageRejected) -> None:
        nonlocal failures
        reason, detail = exc.reason, exc.detail or str(exc)
        # A link or embed is only a post if it is an image: anything else is no failure.
        if post.must_sniff and reason in ("not_image", "empty"):
            await record_failure(db, post.id, reason, detail, not_image=True)
            summary.not_images += 1
        else:
            await record_failure(db, post.id, reason, detail)
            summary.failures[reason] += 1
            if len(summary.failure_examples) < MAX_FAILURE_EXAMPLES:
                where = post.local_ref or post.url or post.source_id
                summary.failure_examples.append(f"{clip(where)}: {reason}: {detail}")
            failures += 1

    def progressed(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress("download", done, total, failures)

    async def one(post: Post) -> None:
        async with sem:
            try:
                data = await fetch_post_bytes(post, reader, reader_lock, fetcher, max_bytes)
                info = await check_image_bytes(
                    data, max_pixels=max_pixels, about=post.local_ref or post.url or post.source_id
                )
                count_stored(await store_checked_image(db, files, post.id, info, data))
            except (DownloadError, ImageRejected) as exc:
                await note_failure(post, exc)
            progressed(1)

    async def one_then_release(post: Post) -> None:
        try:
            await one(post)
        finally:
            window.release()

    async def read_and_check(
        posts: list[Post],
    ) -> list[tuple[ImageInfo, bytes] | DownloadError | ImageRejected]:
        job = asyncio.ensure_future(
            asyncio.to_thread(
                _read_and_check_local,
                posts,
                reader,
                read_lock,
                checked,
                max_bytes=max_bytes,
                max_pixels=max_pixels,
            )
        )
        try:
            # Shielded: a cancelled ingest must not leave a worker inside the reader, which
            # the caller closes right after.
            return await asyncio.shield(job)
        finally:
            if not job.done():
                await asyncio.wait([job])

    async def local_batch(posts: list[Post]) -> None:
        """Posts whose bytes are in the export, a batch at a time; each post fails alone."""
        while posts:
            async with reading:
                results = await read_and_check(posts)
            reached, posts = posts[: len(results)], posts[len(results) :]
            checked = []
            failed = []
            for post, result in zip(reached, results, strict=True):
                if isinstance(result, tuple):
                    checked.append((post.id, *result))
                else:
                    failed.append((post, result))
            del results
            for outcome in await store_checked_images(db, files, checked):
                count_stored(outcome)
            del checked  # the bytes: not held while the next job reads
            for post, exc in failed:
                await note_failure(post, exc)
            progressed(len(reached))

    async def local_batch_then_release(posts: list[Post]) -> None:
        try:
            await local_batch(posts)
        finally:
            batches.release()

    if on_progress:
        on_progress("download", 0, total, 0)
    try:
        async with asyncio.TaskGroup() as tg:
            listed = after = 0
            local: list[Post] = []
            while page := await list_posts_to_fetch(
                db, source, retry_failed=retry_failed, after_id=after, limit=_FETCH_PAGE
            ):
                after = page[-1].id
                for post in page:
                    if only is not None and post.id not in only:
                        continue
                    listed += 1
                    if post.status == "failed":
                        summary.retried += 1
                    if post.local_ref is not None:
                        local.append(post)
                        if len(local) >= _LOCAL_BATCH:
                            await batches.acquire()
                            tg.create_task(local_batch_then_release(local))
                            local = []
                        continue
                    await window.acquire()
                    tg.create_task(one_then_release(post))
            if local:
                await batches.acquire()
                tg.create_task(local_batch_then_release(local))
            total = listed
    except ExceptionGroup as group:
        # A full disk or a locked database stops every download: say it in one line.
        raise _one_line(group, files.root, db.path) from group


async def run_ingest(
    db: Database,
    files: ImageFiles,
    parsed: Iterable[ParsedPost],
    stats: ParseStats,
    *,
    source: str,
    people: Mapping[str, str],
    reader: LocalReader | None = None,
    fetcher: Fetcher | None = None,
    retry_failed: bool = False,
    max_bytes: int = 25 * 1024 * 1024,
    max_pixels: int = 80_000_000,
    concurrency: int = 8,
    batch_size: int = 500,
    on_progress: ProgressFn | None = None,
    orphan_grace_s: float = ORPHAN_GRACE_S,
) -> IngestSummary:
    """Record then fetch. The caller holds ``ingest_lock`` for the data dir.

    Raises:
        StoreMismatch: the database is empty but the image folder is not (a lost database).
    """
    started = time.monotonic()
    summary = IngestSummary(source=source)
    await check_files_belong(db, files)
    summary.orphans_swept = await sweep_orphans(db, files, grace_s=orphan_grace_s)
    seen = await record_posts(
        db, parsed, stats, summary, people=people, batch_size=batch_size, on_progress=on_progress
    )
    await fetch_images(
        db,
        files,
        summary,
        source=source,
        only=seen,
        reader=reader,
        fetcher=fetcher,
        retry_failed=retry_failed,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        concurrency=concurrency,
        on_progress=on_progress,
    )
    summary.seconds = time.monotonic() - started
    return summary
