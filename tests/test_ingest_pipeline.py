"""The ingest pipeline in-process: record, fetch, dedupe, failures, retry, labels, links."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ingest.download import Downloader, create_session
from ingest.errors import IngestError, MemberMissing
from ingest.parsers.base import ParsedPost, ParseStats
from ingest.pipeline import IngestSummary, ingest_lock, run_ingest
from store.files import ImageFiles
from store.queries import images, labels, posts, reports
from tests.helpers.imagegen import make_bomb_png, make_image
from tests.helpers.imageserver import ImageServer


class DictReader:
    """Bytes inside an 'export', by member name (what ExportSource offers the pipeline)."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self.members = members

    def read_bytes(self, member: str, max_bytes: int) -> bytes:
        if member not in self.members:
            raise MemberMissing("export", member)
        return self.members[member]


def _post(sid: str, *, url=None, local=None, sniff=False, labels_=(), author="a1", fb=()):
    return ParsedPost(
        source="test",
        source_id=sid,
        conversation_id="c",
        conversation_name="Chat",
        author_ref=author,
        author_name=f"Person {author.upper()}",
        posted_at=datetime(2021, 5, 1, tzinfo=UTC),
        url=url,
        local_ref=local,
        must_sniff=sniff,
        labels=tuple(labels_),
        fallback_urls=tuple(fb),
    )


async def _run(db, tmp_path, parsed, *, reader=None, retry_failed=False) -> IngestSummary:
    async with create_session(allow_private=True, timeout_s=5) as session:
        fetcher = Downloader(session, allow_private=True, retries=1, backoff_base=0.01)
        return await run_ingest(
            db,
            ImageFiles(tmp_path / "images"),
            parsed,
            ParseStats(),
            source="test",
            people={},
            reader=reader,
            fetcher=fetcher,
            retry_failed=retry_failed,
            max_pixels=10_000_000,
        )


async def test_record_fetch_dedupe_and_labels(db, tmp_path):
    async with ImageServer() as server:
        jpg = server.add_image("/a.jpg", "JPEG", seed=1)
        server.add_bytes("/dup.jpg", jpg)  # same bytes under another URL
        reader = DictReader({"x/b.png": make_image("PNG", seed=2)})
        parsed = [
            _post("m1:0", url=server.url("/a.jpg"), labels_=["meme"]),
            _post("m2:0", url=server.url("/dup.jpg"), author="b2"),
            _post("m3:0", local="x/b.png", labels_=["news", "photo"]),
        ]
        s = await _run(db, tmp_path, parsed, reader=reader)
    assert (s.new_posts, s.stored, s.new_images, s.duplicates) == (3, 3, 2, 1)
    assert not s.failures
    stats = await reports.get_stats(db)
    assert stats.images == 2 and stats.people == 2
    img = await images.get_image_by_sha256(db, __import__("hashlib").sha256(jpg).hexdigest())
    assert img is not None and img.format == "JPEG" and img.ext == "jpg"
    assert (tmp_path / img.relpath).exists()
    votes = {v.label for v in await labels.list_votes_for_image(db, img.id)}
    assert votes == {"meme"}


async def test_failures_recorded_and_retried(db, tmp_path):
    async with ImageServer() as server:
        server.add_status("/gone.jpg", 404)
        server.add_bytes("/bomb.png", make_bomb_png(), content_type="image/png")
        server.add_bytes("/notimg.jpg", b"<html>nope</html>", content_type="text/html")
        parsed = [
            _post("m1:0", url=server.url("/gone.jpg")),
            _post("m2:0", url=server.url("/bomb.png")),
            _post("m3:0", url=server.url("/notimg.jpg")),
            _post("m4:0", local="missing.png"),
        ]
        s = await _run(db, tmp_path, parsed, reader=DictReader({}))
        assert dict(s.failures) == {
            "http_404": 1,
            "decompression_bomb": 1,
            "not_image": 1,
            "missing_file": 1,
        }
        assert s.stored == 0
        # A plain re-run does not hammer dead links again...
        again = await _run(db, tmp_path, parsed, reader=DictReader({}))
        assert again.stored == 0 and not again.failures and server.hits["/gone.jpg"] == 1
        # ...--retry-failed does, and a link that came back is stored.
        server.add_image("/gone.jpg", "JPEG", seed=9)
        retried = await _run(db, tmp_path, parsed, reader=DictReader({}), retry_failed=True)
    assert retried.retried == 4 and retried.stored == 1
    stats = await reports.get_stats(db)
    assert stats.failures_by_reason == {"decompression_bomb": 1, "not_image": 1, "missing_file": 1}
    assert not list((tmp_path / "images").rglob("*.png"))  # the bomb never reached disk


async def test_link_that_is_not_an_image_is_no_failure(db, tmp_path):
    async with ImageServer() as server:
        server.add_bytes("/article", b"<!doctype html><html></html>", content_type="text/html")
        server.add_image("/pic", "PNG", seed=3)  # no extension: sniffed as an image
        parsed = [
            _post("l1:0", url=server.url("/article"), sniff=True),
            _post("l2:0", url=server.url("/pic"), sniff=True),
        ]
        s = await _run(db, tmp_path, parsed)
    assert s.not_images == 1 and s.stored == 1 and not s.failures
    rows = [r async for r in reports.iter_export_rows(db)]
    assert len(rows) == 1 and rows[0].filename.endswith(".png")


async def test_fallback_url_used(db, tmp_path):
    async with ImageServer() as server:
        server.add_status("/dead.jpg", 410)
        server.add_image("/alive.jpg", "JPEG", seed=4)
        parsed = [_post("m:0", url=server.url("/dead.jpg"), fb=[server.url("/alive.jpg")])]
        s = await _run(db, tmp_path, parsed)
    assert s.stored == 1


async def test_parse_error_midway_keeps_what_was_recorded(db, tmp_path):
    reader = DictReader({f"{i}.png": make_image("PNG", seed=i) for i in range(3)})

    def broken():
        yield _post("m0:0", local="0.png")
        yield _post("m1:0", local="1.png")
        raise IngestError("export.json (at byte 1234): unexpected end of file")

    with pytest.raises(IngestError, match="at byte 1234"):
        await _run(db, tmp_path, broken(), reader=reader)
    # The posts recorded before the break are kept; a fixed export resumes and finishes.
    assert len(await posts.list_posts(db)) == 2
    fixed = [_post(f"m{i}:0", local=f"{i}.png") for i in range(3)]
    s = await _run(db, tmp_path, fixed, reader=reader)
    assert (s.new_posts, s.known_posts, s.stored) == (1, 2, 3)


def test_ingest_lock_is_exclusive(tmp_path):
    with ingest_lock(tmp_path):
        with pytest.raises(IngestError, match="another ingest is running"):
            with ingest_lock(tmp_path):
                pass


async def test_too_large_is_told_by_type_not_by_message_text(db, tmp_path):
    from ingest.archive import open_export
    from ingest.errors import ParseError

    export = tmp_path / "export"
    export.mkdir()
    (export / "big.png").write_bytes(make_image("PNG", (256, 256), seed=5))
    (export / "odd.png").write_bytes(make_image("PNG", seed=6))

    class DamagedOdd:
        """The real folder reader, except that one member's data is damaged."""

        def __init__(self, source) -> None:
            self.source = source

        def read_bytes(self, member: str, max_bytes: int) -> bytes:
            if member == "odd.png":
                # A damaged member whose message happens to say "larger than".
                raise ParseError(member, "header says the block is larger than the file")
            return self.source.read_bytes(member, max_bytes)

    with open_export(export) as source:
        async with create_session(allow_private=True, timeout_s=5) as session:
            s = await run_ingest(
                db,
                ImageFiles(tmp_path / "images"),
                [_post("m1:0", local="big.png"), _post("m2:0", local="odd.png")],
                ParseStats(),
                source="test",
                people={},
                reader=DamagedOdd(source),
                fetcher=Downloader(session, allow_private=True),
                max_bytes=64,
            )
    assert dict(s.failures) == {"too_large": 1, "unreadable": 1}


def _large_discord_export(path, messages: int, every: int):
    """A DCE channel of mostly text, with an image link every ``every`` messages."""
    import json

    author = {"id": "500000000000000001", "name": "person_a", "nickname": "Person A"}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"guild": {"id": "1", "name": "G"}, "channel": {"id": "2", "name": "c"},')
        fh.write('"messages": [')
        for i in range(messages):
            attachments = []
            if i % every == 0:
                url = f"https://cdn.example.invalid/attachments/2/{i}/pic{i}.png"
                attachments = [{"id": f"9{i}", "url": url, "fileName": f"pic{i}.png"}]
            message = {
                "id": str(10**18 + i),
                "type": "Default",
                "timestamp": "2023-01-06T14:24:31.114+00:00",
                "content": f"message number {i} with some words in it " * 3,
                "author": author,
                "attachments": attachments,
                "embeds": [],
                "stickers": [],
                "reactions": [],
            }
            fh.write(("," if i else "") + json.dumps(message))
        fh.write("]}")
    return path


async def test_a_large_export_never_stalls_the_event_loop(db, tmp_path):
    from ingest.parsers import discord_export
    from ingest.pipeline import IngestSummary, record_posts

    export = _large_discord_export(tmp_path / "big.json", messages=20_000, every=4_000)
    ticks = 0
    seen_at: list[int] = []

    async def ticker() -> None:
        # One tick per turn of the loop, not per 10 ms: a fast machine parses the 16 000 text
        # messages in a few ms, and a timed ticker then sees too few ticks to tell.
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    stats = ParseStats()

    def parsed():
        with open(export, "rb") as stream:
            for post in discord_export.iter_posts(
                stream, file="big.json", base_dir="", stats=stats
            ):
                seen_at.append(ticks)  # how far the ticker got when the parser reached this post
                yield post

    task = asyncio.create_task(ticker())
    try:
        # One batch for the whole export: the loop gets no break between batches either.
        seen = await record_posts(
            db, parsed(), stats, IngestSummary("discord"), people={}, batch_size=10_000
        )
    finally:
        task.cancel()
    assert len(seen) == 5 and stats.messages == 20_000
    # Between the first and the last image lie 16 000 text messages: the ticker ran meanwhile.
    assert seen_at[-1] - seen_at[0] >= 3, seen_at  # a blocked loop shows 0 turns


async def test_a_cancelled_parse_leaves_no_worker_inside_the_parser(db):
    import threading
    import time as clock

    from ingest.pipeline import IngestSummary, record_posts

    started, closed = threading.Event(), threading.Event()

    def slow_export():
        try:
            for i in range(10_000):
                started.set()
                clock.sleep(0.002)  # a parser deep in a large file
                yield _post(f"m{i}:0", local=f"{i}.png")
        finally:
            closed.set()  # the export is released by the parser itself, not under it

    task = asyncio.create_task(
        record_posts(
            db, slow_export(), ParseStats(), IngestSummary("test"), people={}, batch_size=50
        )
    )
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()  # the worker finished its batch, then the parser was closed


async def test_fetch_phase_keeps_a_bounded_number_of_tasks(db, tmp_path):
    # A million-row CSV must not become a million Post objects and tasks at once.
    image = make_image("PNG", seed=3)
    alive: list[int] = []

    class CountingFetcher:
        async def fetch(self, url, *, must_be_image=False, fallback_urls=()):
            alive.append(len(asyncio.all_tasks()))
            await asyncio.sleep(0)
            return image

    parsed = [_post(f"m{i}:0", url=f"https://example.com/{i}.png") for i in range(1200)]
    summary = await run_ingest(db, ImageFiles(tmp_path / "images"), parsed, ParseStats(),
                               source="test", people={}, fetcher=CountingFetcher(),
                               concurrency=2)  # fmt: skip
    assert summary.stored == 1200 and len(alive) == 1200
    assert max(alive) <= 20, max(alive)
