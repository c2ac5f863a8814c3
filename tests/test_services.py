"""The services layer the CLI and the bot share: live images, model selection, training, ingest."""

from __future__ import annotations

import asyncio
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


# --- the CLI's ingest finds a live post known ---------------------------------------------------


def test_cli_ingest_of_the_channel_export_finds_the_live_post_known(tmp_path, capsys):
    from memetag.cli import main
    from store.db import open_database

    data = tmp_path / "data"
    png = make_image("PNG", seed=8)

    async def live() -> None:
        async with open_database(data / "memetag.db") as db:
            await store_fetched_image(db, ImageFiles(data / "images"), _live(), png, limits=LIMITS)

    asyncio.run(live())
    export = tmp_path / "general.json"
    # Nothing listens on port 9: the export's copy is never fetched, the post being known.
    export.write_bytes(_export("http://127.0.0.1:9/att"))
    code = main(["--data", str(data), "ingest", "discord-export", str(export), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert (summary["new_posts"], summary["already_known_posts"]) == (0, 1)
    assert summary["failures_by_reason"] == {}


def test_export_ingest_skips_members_who_opted_out_in_discord(tmp_path, capsys):
    """`/tagger optout` and `forget-me` hold for exports too: nothing of theirs is recorded."""
    from memetag.cli import main
    from store.db import open_database
    from store.queries.posts import list_posts
    from store.queries.privacy import add_optout

    data = tmp_path / "data"

    async def opt_out() -> None:
        async with open_database(data / "memetag.db") as db:
            await add_optout(db, "discord", AUTHOR)

    data.mkdir()
    asyncio.run(opt_out())
    export = tmp_path / "general.json"
    # Nothing listens on port 9: a fetch would fail, so no failure also means no fetch.
    export.write_bytes(_export("http://127.0.0.1:9/att", files=("a.png", "b.png")))
    code = main(["--data", str(data), "ingest", "discord-export", str(export), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["new_posts"] == 0 and summary["skipped"] == {"opted_out": 2}
    assert summary["failures_by_reason"] == {}

    async def posts() -> list:
        async with open_database(data / "memetag.db") as db:
            return await list_posts(db)

    assert asyncio.run(posts()) == []


# --- model selection ----------------------------------------------------------------------------


CONFIG = """
[model]
backbone = "test_efficientnet"
pretrained = "none"
image_size = 64
device = "cpu"
batch_size = 32
decode_workers = 0

[train]
min_posts_per_person = 3
epochs = 5

[labels.meme]
emoji = "😂"
description = "A meme"

[labels.photo]
emoji = "📷"
description = "A photo"

[labels.news]
emoji = "📰"
description = "News"
"""


@pytest.fixture
def cfg(tmp_path):
    from memetag.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path, data_dir=str(tmp_path / "data"))


async def test_train_from_a_running_loop_then_poll_and_switch_models(cfg):
    from memetag.services.errors import NoModel, NotEnoughData, UnknownModel
    from memetag.services.evaluation import compare_models, evaluate_model
    from memetag.services.models import current_model, find_model_file, use_model
    from memetag.services.training import TrainOptions, train_and_record
    from store.db import open_database
    from tests.test_train import generate
    from tests.test_train_cli import fill_store

    async with open_database(cfg.db_path) as db:
        with pytest.raises(NotEnoughData):
            await train_and_record(db, cfg)
        assert await current_model(db, cfg) is None
        with pytest.raises(NoModel):
            await find_model_file(cfg, db=db)
    await fill_store(cfg.data_dir, generate(60, seed=3))

    async with open_database(cfg.db_path) as db:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(ticker())
        stages: set[str] = set()
        first = await train_and_record(
            db, cfg, TrainOptions(seed=1), on_progress=lambda s, d, t: stages.add(s)
        )
        stop.set()
        await beat
        # Training ran in a thread: the loop kept turning all along.
        assert ticks > 20 and "embed" in stages
        assert first.promotion.promoted and first.promotion.kind == "no_current"
        assert first.record.is_current and first.previous_version is None
        assert first.model_path.is_file() and first.report_path.is_file()
        assert first.figures.n_val == first.evaluation["n_val"] > 0
        chosen = await current_model(db, cfg)
        assert chosen is not None and chosen.version == first.version
        assert chosen.stamp == (first.version, str(first.model_path), chosen.mtime_ns)
        assert await find_model_file(cfg, db=db) == first.model_path

        second = await train_and_record(db, cfg, TrainOptions(seed=2, epochs=3, promote=True))
        assert second.promotion.kind == "forced" and second.previous_version == first.version
        polled = await current_model(db, cfg)
        assert polled is not None and polled.stamp != chosen.stamp

        scored = await evaluate_model(db, cfg)
        assert scored.version == second.version and scored.report_path.is_file()
        compared = await compare_models(db, cfg, first.version, second.version)
        assert (compared.old.version, compared.new.version) == (first.version, second.version)
        assert compared.report_path.name == "compare.md" and compared.report_path.is_file()

        used = await use_model(db, cfg, first.version)
        assert used.record.is_current and used.warning is None
        back = await current_model(db, cfg)
        assert back is not None and back.stamp == chosen.stamp
        with pytest.raises(UnknownModel):
            await use_model(db, cfg, "no-such-version")
        with pytest.raises(UnknownModel):
            await find_model_file(cfg, "no-such-version", db=db)


async def test_use_model_refuses_a_damaged_file_and_keeps_the_current_one(cfg):
    from classifier.errors import ModelError
    from memetag.services.models import current_model, use_model
    from store.db import open_database
    from store.queries.models import insert_model

    cfg.models_dir.mkdir(parents=True)
    (cfg.models_dir / "v-bad.pt").write_bytes(b"not a checkpoint")
    async with open_database(cfg.db_path) as db:
        await insert_model(db, "v-ok", "models/v-ok.pt", {}, make_current=True)
        await insert_model(db, "v-bad", "models/v-bad.pt", {}, make_current=False)
        with pytest.raises(ModelError):
            await use_model(db, cfg, "v-bad")
        chosen = await current_model(db, cfg)
        assert chosen is not None and chosen.version == "v-ok" and chosen.mtime_ns is None


# --- one decode for the model and the store ------------------------------------------------------


def _distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.mark.parametrize("resize", ["letterbox", "crop"])
async def test_the_stores_check_reuses_the_models_decode_and_says_what_ingest_says(resize):
    from ml_helpers import make_checkpoint, photo_like, tiny_model_config

    from classifier.errors import ImageLoadError
    from classifier.predictor import Predictor
    from ingest.images import inspect_image
    from memetag.services.media import SharedCheck

    model_cfg = tiny_model_config(resize=resize)
    predictor = Predictor(make_checkpoint(model_cfg), model_cfg, decode_workers=1)
    photo = photo_like(640, 480, seed=3)
    png, jpeg = io.BytesIO(), io.BytesIO()
    photo.save(png, "PNG")
    photo.save(jpeg, "JPEG", quality=85)
    try:
        for data in (png.getvalue(), jpeg.getvalue(), make_image("GIF", (90, 60), seed=4)):
            check = SharedCheck(data, limits=LIMITS)
            await predictor.predict(data, on_decoded=check)
            assert check.shared
            info = await check.result(_live())
            alone = inspect_image(data, max_pixels=LIMITS.max_pixels)
            assert info == type(alone)(**{**vars(alone), "phash": info.phash})
            if alone.format == "JPEG":  # decoded at another DCT scale: a bit or two apart
                assert _distance(info.phash, alone.phash) <= 4
            else:
                assert info.phash == alone.phash
        # A decode that fails answers nothing: the store's own check gives ingest's reason.
        cut = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]
        check = SharedCheck(cut, limits=LIMITS)
        with pytest.raises(ImageLoadError):
            await predictor.predict(cut, on_decoded=check)
        assert not check.shared
        with pytest.raises(ImageRejected) as refused:
            await check.result(_live())
        assert refused.value.reason == "truncated"
        # Over the store's pixel limit (the model's may be higher): refused, with the size.
        check = SharedCheck(png.getvalue(), limits=MediaLimits(max_bytes=10**6, max_pixels=1000))
        await predictor.predict(png.getvalue(), on_decoded=check)
        with pytest.raises(ImageRejected) as refused:
            await check.result(_live())
        assert refused.value.reason == "decompression_bomb"
        assert "640x480" in str(refused.value)
    finally:
        await predictor.aclose()


async def test_a_partial_decode_is_not_taken_for_a_check():
    from ml_helpers import make_checkpoint, screenshot_like, tiny_model_config

    from classifier.predictor import Predictor
    from ingest.images import inspect_image
    from memetag.services.media import SharedCheck

    # A tall phone screenshot under a centre crop: the model decodes only the rows it reads,
    # which proves nothing about the rest, so the store decodes the whole image itself.
    model_cfg = tiny_model_config(resize="crop")
    predictor = Predictor(make_checkpoint(model_cfg), model_cfg, decode_workers=1)
    out = io.BytesIO()
    screenshot_like(200, 1500, seed=1).save(out, "PNG")
    data = out.getvalue()
    try:
        check = SharedCheck(data, limits=LIMITS)
        await predictor.predict(data, on_decoded=check)
        assert not check.shared
        assert await check.result(_live()) == inspect_image(data, max_pixels=LIMITS.max_pixels)
    finally:
        await predictor.aclose()


# --- explanations -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [0.0, 1.5])
def test_explain_returns_png_bytes_and_says_unsure_as_the_predictor_does(tmp_path, line):
    from ml_helpers import make_checkpoint, photo_like, tiny_model_config
    from PIL import Image

    from classifier.explain import Explainer, UnknownTarget
    from classifier.predictor import Predictor

    model_cfg = tiny_model_config()
    ckpt = make_checkpoint(model_cfg, finetuned=True, sender_min_confidence=line)
    image = photo_like(120, 90, seed=2)
    path = tmp_path / "x.png"
    image.save(path)

    explainer = Explainer(ckpt, model_cfg)
    with pytest.raises(UnknownTarget):
        explainer.explain(path, label="not-a-label")
    by_label = explainer.explain(path, label="meme")
    by_sender = explainer.explain(path.read_bytes(), sender=True)
    for result in (by_label, by_sender):
        assert result.png.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(result.png)).size == (597, 448)  # the whole 4:3 image
    predictor = Predictor(ckpt, model_cfg, decode_workers=1)
    try:
        [predicted] = predictor.predict_files([path])
    finally:
        predictor.close()
    assert by_label.probability == pytest.approx(predicted.labels["meme"], abs=1e-3)
    assert by_sender.probability == pytest.approx(predicted.sender_probability, abs=1e-3)
    # Named exactly when the Predictor names a sender; the map is of the likeliest either way.
    assert by_sender.named == (predicted.sender is not None) == (line < 1.0)
    assert by_sender.name == predicted.sender_candidates[0].name


@pytest.mark.parametrize(
    ("line", "said"), [(0.0, "sender Person "), (1.5, "sender unsure: Person ")]
)
def test_cli_explain_names_a_sender_only_over_the_confidence_line(tmp_path, capsys, line, said):
    from ml_helpers import LABELS, make_checkpoint, photo_like, tiny_model_config

    from classifier.checkpoint import save_checkpoint
    from memetag.cli import main

    model_cfg = tiny_model_config()
    ckpt = make_checkpoint(model_cfg, finetuned=True, sender_min_confidence=line)
    data = tmp_path / "data"
    save_checkpoint(ckpt, data / "models" / f"{ckpt.version}.pt")
    labels = "".join(
        f'[labels.{n}]\nemoji = "{e}"\ndescription = "{n}"\n'
        for n, e in zip(LABELS, ("😂", "🐦", "📷"), strict=True)
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\nbackbone = "{model_cfg.backbone}"\npretrained = "none"\nimage_size = '
        f'{model_cfg.image_size}\ndevice = "cpu"\n\n{labels}'
    )
    image = tmp_path / "x.png"
    photo_like(120, 90, seed=2).save(image)
    out = tmp_path / "o.png"
    argv = ["--config", str(config), "--data", str(data), "explain", "--model", ckpt.version]
    code = main([*argv, str(image), "--sender", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == str(out) and lines[1].startswith(said)
    assert out.read_bytes().startswith(b"\x89PNG")
    if line > 1.0:
        assert "never names a sender" in lines[1]


async def test_warm_up_checks_an_image_and_stores_nothing(db):
    from memetag.services.media import warm_up

    await warm_up()
    assert await posts.list_posts(db) == []
