"""Labelled folders: ImageFolder trees and the filename,sender,labels,timestamp CSV."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.archive import open_export
from ingest.errors import ParseError
from ingest.parsers import folder
from ingest.parsers.base import ParseStats

FIXTURE = Path(__file__).parent / "fixtures" / "folder"


def parse(path: Path, csv_member: str | None = None):
    stats = ParseStats()
    with open_export(path) as source:
        posts = list(folder.iter_posts(source, stats=stats, csv_member=csv_member))
    return posts, stats


def _ids(posts):
    """(path part of the source id, labels); the id's other part is a hash of the bytes."""
    return [(p.source_id.split(":", 1)[1], p.labels) for p in posts]


def test_tree():
    posts, stats = parse(FIXTURE)
    assert _ids(posts) == [
        ("cat/a.png", ("cat",)),
        ("cat/b.jpg", ("cat",)),
        ("dog/c.gif", ("dog",)),
        ("top.png", ()),  # top-level file: no label; notes.txt, labels.csv, .DS_Store skipped
    ]
    assert all(
        p.local_ref == p.source_id.split(":", 1)[1]
        and p.source == "folder"
        and p.author_ref is None
        for p in posts
    )
    assert stats.image_items == 4


def test_zipped_folder_root_is_not_a_label(tmp_path):
    archive = tmp_path / "memes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(FIXTURE.rglob("*")):
            if path.is_file():
                zf.write(path, "memes/" + path.relative_to(FIXTURE).as_posix())
        zf.writestr("__MACOSX/memes/._a.png", b"junk")
    posts, _ = parse(archive)
    assert [(p.local_ref, p.labels) for p in posts] == [
        ("memes/cat/a.png", ("cat",)),
        ("memes/cat/b.jpg", ("cat",)),
        ("memes/dog/c.gif", ("dog",)),
        ("memes/top.png", ()),
    ]
    # Zipped or unpacked, the same set keeps the same post ids.
    unpacked, _ = parse(FIXTURE)
    assert [p.source_id for p in posts] == [p.source_id for p in unpacked]


def test_same_paths_in_two_folders_are_two_posts(tmp_path):
    for name, content in (("A", b"first"), ("B", b"second")):
        (tmp_path / name / "funny").mkdir(parents=True)
        (tmp_path / name / "funny" / "001.png").write_bytes(content)
    (a,), _ = parse(tmp_path / "A")
    (b,), _ = parse(tmp_path / "B")
    assert a.source_id != b.source_id
    assert a.source_id.endswith(":funny/001.png") and b.source_id.endswith(":funny/001.png")


def test_csv():
    posts, stats = parse(FIXTURE, "labels.csv")
    assert [(p.local_ref, p.labels, p.author_ref, p.posted_at) for p in posts] == [
        (
            "cat/a.png",
            ("cat", "funny"),
            "Person A Example",
            datetime(2021, 7, 14, 19, 0, tzinfo=UTC),
        ),
        ("cat/b.jpg", ("cat",), None, datetime(2021, 7, 14, 21, 0, tzinfo=UTC)),  # Unix seconds
        ("dog/c.gif", (), "Person B Example", None),  # empty labels and timestamp
        ("top.png", ("misc",), "Person A Example", datetime(2021, 7, 14, 21, 0, tzinfo=UTC)),
        ("missing.png", ("meme",), None, None),  # kept: the pipeline reports the missing file
        # Listed again: the pipeline finds the repeat (by post id, in memory that does not
        # grow with the file) and counts it as a bad record; its line goes with it.
        ("cat/a.png", ("dog",), "Person B Example", None),
        ("cat/d.jpg", ("cat",), None, None),  # backslash path, bad timestamp
    ]
    assert [p.listed_at for p in posts] == [f"labels.csv line {n}" for n in (2, 3, 4, 5, 7, 9, 10)]
    assert posts[0].source_id == posts[5].source_id
    assert stats.bad_records == 2
    assert stats.bad_examples == [
        "labels.csv line 8: bad filename '../escape.png'",
        "labels.csv line 10: bad timestamp 'yesterday'",
    ]


def test_csv_in_subfolder_is_relative_to_it(tmp_path):
    (tmp_path / "set" / "x").mkdir(parents=True)
    (tmp_path / "set" / "labels.csv").write_text(
        "filename,sender,labels,timestamp\nx/1.png,,a b,\n../out.png,,a,\n"
    )
    posts, stats = parse(tmp_path, "set/labels.csv")
    assert [(p.local_ref, p.labels) for p in posts] == [("set/x/1.png", ("a", "b"))]
    assert posts[0].source_id == "missing:x/1.png"  # not on disk: the pipeline says so
    assert stats.bad_records == 1


def test_csv_missing_column(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,sender,timestamp\na.png,,\n")
    with pytest.raises(ParseError, match="missing column 'labels'") as err:
        parse(tmp_path, "labels.csv")
    assert "labels.csv" in str(err.value)


def test_find_label_csv():
    with open_export(FIXTURE) as source:
        assert folder.find_label_csv(source) == "labels.csv"


def test_csv_timestamps():
    parse_ts = folder.parse_csv_timestamp
    assert parse_ts("1626296400") == datetime(2021, 7, 14, 21, 0, tzinfo=UTC)
    assert parse_ts("2021-07-14T21:00:00Z") == datetime(2021, 7, 14, 21, 0, tzinfo=UTC)
    assert parse_ts("") is None
    with pytest.raises(ValueError):
        parse_ts("1e400")


def test_csv_given_by_itself_reads_its_folder_without_listing_it(tmp_path):
    posts, stats = parse(FIXTURE / "labels.csv", "labels.csv")
    listed, _ = parse(FIXTURE, "labels.csv")
    assert [(p.source_id, p.labels) for p in posts] == [(p.source_id, p.labels) for p in listed]
    assert stats.bad_records == 2  # the repeated line is found by the pipeline
    with open_export(FIXTURE / "labels.csv") as source:
        assert list(source.iter_members()) == ["labels.csv"]  # no walk of the folder
        assert source.exists("cat/a.png") and not source.exists("missing.png")
        assert source.label("cat/a.png") == str(FIXTURE / "cat" / "a.png")
    # A file that only a symlink leading out of the folder reaches is missing, as when listed.
    (tmp_path / "set").mkdir()
    (tmp_path / "outside.png").write_bytes(b"\x89PNG outside")
    (tmp_path / "set" / "in.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "set" / "labels.csv").write_text("filename,sender,labels,timestamp\nin.png,,a,\n")
    (post,), _ = parse(tmp_path / "set" / "labels.csv", "labels.csv")
    assert post.source_id == "missing:in.png"
