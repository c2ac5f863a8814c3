"""Live images into the store, exactly as ingest stores them: the same checks, ids and files.

A post the bot sees is recorded like an item of a DiscordChatExporter export (source
``discord``, source id ``<message id>:<n>``), so a later ``memetag ingest discord-export`` of the
same channel finds it already known. Its bytes pass the same gates as ingest's: the downloader
(byte cap, private-address refusal, early sniffing) when fetched by URL, then
``ingest.pipeline.check_image_bytes`` (sniffing, bomb limit, full decode) and
``store_checked_images`` (content-addressed files, claimed then linked). The bot, which
decodes each image for the model anyway, makes the check from that decode (``SharedCheck``).
Decoding, hashing and file writes run in worker threads; nothing here blocks the event loop.

Bad bytes raise ``ImageRejected`` and a failed download ``DownloadError`` (both
``ingest.errors.IngestError``, with a short ``reason`` code and a one-line message); then nothing
is stored, so a later ingest of the export still fetches the item itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from ingest.errors import ImageRejected
from ingest.images import ImageInfo, describe_decoded
from ingest.parsers.discord_export import SOURCE as DISCORD_SOURCE
from ingest.pipeline import Fetcher, check_image_bytes, fetch_post_bytes, store_checked_images
from store.db import Database
from store.files import ImageFiles
from store.queries.images import get_image
from store.queries.posts import get_post_by_source_id, insert_posts
from store.rows import NewPost, Post

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DISCORD_SOURCE",
    "ImageInfo",
    "ImageLimits",
    "MediaLimits",
    "SharedCheck",
    "StoredPost",
    "check_fetched_image",
    "discord_post",
    "fetch_post_image",
    "get_stored_post",
    "store_checked_posts",
    "store_fetched_image",
    "warm_up",
]

_NO_PEOPLE: Mapping[str, str] = MappingProxyType({})


class ImageLimits(Protocol):
    """The byte cap and the decompression-bomb limit; ``[ingest]`` config (IngestConfig) fits."""

    @property
    def max_bytes(self) -> int: ...

    @property
    def max_pixels(self) -> int: ...


@dataclass(frozen=True)
class MediaLimits:
    """Limits for live images when no config is at hand (the ``[ingest]`` defaults)."""

    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 80_000_000


@dataclass(frozen=True)
class StoredPost:
    """A post whose image is in the store.

    ``created`` is True when this call stored it (False: it was stored already, by an earlier
    call or an ingest); ``new_image`` when its bytes were new to the store (not a repost).
    """

    post_id: int
    image_id: int
    sha256: str
    path: Path
    created: bool
    new_image: bool = False


def discord_post(
    *,
    message_id: int | str,
    position: int,
    channel_id: int | str,
    author_id: int | str | None,
    author_name: str | None,
    posted_at: datetime | None,
    url: str | None,
    conversation_name: str | None = None,
    media_hint: str = "attachment",
    must_sniff: bool = False,
    fallback_urls: tuple[str, ...] = (),
    reaction_count: int | None = None,
) -> NewPost:
    """A live Discord image as the post ``ingest discord-export`` would record for it.

    Args:
        position: the image's place in the message, numbered as the export parser does:
            attachments first (every attachment counts, image or not), then embed images,
            then stickers.
        conversation_name: "<guild> / <channel>", as the export names it.
        media_hint: ``attachment``, ``embed`` or ``sticker``; embeds and plain links are
            ``must_sniff`` (only a post if the bytes are an image).
    """
    return NewPost(
        source=DISCORD_SOURCE,
        source_id=f"{message_id}:{position}",
        conversation_id=str(channel_id),
        conversation_name=conversation_name,
        author_source=DISCORD_SOURCE,
        author_ref=None if author_id is None else str(author_id),
        author_name=author_name,
        posted_at=posted_at,
        url=url,
        local_ref=None,
        media_hint=media_hint,
        must_sniff=must_sniff,
        reaction_count=reaction_count,
        fallback_urls=tuple(fallback_urls),
    )


async def get_stored_post(db: Database, files: ImageFiles, post: NewPost) -> StoredPost | None:
    """The post as already stored (``created`` False), or None when it is not stored yet."""
    row = await get_post_by_source_id(db, post.source, post.source_id)
    return await _already_stored(db, files, row)


async def _already_stored(db: Database, files: ImageFiles, row: Post | None) -> StoredPost | None:
    if row is None or row.status != "stored" or row.image_id is None:
        return None
    image = await get_image(db, row.image_id)
    if image is None:
        return None
    path = files.path_for(image.sha256, image.ext)
    if not await asyncio.to_thread(path.is_file):
        return None  # the file went missing: store it again
    return StoredPost(row.id, image.id, image.sha256, path, created=False)


async def store_fetched_image(
    db: Database,
    files: ImageFiles,
    post: NewPost,
    data: bytes,
    *,
    limits: ImageLimits,
    people: Mapping[str, str] = _NO_PEOPLE,
) -> StoredPost:
    """Check ``data`` as ingest does, then record ``post`` and store its image. Idempotent.

    The bytes are checked before anything is written: bad bytes leave the store untouched.
    A post already stored with the same bytes is returned as it is (``created`` False).
    :func:`check_fetched_image` then :func:`store_checked_posts`, for one post.

    Args:
        people: the ``[people]`` config (source id -> display name), as ingest resolves authors.

    Raises:
        ImageRejected: over ``limits.max_bytes`` (``too_large``), or not an acceptable image
            (``empty``, ``not_image``, ``decompression_bomb``, ``truncated``, ``corrupt``).
    """
    info = await check_fetched_image(post, data, limits=limits)
    (stored,) = await store_checked_posts(db, files, [(post, info, data)], people=people)
    return stored


async def check_fetched_image(post: NewPost, data: bytes, *, limits: ImageLimits) -> ImageInfo:
    """Ingest's checks on a live image's bytes (byte cap, then ``check_image_bytes``: sniffing,
    bomb limit, full decode, hashes), in a worker thread. Writes nothing.

    Raises:
        ImageRejected: as :func:`store_fetched_image`.
    """
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes > the {limits.max_bytes}-byte limit")
    return await check_image_bytes(
        data, max_pixels=limits.max_pixels, about=post.url or post.source_id
    )


class SharedCheck:
    """:func:`check_fetched_image` made from the decode the model does anyway.

    A live image is decoded once to predict it; checking it for the store decoded it again
    (on 2 cores, about 6 ms of a 1 MP JPEG's ~13 ms of checking and storing). Hand this
    object to ``Predictor.predict(data, on_decoded=check)``: when the model's decoder has
    decoded the whole first frame, it is described from those pixels
    (:func:`ingest.images.describe_decoded`: the same checks, the same hashes, a JPEG's phash
    within a bit or two). ``await check.result(post)`` then answers; when the decoder did not
    cover the frame (no model, a partial decode, a decode that failed), it runs
    :func:`check_fetched_image` as before, so a rejected image gets ingest's own reason.
    """

    def __init__(self, data: bytes, *, limits: ImageLimits) -> None:
        self._data = data
        self._limits = limits
        self._info: ImageInfo | None = None
        self._error: ImageRejected | None = None

    def __call__(self, frame: Image.Image, size: tuple[int, int]) -> None:
        # In the Predictor's decode pool; never raises into it.
        try:
            if len(self._data) <= self._limits.max_bytes:
                self._info = describe_decoded(
                    self._data, frame, size, max_pixels=self._limits.max_pixels
                )
        except ImageRejected as exc:
            self._error = exc
        except Exception:  # noqa: BLE001 - the full check below decides
            self._info = None

    @property
    def shared(self) -> bool:
        """Whether the model's decode answered (no second decode needed)."""
        return self._info is not None or self._error is not None

    async def result(self, post: NewPost) -> ImageInfo:
        """The checked image; raises ``ImageRejected`` as :func:`check_fetched_image`."""
        if self._error is not None:
            raise self._error
        if self._info is not None:
            return self._info
        return await check_fetched_image(post, self._data, limits=self._limits)


async def store_checked_posts(
    db: Database,
    files: ImageFiles,
    items: Sequence[tuple[NewPost, ImageInfo, bytes]],
    *,
    people: Mapping[str, str] = _NO_PEOPLE,
) -> list[StoredPost]:
    """Record posts whose bytes :func:`check_fetched_image` passed, and store their images.

    One result per item, in order; a post already stored with the same bytes is returned as
    it is (``created`` False). However many items, the posts are recorded in one transaction
    and the images stored with ingest's ``store_checked_images`` (one claim transaction, one
    thread job writing the files, one linking transaction), so several live images cost
    about what one does: the bot commits the images its workers checked meanwhile together.

    Raises:
        ValueError: two items are the same post (source and source id).
    """
    if not items:
        return []
    keys = {(post.source, post.source_id) for post, _, _ in items}
    if len(keys) != len(items):
        raise ValueError("store_checked_posts: the same post is listed twice")
    recorded = await insert_posts(db, [post for post, _, _ in items], people)
    results: list[StoredPost | None] = [None] * len(items)
    to_store: list[tuple[int, int, ImageInfo, bytes]] = []  # (index, post id, info, bytes)
    for index, ((post, info, data), (post_id, new)) in enumerate(
        zip(items, recorded.post_ids, strict=True)
    ):
        if not new:  # known before: it may be stored already, with these bytes
            row = await get_post_by_source_id(db, post.source, post.source_id)
            known = await _already_stored(db, files, row)
            if known is not None and known.sha256 == info.sha256:
                results[index] = known
                continue
        to_store.append((index, post_id, info, data))
    outcomes = await store_checked_images(
        db, files, [(post_id, info, data) for _, post_id, info, data in to_store]
    )
    for (index, post_id, info, _), outcome in zip(to_store, outcomes, strict=True):
        results[index] = StoredPost(
            post_id=post_id,
            image_id=outcome.image_id,
            sha256=info.sha256,
            path=files.path_for(info.sha256, info.ext),
            created=True,
            new_image=outcome.is_new,
        )
    return [r for r in results if r is not None]


async def fetch_post_image(
    downloader: Fetcher,
    db: Database,
    files: ImageFiles,
    post: NewPost,
    *,
    limits: ImageLimits | None = None,
    people: Mapping[str, str] = _NO_PEOPLE,
) -> StoredPost:
    """Download ``post.url`` through the ingest downloader, then :func:`store_fetched_image`.

    A post already stored is returned without downloading it again (a replayed or edited
    message costs nothing).

    Args:
        downloader: an ``ingest.download.Downloader`` (its session refuses private addresses,
            its byte cap and sniffing apply); anything with its ``fetch`` method.
        limits: defaults to the downloader's byte cap and the ``[ingest]`` default pixel limit.

    Raises:
        DownloadError: the download failed (``reason``: http_404, timeout, too_large,
            not_image, private_address...).
        ImageRejected: the bytes are not an acceptable image.
    """
    known = await get_stored_post(db, files, post)
    if known is not None:
        return known
    if limits is None:
        limits = MediaLimits(
            max_bytes=getattr(downloader, "max_bytes", MediaLimits.max_bytes),
        )
    data = await fetch_post_bytes(post, None, asyncio.Lock(), downloader, limits.max_bytes)
    return await store_fetched_image(db, files, post, data, limits=limits, people=people)


async def warm_up() -> None:
    """Check one tiny image now, so the lazy imports behind the first check (the perceptual
    hash's DCT, ~30 ms with the GIL held) happen at start-up, not under the first live image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, format="PNG")
    await check_image_bytes(buf.getvalue(), max_pixels=64, about="warm-up image")
