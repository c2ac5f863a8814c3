"""Members' privacy against the real bot and the stand-in Discord: opt-out, forget-me, deletes.

Each test runs the product bot (``MemetagBot`` with its cogs and shared deps), plays the members
through the stand-in's driver and reads the store and the image folder for exact rows and files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from memetag.services.media import MediaLimits, discord_post, store_fetched_image
from memetag.standin import Interaction, Message, StandinDiscord
from store.files import ImageFiles
from store.queries.images import claim_image_file
from store.queries.posts import insert_posts
from store.queries.privacy import ReleasedFile, remove_released_files
from store.rows import NewPost
from tests.helpers.bot_fixtures import BotWorld, bot_world
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]


async def rows(world: BotWorld, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in await world.db.fetchall(sql, params)]


async def until(check: Callable[[], Awaitable[object]], timeout: float = 10.0) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.02)


def image_files(world: BotWorld) -> set[str]:
    return {p.stem for p in world.cfg.images_dir.rglob("*") if p.is_file()}


async def sha_of(world: BotWorld, message: Message, position: int = 0) -> str:
    [(sha,)] = await rows(
        world,
        "SELECT i.sha256 FROM posts p JOIN images i ON i.id = p.image_id WHERE p.source_id = ?",
        (f"{message.id}:{position}",),
    )
    return sha


async def answered(standin: StandinDiscord, interaction: Interaction) -> Interaction:
    await standin.wait_for(lambda: interaction.responded, what="an answer")
    return interaction


def button(message: Message, label: str) -> str:
    for row in message.components:
        for component in row.get("components", []):
            if component.get("label") == label:
                return component["custom_id"]
    raise AssertionError(f"no {label!r} button on {message.components}")


async def test_optout_stores_nothing_of_theirs_and_optin_undoes_it(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        a, b = world.members
        ask = await answered(standin, await standin.invoke_slash(a, "tagger optout"))
        assert ask.response.ephemeral and "You are opted out" in ask.response.content
        assert await rows(world, "SELECT author_source, author_ref FROM optouts") == [
            ("discord", str(a.id))
        ]

        mine = await standin.post_message(
            standin.channel, a, attachments=[("a.png", make_image("PNG", seed=1))]
        )
        theirs = await standin.post_message(
            standin.channel, b, attachments=[("b.png", make_image("PNG", seed=2))]
        )
        await world.settle()
        # Nothing of the opted-out member was downloaded, written, predicted or shown.
        assert standin.cdn_hits[mine.attachments[0].id] == 0
        assert standin.cdn_hits[theirs.attachments[0].id] == 1
        assert await rows(world, "SELECT source_id FROM posts") == [(f"{theirs.id}:0",)]
        assert await rows(world, "SELECT message_id FROM bot_messages") == [(str(theirs.id),)]
        assert image_files(world) == {await sha_of(world, theirs)}
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(1,)]
        assert standin.reactions_on(mine) == {} and standin.reactions_on(theirs)

        again = await answered(standin, await standin.invoke_slash(a, "tagger optout"))
        assert "already opted out" in again.response.content
        back = await answered(standin, await standin.invoke_slash(a, "tagger optin"))
        assert back.response.ephemeral and "You are opted in" in back.response.content
        assert await rows(world, "SELECT COUNT(*) FROM optouts") == [(0,)]
        later = await standin.post_message(
            standin.channel, a, attachments=[("c.png", make_image("PNG", seed=3))]
        )
        await world.settle()
        assert await rows(world, "SELECT source_id FROM posts ORDER BY id") == [
            (f"{theirs.id}:0",),
            (f"{later.id}:0",),
        ]


async def test_forget_me_deletes_exactly_the_members_rows_and_unshared_files(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent", model=False) as world:
        a, b = world.members
        db = world.db
        shared, only_a, claimed_a, only_b = (make_image("PNG", seed=s) for s in (10, 11, 12, 13))
        post = standin.post_message
        a_shared = await post(standin.channel, a, attachments=[("s.png", shared)])
        a_only = await post(standin.channel, a, attachments=[("x.png", only_a)])
        a_claimed = await post(standin.channel, a, attachments=[("y.png", claimed_a)])
        b_shared = await post(standin.channel, b, attachments=[("s.png", shared)])
        b_only = await post(standin.channel, b, attachments=[("z.png", only_b)])
        await world.settle()
        # Votes: A on B's image; B on A's image and on the image both posted.
        await standin.add_reaction(a, b_only, "😂")
        await standin.add_reaction(b, a_only, "🐦")
        await standin.add_reaction(b, a_shared, "📷")

        async def three_votes() -> bool:
            return (await rows(world, "SELECT COUNT(*) FROM vote_events"))[0][0] == 3

        await until(three_votes)
        # Person A also posted through another source: that post and the person row stay.
        await insert_posts(
            db,
            [
                NewPost(
                    "folder",
                    "a/1.png",
                    None,
                    None,
                    "folder",
                    "a-folder",
                    "Person A",
                    None,
                    None,
                    "a/1.png",
                )
            ],
            {"a-folder": "Person A"},
        )
        shas = {
            "shared": await sha_of(world, a_shared),
            "only_a": await sha_of(world, a_only),
            "claimed_a": await sha_of(world, a_claimed),
            "only_b": await sha_of(world, b_only),
        }
        assert image_files(world) == set(shas.values())
        # Another process has just claimed the bytes of one of A's images (it is about to store
        # them again): that file must survive A's deletion.
        await claim_image_file(db, shas["claimed_a"], "png")
        [(claimed_at,)] = await rows(world, "SELECT created_at FROM pending_files")

        ask = await answered(standin, await standin.invoke_slash(a, "tagger forget-me"))
        question = ask.original
        assert ask.response.ephemeral
        assert question.content.startswith(
            "This deletes everything memetag stored about you: 3 image posts, 1 vote and "
            "2 image files (1 image someone else also posted stay)."
        )
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(6,)]  # nothing yet

        click = await standin.click_button(a, question, button(question, "Delete my data"))
        await answered(standin, click)
        await standin.wait_for(lambda: question.content.startswith("Deleted"))
        assert question.content.startswith(
            "Deleted 3 image posts, 1 vote and 1 image file; 1 image someone else also posted "
            "stayed. You are opted out"
        )
        assert question.components == []

        assert sorted(await rows(world, "SELECT source, source_id FROM posts")) == [
            ("discord", f"{b_shared.id}:0"),
            ("discord", f"{b_only.id}:0"),
            ("folder", "a/1.png"),
        ]
        assert sorted(await rows(world, "SELECT sha256 FROM images")) == sorted(
            [(shas["shared"],), (shas["only_b"],)]
        )
        # B's vote on the image both posted stays; B's vote on A's own image went with it.
        assert await rows(
            world,
            "SELECT i.sha256, v.voter FROM label_votes v JOIN images i ON i.id = v.image_id",
        ) == [(shas["shared"], f"discord:{b.id}")]
        assert await rows(world, "SELECT voter, message_id FROM vote_events") == [
            (f"discord:{b.id}", str(a_shared.id))
        ]
        assert sorted(await rows(world, "SELECT message_id FROM bot_messages")) == sorted(
            [(str(b_shared.id),), (str(b_only.id),)]
        )
        assert sorted(await rows(world, "SELECT name FROM people")) == [
            ("Person A",),
            ("Person B",),
        ]
        assert sorted(await rows(world, "SELECT source, source_ref FROM person_aliases")) == [
            ("discord", str(b.id)),
            ("folder", "a-folder"),
        ]
        assert await rows(world, "SELECT author_ref FROM optouts") == [(str(a.id),)]
        assert image_files(world) == {shas["shared"], shas["claimed_a"], shas["only_b"]}
        assert await rows(world, "SELECT sha256, created_at FROM pending_files") == [
            (shas["claimed_a"], claimed_at)
        ]

        # B has posts from Discord only: their person row goes too, and now the image both
        # posted is nobody's.
        ask = await answered(standin, await standin.invoke_slash(b, "tagger forget-me"))
        click = await standin.click_button(b, ask.original, button(ask.original, "Delete my data"))
        await answered(standin, click)
        await standin.wait_for(lambda: ask.original.content.startswith("Deleted"))
        assert ask.original.content.startswith("Deleted 2 image posts, 1 vote and 2 image files.")
        assert await rows(world, "SELECT source FROM posts") == [("folder",)]
        assert await rows(world, "SELECT name FROM people") == [("Person A",)]
        assert await rows(world, "SELECT COUNT(*) FROM label_votes") == [(0,)]
        assert await rows(world, "SELECT COUNT(*) FROM vote_events") == [(0,)]
        assert image_files(world) == {shas["claimed_a"]}


async def test_forget_me_cancelled_deletes_nothing(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent", model=False) as world:
        a = world.members[0]
        await standin.post_message(standin.channel, a, attachments=[("a.png", make_image("PNG"))])
        await world.settle()
        ask = await answered(standin, await standin.invoke_slash(a, "tagger forget-me"))
        click = await standin.click_button(a, ask.original, button(ask.original, "Cancel"))
        await answered(standin, click)
        assert ask.original.content == "Nothing was deleted."
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(1,)]
        assert await rows(world, "SELECT COUNT(*) FROM optouts") == [(0,)]
        assert len(image_files(world)) == 1


async def test_a_deleted_message_takes_its_posts_votes_and_unshared_files(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent", model=False) as world:
        a, b = world.members
        unique, shared, third, fourth = (make_image("PNG", seed=s) for s in (20, 21, 22, 23))
        post = standin.post_message
        first = await post(standin.channel, a, attachments=[("u.png", unique), ("s.png", shared)])
        second = await post(standin.channel, b, attachments=[("s.png", shared)])
        bulk = [
            await post(standin.channel, b, attachments=[("t.png", third)]),
            await post(standin.channel, b, attachments=[("f.png", fourth)]),
        ]
        await world.settle()
        # B votes through the first message (both its images); A votes on the shared image
        # through the second.
        await standin.add_reaction(b, first, "😂")
        await standin.add_reaction(a, second, "😂")

        async def votes() -> int:
            return (await rows(world, "SELECT COUNT(*) FROM vote_events"))[0][0]

        await until(lambda: _equals(votes, 3))
        sha_unique, sha_shared = await sha_of(world, first, 0), await sha_of(world, first, 1)
        sha_third = await sha_of(world, bulk[0])

        await standin.delete_message(first)

        async def first_gone() -> bool:
            # The rows go in one transaction, the released files right after it commits.
            return not await rows(
                world, "SELECT 1 FROM posts WHERE source_id LIKE ?", (f"{first.id}:%",)
            ) and sha_unique not in image_files(world)

        await until(first_gone)
        assert sorted(await rows(world, "SELECT source_id FROM posts")) == sorted(
            [(f"{second.id}:0",), (f"{bulk[0].id}:0",), (f"{bulk[1].id}:0",)]
        )
        assert await rows(
            world,
            "SELECT i.sha256, v.voter FROM label_votes v JOIN images i ON i.id = v.image_id",
        ) == [(sha_shared, f"discord:{a.id}")]
        assert await rows(world, "SELECT message_id FROM vote_events") == [(str(second.id),)]
        assert (
            await rows(world, "SELECT 1 FROM bot_messages WHERE message_id = ?", (str(first.id),))
            == []
        )
        files = image_files(world)
        assert sha_unique not in files and sha_shared in files

        await standin.remove_messages(standin.channel, bulk)

        async def bulk_gone() -> bool:
            posts = (await rows(world, "SELECT COUNT(*) FROM posts"))[0][0]
            return posts == 1 and len(image_files(world)) == 1

        await until(bulk_gone)
        assert image_files(world) == {sha_shared}
        assert sha_third not in image_files(world)
        assert await rows(world, "SELECT COUNT(*) FROM images") == [(1,)]


async def _equals(check: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await check() == expected


async def test_a_released_file_is_deleted_only_while_our_claim_stands(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    ours, reclaimed = "a" * 64, "b" * 64
    for sha in (ours, reclaimed):
        await asyncio.to_thread(files.write, sha, "png", b"bytes of " + sha.encode())
    relinked = make_image("PNG", seed=30)
    stored = await store_fetched_image(
        db,
        files,
        discord_post(
            message_id=1,
            position=0,
            channel_id=2,
            author_id=3,
            author_name="Person A",
            posted_at=None,
            url=None,
        ),
        relinked,
        limits=MediaLimits(),
    )
    stamp = "2026-01-01T00:00:00.000000+00:00"
    async with db.transaction() as conn:
        for sha in (ours, reclaimed, stored.sha256):
            await conn.execute(
                "INSERT INTO pending_files (sha256, ext, created_at) VALUES (?, 'png', ?)",
                (sha, stamp),
            )
    await claim_image_file(db, reclaimed, "png")  # another writer is storing these bytes now

    removed = await remove_released_files(
        db, files, [ReleasedFile(sha, "png", stamp) for sha in (ours, reclaimed, stored.sha256)]
    )
    assert removed == 1
    assert not files.path_for(ours, "png").exists()
    assert files.path_for(reclaimed, "png").exists()  # the writer's file now
    assert stored.path.exists()  # linked to an image row again: kept
    claims = [tuple(r) for r in await db.fetchall("SELECT sha256 FROM pending_files")]
    assert claims == [(reclaimed,)]
