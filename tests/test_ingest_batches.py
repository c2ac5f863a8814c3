"""Posts whose bytes are in the export are stored in batches: each post still fails alone, the
claim-write-link order holds for the whole batch, and an interrupted batch resumes cleanly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import ingest.pipeline as pipeline
from ingest.errors import MemberMissing
from ingest.parsers.base import ParsedPost, ParseStats
from ingest.pipeline import IngestSummary, run_ingest
from store.files import ImageFiles
from store.queries import images, labels, posts
from store.queries.posts import StoredImage, record_stored_many
from store.rows import NewPost
from tests.helpers.imagegen import make_bomb_png, make_image


class DictReader:
    """Bytes inside an 'export', by member name; ``broken`` members fail like a dying disk."""

    def __init__(self, members: dict[str, bytes], broken: frozenset[str] = frozenset()) -> None:
        self.members = members
        self.broken = broken

    def read_bytes(self, member: str, max_bytes: int) -> bytes:
        if member not in self.members:
            raise MemberMissing("export", member)
        if member in self.broken:
            raise RuntimeError(f"the disk went away under {member}")
        if member not in self.members:
            raise MemberMissing("export", member)
        return self.members[member]


def _post(sid: str, local: str, *, labels_=("meme",)) -> ParsedPost:
    return ParsedPost(
        source="test",
        source_id=sid,
        conversation_id="c",
        conversation_name="Chat",
        author_ref="a1",
        author_name="Person A",
        posted_at=datetime(2021, 5, 1, tzinfo=UTC),
        url=None,
        local_ref=local,
        labels=tuple(labels_),
    )


async def _run(db, tmp_path, parsed, reader) -> IngestSummary:
    return await _run_batches(db, tmp_path, parsed, reader)


async def _run_batches(db, tmp_path, parsed, reader, batch_size: int = 500) -> IngestSummary:
    return await run_ingest(
        db,
        ImageFiles(tmp_path / "images"),
        parsed,
        ParseStats(),
        source="test",
        people={},
        reader=reader,
        max_pixels=10_000_000,
        batch_size=batch_size,
    )


async def _claims(db) -> int:
    return (await db.fetchone("SELECT COUNT(*) FROM pending_files"))[0]


def _export(n: int, distinct: int) -> tuple[dict[str, bytes], list[ParsedPost]]:
    pool = [make_image("PNG", seed=s) for s in range(distinct)]
    members = {f"img/{i}.png": pool[i % distinct] for i in range(n)}
    return members, [_post(f"m{i}:0", f"img/{i}.png") for i in range(n)]


async def test_bad_files_fail_alone_inside_batches(db, tmp_path):
    n = 3 * pipeline._LOCAL_BATCH + 5  # several batches, the last one short
    members, parsed = _export(n, distinct=7)
    members["img/3.png"] = b"<html>not an image</html>"
    members["img/70.png"] = make_bomb_png()
    members["img/71.png"] = make_image("PNG", seed=1)[:-40]  # cut short
    del members["img/140.png"]
    s = await _run(db, tmp_path, parsed, DictReader(members))
    assert dict(s.failures) == {
        "not_image": 1,
        "decompression_bomb": 1,
        "missing_file": 1,
        "truncated": 1,
    }
    assert s.stored == n - 4 and s.new_images == 7 and s.duplicates == n - 4 - 7
    by_id = {p.source_id: p for p in await posts.list_posts(db, "test")}
    assert by_id["m3:0"].failure_reason == "not_image"
    assert by_id["m140:0"].failure_reason == "missing_file"
    assert sum(p.status == "stored" for p in by_id.values()) == n - 4
    assert await _claims(db) == 0
    files = ImageFiles(tmp_path / "images")
    assert files.count_image_files() == 7
    # Each stored post's labels became votes on its image.
    image = await images.get_image(db, by_id["m10:0"].image_id)
    assert image is not None and files.path_for(image.sha256, image.ext).is_file()
    votes = await labels.list_votes_for_image(db, image.id)
    assert {(v.label, v.voter) for v in votes} == {("meme", "ingest:test")}


async def test_a_batch_never_holds_more_than_its_byte_budget(db, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_LOCAL_BATCH_BYTES", 1)  # every file is over it
    reached: list[int] = []
    real = pipeline._read_and_check_local

    def spy(posts_, *args, **kwargs):
        results = real(posts_, *args, **kwargs)
        reached.append(len(results))
        return results

    monkeypatch.setattr(pipeline, "_read_and_check_local", spy)
    members, parsed = _export(20, distinct=3)
    s = await _run(db, tmp_path, parsed, DictReader(members))
    assert s.stored == 20 and s.new_images == 3 and not s.failures
    assert reached == [1] * 20  # one file per job: the rest of the batch waits its turn
    assert await _claims(db) == 0


async def test_an_interrupted_batch_resumes_without_duplicates(db, tmp_path):
    n = 2 * pipeline._LOCAL_BATCH + 10
    members, parsed = _export(n, distinct=5)
    broken = frozenset({f"img/{pipeline._LOCAL_BATCH + 3}.png"})
    with pytest.raises(RuntimeError, match="the disk went away"):
        await _run(db, tmp_path, parsed, DictReader(members, broken))
    # What was linked stays linked; the rest is still pending, not failed.
    statuses = {p.status for p in await posts.list_posts(db, "test")}
    assert statuses <= {"stored", "pending"} and "pending" in statuses
    again = await _run(db, tmp_path, parsed, DictReader(members))
    assert again.new_posts == 0 and not again.failures
    stored = await posts.list_posts(db, "test")
    assert all(p.status == "stored" for p in stored)
    assert len({p.image_id for p in stored}) == 5
    assert ImageFiles(tmp_path / "images").count_image_files() == 5
    assert await _claims(db) == 0
    # A third run has nothing left to do.
    third = await _run(db, tmp_path, parsed, DictReader(members))
    assert third.stored == 0 and not third.failures


async def test_record_stored_many_links_in_order_and_releases_claims(db):
    new_posts = [
        NewPost("test", f"m{i}:0", "c", "Chat", None, None, None, None, None, f"x/{i}.png")
        for i in range(4)
    ]
    await posts.insert_posts(db, new_posts, {})
    ids = [p.id for p in await posts.list_posts(db, "test")]
    a, b = "a1" * 32, "b2" * 32
    img = {sha: StoredImage(sha, None, 1, 1, "PNG", "png", 10) for sha in (a, b)}
    (known,) = await record_stored_many(db, [(ids[0], img[b])])
    assert known.is_new
    await images.claim_image_files(db, [(a, "png"), (b, "png")])
    assert await _claims(db) == 2
    ensured: list[int] = []
    outcomes = await record_stored_many(
        db,
        [(ids[1], img[a]), (ids[2], img[b]), (ids[3], img[a])],
        ensure_files=lambda: ensured.append(1),
    )
    assert ensured == [1]  # once for the whole batch
    assert [o.is_new for o in outcomes] == [True, False, False]
    assert outcomes[0].image_id == outcomes[2].image_id
    assert outcomes[1].image_id == known.image_id
    assert await _claims(db) == 0
    by_id = {p.id: p for p in await posts.list_posts(db, "test")}
    assert [by_id[i].image_id for i in ids[1:]] == [o.image_id for o in outcomes]
    assert all(by_id[i].status == "stored" and by_id[i].attempts == 1 for i in ids)
    assert await record_stored_many(db, []) == []


async def test_reposted_bytes_are_checked_once_per_run(db, tmp_path, monkeypatch):
    calls: list[int] = []
    real = pipeline.inspect_image

    def counting(data, **kwargs):
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(pipeline, "inspect_image", counting)
    members, parsed = _export(40, distinct=3)
    members["img/5.png"] = members["img/5.png"][:-40]  # the same picture, cut: other bytes
    s = await _run(db, tmp_path, parsed, DictReader(members))
    assert s.stored == 39 and dict(s.failures) == {"truncated": 1}
    assert len(calls) == 4  # three pictures and the cut copy; every repost answered from memory


def test_checked_images_keeps_only_its_latest_answers(monkeypatch):
    calls: list[int] = []
    real = pipeline.inspect_image
    monkeypatch.setattr(
        pipeline, "inspect_image", lambda data, **kw: calls.append(1) or real(data, **kw)
    )
    checked = pipeline.CheckedImages(limit=2)
    a, b, c = (make_image("PNG", seed=s) for s in range(3))
    for data in (a, b, a, c, a, b):
        info = checked.check(data, max_pixels=10_000_000)
        assert info.bytes == len(data)
    # a, b checked; a remembered; c pushes a out (the oldest); a and then b checked again.
    assert len(calls) == 5


async def test_an_item_listed_twice_in_one_export_is_one_post_counted_once(db, tmp_path):
    members, parsed = _export(6, distinct=2)
    # Listed again far apart (another record batch) and right after itself (the same batch).
    listed = parsed + [parsed[0], parsed[5], parsed[5]]
    s = await _run_batches(db, tmp_path, listed, DictReader(members), batch_size=4)
    assert (s.image_items, s.new_posts, s.known_posts, s.stored) == (6, 6, 0, 6)
    again = await _run_batches(db, tmp_path, listed, DictReader(members), batch_size=4)
    assert (again.image_items, again.new_posts, again.known_posts) == (6, 0, 6)
    assert len(await posts.list_posts(db, "test")) == 6


def test_post_ids_is_a_set_of_ids_in_one_bit_each():
    ids = pipeline.PostIds()
    assert ids.add(5) and ids.add(1_000_000) and ids.add(0)
    assert not ids.add(5)
    assert len(ids) == 3 and 5 in ids and 1_000_000 in ids and 0 in ids
    assert 4 not in ids and 6 not in ids and 999_999 not in ids and 10**9 not in ids
    assert -1 not in ids and "5" not in ids
    assert len(ids._bits) <= 2 * (1_000_000 // 8 + 1)  # bits, not objects


@pytest.mark.parametrize("batch_size", [2, 500])
async def test_a_labels_csv_listing_a_file_again_is_a_bad_record_and_the_first_line_wins(
    db, tmp_path, batch_size
):
    from pathlib import Path

    from ingest.archive import open_export
    from ingest.parsers import folder

    fixture = Path(__file__).parent / "fixtures" / "folder" / "labels.csv"
    stats = ParseStats()
    with open_export(fixture) as source:
        s = await run_ingest(
            db,
            ImageFiles(tmp_path / "images"),
            folder.iter_posts(source, stats=stats, csv_member="labels.csv"),
            stats,
            source="folder",
            people={},
            reader=source,
            max_pixels=10_000_000,
            batch_size=batch_size,
        )
    assert s.bad_records == 3 and s.image_items == 6 and s.new_posts == 6
    assert "labels.csv line 9: the same file as an earlier line" in s.bad_examples
    [cat_a] = [p for p in await posts.list_posts(db, "folder") if p.local_ref == "cat/a.png"]
    votes = await labels.list_votes_for_image(db, cat_a.image_id)
    assert sorted(v.label for v in votes) == ["cat", "funny"]  # not line 9's "dog"
