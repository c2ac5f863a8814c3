"""The store: migrations, posts, images, votes, models, export rows."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from store import files as files_module
from store.db import SCHEMA_VERSION, open_database
from store.errors import StoreError, StoreMismatch
from store.files import ImageFiles
from store.orphans import check_files_belong, sweep_orphans
from store.queries import images, labels, models, people, posts, reports
from store.rows import NewPost


def _post(source_id: str, author="g1", name="Alpha", labels_=(), when=None) -> NewPost:
    return NewPost(
        source="folder",
        source_id=source_id,
        conversation_id="c1",
        conversation_name="Chat",
        author_source="folder",
        author_ref=author,
        author_name=name,
        posted_at=when or datetime(2020, 1, 1, tzinfo=UTC),
        url=None,
        local_ref=f"{source_id}.png",
        labels=tuple(labels_),
    )


def _img(sha: str) -> posts.StoredImage:
    return posts.StoredImage(sha, "ffff0000ffff0000", 10, 20, "PNG", "png", 123)


async def test_migrations_set_user_version_and_wal(db):
    assert await db.schema_version() == SCHEMA_VERSION >= 1
    row = await db.fetchone("PRAGMA journal_mode")
    assert row[0] == "wal"
    row = await db.fetchone("PRAGMA foreign_keys")
    assert row[0] == 1


async def test_reopen_is_idempotent(tmp_path):
    path = tmp_path / "m.db"
    async with open_database(path) as db:
        await posts.insert_posts(db, [_post("a")], {})
    async with open_database(path) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        assert len(await posts.list_posts(db)) == 1


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "m.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    con.close()
    with pytest.raises(StoreError, match="newer than this memetag"):
        async with open_database(path):
            pass


async def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="m.db"):
        async with open_database(path):
            pass


async def test_insert_posts_is_idempotent_and_resolves_people(db):
    result = await posts.insert_posts(db, [_post("a"), _post("b", "g2", "Beta")], {"g2": "Bee"})
    assert (result.inserted, result.already_known) == (2, 0)
    again = await posts.insert_posts(db, [_post("a"), _post("b", "g2", "Beta")], {"g2": "Bee"})
    assert (again.inserted, again.already_known) == (0, 2)
    names = [p.name for p in await people.list_people(db)]
    assert names == ["Alpha", "Bee"]
    fetched = await posts.list_posts_to_fetch(db, "folder")
    assert [p.source_id for p in fetched] == ["a", "b"]
    assert fetched[1].author_name == "Bee"


async def test_record_stored_dedupes_and_applies_labels(db):
    await posts.insert_posts(db, [_post("a", labels_=["meme"]), _post("b", labels_=["news"])], {})
    pa, pb = await posts.list_posts_to_fetch(db)
    sha = "ab" * 32
    first = await posts.record_stored(db, pa.id, _img(sha))
    assert first.is_new
    image_id = first.image_id
    second = await posts.record_stored(db, pb.id, _img(sha))
    assert (second.image_id, second.is_new) == (image_id, False)
    votes = await labels.list_votes_for_image(db, image_id)
    assert sorted(v.label for v in votes) == ["meme", "news"]
    assert await posts.list_posts_to_fetch(db) == []
    img = await images.get_image_by_sha256(db, sha)
    assert img.relpath == f"images/ab/{sha}.png"


async def test_failures_and_retry_selection(db):
    await posts.insert_posts(db, [_post("a"), _post("b")], {})
    pa, pb = await posts.list_posts_to_fetch(db)
    await posts.record_failure(db, pa.id, "http_404", "gone")
    await posts.record_failure(db, pb.id, "not_image", "text/html", not_image=True)
    assert await posts.list_posts_to_fetch(db) == []
    retry = await posts.list_posts_to_fetch(db, retry_failed=True)
    assert [p.id for p in retry] == [pa.id]
    stats = await reports.get_stats(db)
    assert stats.failures_by_reason == {"http_404": 1}
    assert stats.not_images == 1


async def test_votes_net_and_labelled_view(db):
    await posts.insert_posts(
        db,
        [
            _post("a", when=datetime(2021, 1, 2, tzinfo=UTC)),
            _post("b", "g2", "Beta", when=datetime(2021, 1, 1, tzinfo=UTC)),
        ],
        {},
    )
    pa, pb = await posts.list_posts_to_fetch(db)
    image_id = (await posts.record_stored(db, pa.id, _img("cd" * 32))).image_id
    await posts.record_stored(db, pb.id, _img("cd" * 32))
    await labels.add_vote(db, image_id, "meme", "u1", 1, "reaction")
    await labels.add_vote(db, image_id, "meme", "u2", 1, "reaction")
    await labels.add_vote(db, image_id, "news", "u1", 1, "reaction")
    await labels.add_vote(db, image_id, "news", "u1", -1, "reaction")  # changed their mind
    (item,) = await images.list_labelled_images(db)
    assert item.sender == "Beta"  # the earliest post wins
    assert item.net_votes == {"meme": 2, "news": -1}
    rows = [r async for r in reports.iter_export_rows(db)]
    assert len(rows) == 2 and rows[0].labels == ("meme",) and rows[0].sender == "Beta"


async def test_one_member_vote_per_label_whatever_the_gesture(db):
    await posts.insert_posts(db, [_post("a")], {})
    (pa,) = await posts.list_posts_to_fetch(db)
    image_id = (await posts.record_stored(db, pa.id, _img("ce" * 32))).image_id
    await labels.add_vote(db, image_id, "meme", "discord:1", 1, "reaction")
    await labels.add_vote(db, image_id, "meme", "discord:1", -1, "button")  # "not a meme" later
    (vote,) = await labels.list_votes_for_image(db, image_id)
    assert (vote.vote, vote.origin) == (-1, "button")
    (item,) = await images.list_labelled_images(db)
    assert item.net_votes == {"meme": -1}


async def test_v2_votes_from_two_gestures_migrate_to_the_later_one(tmp_path):
    path = tmp_path / "memetag.db"
    from store.db import _migrations

    conn = sqlite3.connect(path)
    for number, _name, sql in _migrations()[:2]:
        conn.executescript(f"{sql}\nPRAGMA user_version = {number};")
    conn.executescript(
        "INSERT INTO images VALUES (1, '"
        + "ab" * 32
        + "', NULL, 1, 1, 'PNG', 'png', 1, '2020-12-31T00:00:00+00:00');"
        "INSERT INTO labels (id, name) VALUES (1, 'meme');"
        "INSERT INTO label_votes VALUES (1, 1, 1, 'u1', 1, 'reaction', '2021-01-01T00:00:00+00:00');"
        "INSERT INTO label_votes VALUES (2, 1, 1, 'u1', -1, 'command', '2021-01-02T00:00:00+00:00');"
        "INSERT INTO label_votes VALUES (3, 1, 1, 'ingest:folder', 1, 'ingest', '2020-12-31T00:00:00+00:00');"
    )
    conn.close()
    async with open_database(path) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        votes = await labels.list_votes_for_image(db, 1)
    assert sorted((v.voter, v.vote, v.origin) for v in votes) == [
        ("ingest:folder", 1, "ingest"),
        ("u1", -1, "command"),
    ]


async def test_models_current_flag_and_rollback(db):
    await models.insert_model(db, "v1", "models/v1.pt", {"f1": 0.5}, make_current=True)
    await models.insert_model(db, "v2", "models/v2.pt", {"f1": 0.6}, make_current=True)
    assert (await models.get_current_model(db)).version == "v2"
    await models.set_current_model(db, "v1")
    assert (await models.get_current_model(db)).version == "v1"
    assert [m.is_current for m in await models.list_models(db)] == [True, False]
    with pytest.raises(StoreError, match="no model version"):
        await models.set_current_model(db, "nope")


async def test_transaction_rolls_back_on_error(db):
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO people (name, created_at) VALUES ('X', 'now')")
            raise RuntimeError("boom")
    assert await people.list_people(db) == []


def test_image_files_atomic_write(tmp_path):
    files = ImageFiles(tmp_path / "images")
    keep = "aa" * 32
    p = files.write(keep, "png", b"x" * 10)
    assert p == tmp_path / "images" / "aa" / f"{keep}.png" and p.read_bytes() == b"x" * 10
    os.utime(p, (1, 1))
    assert files.write(keep, "png", b"x" * 10) == p  # kept, and marked as in use again
    assert p.stat().st_mtime > 1
    assert [name.name for name in p.parent.iterdir()] == [p.name]  # no temp file left


def test_image_files_ensure_writes_only_what_is_gone(tmp_path):
    files = ImageFiles(tmp_path / "images")
    sha = "ab" * 32
    p = files.write(sha, "png", b"x" * 10)
    os.utime(p, (1, 1))
    assert files.ensure(sha, "png", b"x" * 10) == p
    assert p.stat().st_mtime == 1  # in place: one stat, nothing written
    p.unlink()  # a sweep took it
    assert files.ensure(sha, "png", b"x" * 10) == p and p.read_bytes() == b"x" * 10
    p.write_bytes(b"cut")  # the wrong size: written again
    assert files.ensure(sha, "png", b"x" * 10) == p and p.read_bytes() == b"x" * 10


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_sweep_deletes_only_what_a_dead_writer_claimed(db, tmp_path):
    files = ImageFiles(tmp_path / "images")
    linked, abandoned, fresh, unknown = ("aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32)
    await posts.insert_posts(db, [_post("a")], {})
    (pa,) = await posts.list_posts_to_fetch(db)
    for sha in (linked, abandoned, fresh):
        await images.claim_image_file(db, sha, "png")
        files.write(sha, "png", sha.encode())
    await posts.record_stored(db, pa.id, _img(linked), ensure_file=lambda: None)
    files.write(unknown, "png", b"copied in by hand, never claimed")
    # A writer claimed `abandoned` long ago and died; `fresh` is being written right now.
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE pending_files SET created_at = '2001-01-01T00:00:00.000000+00:00'"
            " WHERE sha256 = ?",
            (abandoned,),
        )
    dead_tmp = files.root / "aa" / f".tmp-{files_module._HOST}-{_dead_pid()}-x1.part"
    live_tmp = files.root / "aa" / f".tmp-{files_module._HOST}-{os.getpid()}-x2.part"
    old_tmp = files.root / "aa" / ".tmp-abc123.part"  # no writer named: judged by age
    stranger = files.root / "aa" / "notes.txt"
    for path in (dead_tmp, live_tmp, old_tmp, stranger):
        path.write_bytes(b"half")
    os.utime(old_tmp, (1, 1))

    assert await sweep_orphans(db, files) == 3
    assert not files.path_for(abandoned, "png").exists()
    for sha in (linked, fresh, unknown):
        assert files.path_for(sha, "png").exists(), sha
    assert not dead_tmp.exists() and not old_tmp.exists()
    assert live_tmp.exists() and stranger.exists()
    claims = [r[0] for r in await db.fetchall("SELECT sha256 FROM pending_files")]
    assert claims == [fresh]  # linked's claim went with its link, abandoned's with its file


async def test_empty_database_beside_stored_images_is_refused(tmp_path):
    files = ImageFiles(tmp_path / "images")
    async with open_database(tmp_path / "memetag.db") as db:
        await check_files_belong(db, files)  # a new store with no images: fine
        files.write("ee" * 32, "png", b"an image from a database that is gone")
        with pytest.raises(StoreMismatch, match=r"holds 1 image files.*backup.*move"):
            await check_files_belong(db, files)
        await posts.insert_posts(db, [_post("a")], {})
        await check_files_belong(db, files)  # posts recorded: an interrupted first ingest
        assert await sweep_orphans(db, files, grace_s=0) == 0  # nobody claimed it: kept
    assert files.path_for("ee" * 32, "png").exists()


async def test_a_second_connection_reads_while_a_write_is_open(tmp_path):
    path = tmp_path / "m.db"
    async with open_database(path) as writer:
        await posts.insert_posts(writer, [_post("a")], {})
        async with writer.transaction() as conn:
            await conn.execute("INSERT INTO people (name, created_at) VALUES ('Z', 'now')")
            # Another process-like reader sees the committed state, without waiting (WAL).
            reader = sqlite3.connect(path, timeout=0.1)
            try:
                assert reader.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 1
                names = [r[0] for r in reader.execute("SELECT name FROM people")]
                assert "Z" not in names
            finally:
                reader.close()


async def test_readonly_open_refuses_an_empty_or_foreign_schema(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="no database here yet"):
        async with open_database(empty, readonly=True):
            pass
    newer = tmp_path / "newer.db"
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="upgrade memetag"):
        async with open_database(newer, readonly=True):
            pass


async def test_failed_commit_leaves_no_open_transaction(db):
    await db.conn.execute(
        "CREATE TABLE t (x INTEGER REFERENCES people(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t (x) VALUES (12345)")  # fails only at COMMIT
    assert not db.conn.in_transaction
    async with db.transaction() as conn:  # the next write works
        await conn.execute("INSERT INTO people (name, created_at) VALUES ('ok', 'now')")


async def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_no_open_transaction(tmp_path):
    """A task group stopping (one ingest batch failed) cancels a sibling whose BEGIN is still
    waiting for another process's write lock; the BEGIN runs anyway, and must be undone."""
    path = tmp_path / "m.db"
    async with open_database(path) as db:
        other = sqlite3.connect(path, timeout=5, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        entered = asyncio.Event()

        async def write() -> None:
            entered.set()
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO people (name, created_at) VALUES ('x', 'now')")

        task = asyncio.create_task(write())
        await entered.wait()
        await asyncio.sleep(0.2)  # the BEGIN is now waiting inside SQLite's busy handler
        task.cancel()
        await asyncio.sleep(0.1)
        other.execute("COMMIT")  # the queued BEGIN gets the lock
        other.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not db.conn.in_transaction
        async with db.transaction() as conn:  # the next write works
            await conn.execute("INSERT INTO people (name, created_at) VALUES ('ok', 'now')")
        assert [r[0] for r in await db.fetchall("SELECT name FROM people")] == ["ok"]


async def test_same_display_name_is_not_the_same_person(db):
    def by(ref, name, source="discord"):
        return NewPost(source, f"m-{ref}-{source}", "c", None, source, ref, name, None, None, None)

    await posts.insert_posts(
        db,
        [by("111", "Alex"), by("222", "Alex"), by("Kappa", "Kappa", "folder")],
        {"333": "Kappa", "444": "Kappa"},
    )
    await posts.insert_posts(
        db,
        [by("333", "k1"), by("444", "k2"), by("Kappa", "Kappa", "folder")],
        {"333": "Kappa", "444": "Kappa"},
    )
    names = sorted(p.name for p in await people.list_people(db))
    # Two accounts called Alex stay two people; [people] merges 333 and 444 on purpose, and a
    # CSV sender named Kappa is that same Kappa.
    assert names == ["Alex", "Alex (222)", "Kappa"]


async def test_a_reader_never_sees_another_tasks_uncommitted_writes(db):
    inserted, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO people (name, created_at) VALUES ('Unsaid', 'now')")
            # The task holding the transaction reads its own write through the same API...
            assert [p.name for p in await people.list_people(db)] == ["Unsaid"]
            # ...a task it starts is another task, and a nested transaction is a clear error.
            assert await asyncio.create_task(people.list_people(db)) == []
            with pytest.raises(RuntimeError, match="do not nest"):
                async with db.transaction():
                    pass
            inserted.set()
            await release.wait()
            raise RuntimeError("changed my mind")

    task = asyncio.create_task(writer())
    await inserted.wait()
    # Another task reads while that transaction is open: only committed rows.
    assert await people.list_people(db) == []
    assert await db.fetchone("SELECT 1 FROM people WHERE name = 'Unsaid'") is None
    release.set()
    with pytest.raises(RuntimeError):
        await task
    assert await people.list_people(db) == []  # rolled back: nobody ever saw it

    async def committer() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO people (name, created_at) VALUES ('Said', 'now')")
            inserted.set()
            await release.wait()

    inserted.clear()
    release.clear()
    task = asyncio.create_task(committer())
    await inserted.wait()
    assert await people.list_people(db) == []
    release.set()
    await task
    assert [p.name for p in await people.list_people(db)] == ["Said"]  # visible once committed


async def test_readonly_open_cannot_write(tmp_path):
    path = tmp_path / "m.db"
    async with open_database(path) as db:
        await posts.insert_posts(db, [_post("a")], {})
    async with open_database(path, readonly=True) as db:
        assert len(await posts.list_posts(db)) == 1
        with pytest.raises(StoreError, match="read-only"):
            await posts.insert_posts(db, [_post("b")], {})


async def test_insert_posts_batch_matches_one_at_a_time(tmp_path):
    # Known posts, a post listed twice in one batch, shared authors and labels: a whole batch
    # at once gives what recording the posts one by one gives.
    first = [_post("a", labels_=["meme"]), _post("b", "g2", "Beta")]
    batch = [
        _post("b", "g2", "Beta", labels_=["news"]),  # known: gains a label
        _post("c", labels_=["meme", "photo"]),
        _post("d", "g3", "Gamma"),
        _post("c", labels_=["comic"]),  # listed twice: the second is known
        _post("e", "g3", "Gamma", labels_=["photo"]),
    ]
    results = {}
    for mode in ("batch", "single"):
        async with open_database(tmp_path / f"{mode}.db") as db:
            await posts.insert_posts(db, first, {})
            if mode == "batch":
                result = await posts.insert_posts(db, batch, {"g3": "Gee"})
                counts = (result.inserted, result.already_known)
            else:
                counts = (0, 0)
                for post in batch:
                    r = await posts.insert_posts(db, [post], {"g3": "Gee"})
                    counts = (counts[0] + r.inserted, counts[1] + r.already_known)
            rows = await db.fetchall(
                "SELECT p.source_id, pe.name, group_concat(pl.label) AS labels FROM posts p"
                " LEFT JOIN people pe ON pe.id = p.author_id"
                " LEFT JOIN post_labels pl ON pl.post_id = p.id GROUP BY p.id ORDER BY p.id"
            )
            results[mode] = (counts, [tuple(r) for r in rows])
    assert results["batch"] == results["single"]
    assert results["batch"][0] == (3, 2)
    assert results["batch"][1][2] == ("c", "Alpha", "comic,meme,photo")
    assert results["batch"][1][3][1] == results["batch"][1][4][1] == "Gee"


@pytest.mark.parametrize("retry_failed", [False, True])
async def test_posts_to_fetch_in_pages(db, retry_failed):
    await posts.insert_posts(db, [_post(f"p{i:03d}") for i in range(57)], {})
    everything = await posts.list_posts_to_fetch(db, "folder")
    for post in everything[::3]:
        await posts.record_failure(db, post.id, "http_404", "gone")
    for post in everything[1::7]:
        await posts.record_stored(db, post.id, _img(f"{post.id:064x}"))
    whole = await posts.list_posts_to_fetch(db, "folder", retry_failed=retry_failed)
    paged, after = [], 0
    while page := await posts.list_posts_to_fetch(
        db, "folder", retry_failed=retry_failed, after_id=after, limit=10
    ):
        assert len(page) <= 10
        paged.extend(page)
        after = page[-1].id
    assert paged == whole and len(whole) > 20
    assert await posts.count_posts_to_fetch(db, "folder", retry_failed=retry_failed) == len(whole)
    assert await posts.count_posts_to_fetch(db, "other", retry_failed=retry_failed) == 0


async def test_audit_log_keeps_who_what_when_in_order(db):
    from store.queries import audit

    await audit.add_audit(
        db, guild_id="1", actor="discord:5", action="mode", arguments='{"mode": "reply"}'
    )
    await audit.add_audit(db, guild_id="2", actor="cli", action="retrain", outcome="refused: busy")
    everything = await audit.list_audit(db)
    assert [(e.guild_id, e.action, e.outcome) for e in everything] == [
        ("1", "mode", "ok"),
        ("2", "retrain", "refused: busy"),
    ]
    (one,) = await audit.list_audit(db, guild_id="1")
    assert one.arguments == {"mode": "reply"} and one.actor == "discord:5"
    assert [e.action for e in await audit.list_audit(db, limit=1)] == ["retrain"]


async def test_a_task_always_reads_the_row_it_just_committed_while_others_read(db):
    """Reads never leave a statement open between awaits: an open one pins the read
    connection's snapshot, and a task could then commit a row and not find it."""
    from contextlib import aclosing

    await posts.insert_posts(db, [_post(f"seed{i}") for i in range(50)], {})
    stop = asyncio.Event()
    missed = []

    async def reader() -> None:
        while not stop.is_set():
            await db.fetchall("SELECT id, source_id FROM posts")
            await db.fetchone("SELECT COUNT(*) FROM posts")

    async def streamer() -> None:
        while not stop.is_set():
            async with aclosing(db.iter_rows("SELECT id FROM posts")) as rows:
                async for _ in rows:
                    await asyncio.sleep(0)  # held open across awaits on purpose

    async def writer(k: int) -> None:
        for i in range(40):
            source_id = f"w{k}-{i}"
            await posts.insert_posts(db, [_post(source_id)], {})
            row = await db.fetchone("SELECT id FROM posts WHERE source_id = ?", (source_id,))
            if row is None:
                missed.append(source_id)

    background = [asyncio.create_task(reader()) for _ in range(4)]
    background.append(asyncio.create_task(streamer()))
    await asyncio.gather(*(writer(k) for k in range(6)))
    stop.set()
    await asyncio.gather(*background)
    assert missed == []


async def test_resolve_person_keeps_or_changes_an_alias_as_the_config_says(db):
    async def resolve(ref: str, display: str | None, config: dict[str, str]) -> int:
        async with db.transaction() as conn:
            return await people.resolve_person(conn, "discord", ref, display, config)

    async def aliases() -> list[tuple]:
        rows = await db.fetchall(
            "SELECT a.source_ref, a.display_name, p.name FROM person_aliases a"
            " JOIN people p ON p.id = a.person_id ORDER BY a.source_ref"
        )
        return [tuple(r) for r in rows]

    alex = await resolve("1", "Alex", {})
    assert await resolve("1", "Alexander", {}) == alex  # no config: the first mapping stays
    assert await aliases() == [("1", "Alex", "Alex")]
    named = await resolve("1", "Alex", {"1": "Person A"})  # the config names them
    assert named != alex and await aliases() == [("1", "Alex", "Person A")]
    assert await resolve("1", "Alex", {"1": "Person A"}) == named  # nothing changes
    assert await resolve("1", "Al", {"1": "Person A"}) == named  # a new display name is kept
    assert await aliases() == [("1", "Al", "Person A")]
    assert await resolve("2", "Al", {"2": "Person A"}) == named  # [people] merges two ids
    assert await aliases() == [("1", "Al", "Person A"), ("2", "Al", "Person A")]


async def test_fetch_in_chunks_runs_one_statement_per_chunk_and_keeps_every_row(db):
    import json

    from store.queries._chunks import IN_CHUNK, fetch_in_chunks

    calls: list[tuple[str, tuple]] = []

    async def fetch(sql: str, params: tuple) -> list[tuple]:
        calls.append((sql, params))
        return await db.fetchall(sql, params)

    ids = list(range(2 * IN_CHUNK + 1))
    wanted = ids[::2]  # some of every chunk, the last (one id: 2 * IN_CHUNK) included
    rows = await fetch_in_chunks(
        fetch, "SELECT value FROM json_each(?) WHERE value IN ({marks})", ids, (json.dumps(wanted),)
    )
    assert [len(params) - 1 for _, params in calls] == [IN_CHUNK, IN_CHUNK, 1]
    assert calls[2][0].endswith("IN (?)") and calls[2][1][1:] == (2 * IN_CHUNK,)
    assert sorted(r[0] for r in rows) == wanted
