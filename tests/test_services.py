"""The services layer the CLI and the bot share: live images, model selection, training, ingest."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from ingest.download import Downloader, create_session
from ingest.errors import DownloadError, ImageRejected
from ingest.parsers import discord_export
from ingest.parsers.base import ParseStats
from ingest.pipeline import run_ingest
from memetag.services.media import (
    MediaLimits,
    discord_post,
    fetch_post_image,
    get_stored_post,
    store_fetched_image,
)
from store.files import ImageFiles
from store.queries import images, posts, reports
from tests.helpers.imagegen import make_bomb_png, make_image
from tests.helpers.imageserver import ImageServer

CHANNEL = "1000000000000000001"
MESSAGE = "1060000000000000001"
AUTHOR = "500000000000000001"
LIMITS = MediaLimits(max_bytes=1_000_000, max_pixels=10_000_000)


def _live(position: int = 0, *, url: str = "https://cdn.example/a.png", **kw):
    return discord_post(
        message_id=MESSAGE,
        position=position,
        channel_id=CHANNEL,
        author_id=AUTHOR,
        author_name="Person A",
        posted_at=datetime(2023, 1, 6, 14, 24, 31, tzinfo=UTC),
        url=url,
        conversation_name="Example guild / general",
        **kw,
    )


def _export(url: str, *, files=("a.png",)) -> bytes:
    """A DiscordChatExporter channel file: one message with these attachments."""
    return json.dumps(
        {
            "guild": {"id": "700000000000000001", "name": "Example guild"},
            "channel": {"id": CHANNEL, "name": "general"},
            "messages": [
                {
                    "id": MESSAGE,
                    "timestamp": "2023-01-06T14:24:31.114+00:00",
                    "author": {"id": AUTHOR, "name": "person_a", "nickname": "Person A"},
                    "attachments": [
                        {"id": str(i), "url": f"{url}/{name}", "fileName": name}
                        for i, name in enumerate(files)
                    ],
                    "embeds": [],
                    "reactions": [],
                }
            ],
        }
    ).encode()


async def _ingest_export(db, files, data: bytes):
    stats = ParseStats()
    parsed = discord_export.iter_posts(io.BytesIO(data), file="x.json", base_dir="", stats=stats)
    async with create_session(allow_private=True, timeout_s=5) as session:
        fetcher = Downloader(session, allow_private=True, retries=1, backoff_base=0.01)
        return await run_ingest(
            db,
            files,
            parsed,
            stats,
            source="discord",
            people={},
            fetcher=fetcher,
            max_pixels=LIMITS.max_pixels,
        )


async def test_live_image_then_export_of_the_same_channel_adds_nothing(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    png = make_image("PNG", seed=3)
    stored = await store_fetched_image(db, files, _live(), png, limits=LIMITS)
    assert stored.created and stored.new_image
    assert stored.path.read_bytes() == png
    assert stored.path == files.path_for(stored.sha256, "png")

    # Storing it again (a replayed gateway event) is a no-op.
    again = await store_fetched_image(db, files, _live(), png, limits=LIMITS)
    assert (again.post_id, again.image_id) == (stored.post_id, stored.image_id)
    assert not again.created

    async with ImageServer() as server:
        server.add_bytes("/att/a.png", png)
        summary = await _ingest_export(db, files, _export(server.url("/att")))
        assert server.hits["/att/a.png"] == 0  # known and stored: not fetched again
    assert (summary.new_posts, summary.known_posts, summary.stored) == (0, 1, 0)
    [post] = await posts.list_posts(db, "discord")
    assert (post.id, post.source_id) == (stored.post_id, f"{MESSAGE}:0")
    assert post.conversation_id == CHANNEL
    assert post.author_name == "Person A" and post.status == "stored"
    stats = await reports.get_stats(db)
    assert (stats.images, stats.people) == (1, 1)


async def test_export_first_then_live_image_is_known(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    png = make_image("PNG", seed=4)
    async with ImageServer() as server:
        server.add_bytes("/att/a.png", png)
        await _ingest_export(db, files, _export(server.url("/att")))
        known = await get_stored_post(db, files, _live())
        assert known is not None and not known.created
        async with create_session(allow_private=True, timeout_s=5) as session:
            downloader = Downloader(session, allow_private=True, retries=1)
            live = await fetch_post_image(
                downloader, db, files, _live(url=server.url("/att/a.png")), limits=LIMITS
            )
        assert server.hits["/att/a.png"] == 1  # only the ingest fetched it
    assert (live.post_id, live.created) == (known.post_id, False)
    assert len(await posts.list_posts(db, "discord")) == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html>not an image</html>", "not_image"),
        (make_image("PNG", seed=5)[:-40], "truncated"),
        (make_bomb_png(20_000, 20_000), "decompression_bomb"),
        (b"\x89PNG" + b"\0" * 2_000_000, "too_large"),
    ],
)
async def test_bad_bytes_are_a_one_line_refusal_and_store_nothing(db, tmp_path, data, reason):
    files = ImageFiles(tmp_path / "images")
    with pytest.raises(ImageRejected) as caught:
        await store_fetched_image(db, files, _live(), data, limits=LIMITS)
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value) and str(caught.value).startswith(reason)
    assert await posts.list_posts(db) == []
    assert files.count_image_files() == 0


async def test_live_download_goes_through_the_ingest_downloader(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    jpg = make_image("JPEG", seed=6)
    async with ImageServer() as server:
        server.add_bytes("/a.jpg", jpg)
        server.add_bytes("/page", b"<!doctype html><html></html>")
        async with create_session(timeout_s=5) as session:
            # The default policy refuses loopback, as ingest's does.
            guarded = Downloader(session, retries=1)
            with pytest.raises(DownloadError) as caught:
                await fetch_post_image(guarded, db, files, _live(url=server.url("/a.jpg")))
            assert caught.value.reason == "private_address"
        async with create_session(allow_private=True, timeout_s=5) as session:
            downloader = Downloader(session, allow_private=True, retries=1, max_bytes=100)
            with pytest.raises(DownloadError) as caught:
                await fetch_post_image(downloader, db, files, _live(url=server.url("/a.jpg")))
            assert caught.value.reason == "too_large"
            downloader = Downloader(session, allow_private=True, retries=1)
            with pytest.raises(DownloadError) as caught:
                await fetch_post_image(
                    downloader, db, files, _live(1, url=server.url("/page"), must_sniff=True)
                )
            assert caught.value.reason == "not_image"
            assert await posts.list_posts(db) == []
            stored = await fetch_post_image(downloader, db, files, _live(url=server.url("/a.jpg")))
    assert stored.created and stored.path.read_bytes() == jpg
    image = await images.get_image(db, stored.image_id)
    assert image is not None and image.format == "JPEG"


async def test_two_images_of_one_message_are_two_posts_and_a_repost_one_image(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    png = make_image("PNG", seed=7)
    first = await store_fetched_image(db, files, _live(0), png, limits=LIMITS)
    second = await store_fetched_image(db, files, _live(1), png, limits=LIMITS)
    assert first.post_id != second.post_id
    assert first.image_id == second.image_id and not second.new_image and second.created
