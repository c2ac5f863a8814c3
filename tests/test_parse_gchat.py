"""Google Chat parser: attachment name rules, date variants, deleted messages, with/without Takeout/."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.archive import open_export
from ingest.errors import ParseError
from ingest.parsers import gchat
from ingest.parsers.base import ParseStats

FIXTURE = Path(__file__).parent / "fixtures" / "gchat"
DM = "Takeout/Google Chat/Groups/DM ExmP-1AAAAE"
SPACE = "Takeout/Google Chat/Groups/Space AAAAExmpl01"


def parse(path: Path):
    stats = ParseStats()
    with open_export(path) as source:
        posts = list(gchat.iter_posts(source, stats=stats))
        present = {p.source_id: source.exists(p.local_ref) for p in posts}
    return posts, stats, present


def test_posts_exactly():
    posts, stats, present = parse(FIXTURE)
    assert [(p.source_id, p.local_ref) for p in posts] == [
        ("ExmP-1AAAAE/Ex-9_Topic2/Ex-9_Topic2:0", f"{DM}/File-2015-04-27.jpg"),
        ("ExmP-1AAAAE/Ex-9_Topic3/Ex-9_Topic3:0", f"{DM}/File-2015-04-27(1).jpg"),  # repeated name
        (
            "AAAAExmpl01/-ExTopic003/-ExTopic003:0",
            f"{SPACE}/File-300000000000000001_account_id=0.jpg",
        ),
        ("AAAAExmpl01/ExTopic0005/ExTopic0005:0", f"{SPACE}/File-2018-11-18.jpg"),  # :1 is a .pdf
        ("AAAAExmpl01/ExTopic0007/ExTopic0007:0", f"{SPACE}/File-2018-11-18(1).jpg"),
        ("AAAAExmpl01/ExTopic0008/ExTopic0008:0", f"{SPACE}/screenshot.png"),  # no export_name
        ("AAAAExmpl01/ExTopic0008/ExTopic0008:1", f"{SPACE}/File-gone.jpg"),  # missing on disk
        ("AAAAExmpl01/ExTopic0009/ExTopic0009:0", f"{SPACE}/File-hu-2015.jpg"),
    ]
    assert present == {
        p.source_id: p.source_id != "AAAAExmpl01/ExTopic0008/ExTopic0008:1" for p in posts
    }
    assert all(p.source == "gchat" and p.url is None for p in posts)
    assert stats.messages == 10
    assert stats.image_items == 8
    assert stats.skipped == {"not_image": 1, "deleted": 1}
    assert stats.bad_records == 1 and "AAAAExmpl01/ExTopic0009/ExTopic0009" in stats.bad_examples[0]


def test_fields():
    posts, _, _ = parse(FIXTURE)
    by_id = {p.source_id.split("/")[-1]: p for p in posts}
    dm = by_id["Ex-9_Topic2:0"]
    assert dm.conversation_id == "DM ExmP-1AAAAE"
    assert dm.conversation_name == "Person A Example, Person B Example"  # DM: named after members
    assert dm.author_ref == "person.b@example.com" and dm.author_name == "Person B Example"
    assert dm.posted_at == datetime(2015, 4, 27, 20, 29, 1, tzinfo=UTC)  # U+202F before PM
    assert dm.reaction_count == 0
    assert by_id["Ex-9_Topic3:0"].reaction_count == 3  # two reactions, three reactors
    assert by_id["-ExTopic003:0"].conversation_name == "Group Chat"
    assert by_id["-ExTopic003:0"].posted_at == datetime(2018, 11, 18, 18, 2, 21, tzinfo=UTC)
    assert by_id["ExTopic0005:0"].posted_at == datetime(2018, 11, 18, 17, 13, 43, tzinfo=UTC)  # 24h
    deleted_user = by_id["ExTopic0007:0"]
    assert deleted_user.author_ref == "Deleted User" and deleted_user.author_name == "Deleted User"
    assert deleted_user.posted_at == datetime(2021, 3, 14, 22, 41, 3, tzinfo=UTC)  # day-first
    assert by_id["ExTopic0008:0"].posted_at == datetime(2021, 3, 15, 0, 51, 41, tzinfo=UTC)  # 12 AM
    hungarian = by_id["ExTopic0009:0"]
    assert hungarian.posted_at is None
    assert (
        hungarian.author_ref == "persøn.c@example.com"
        and hungarian.author_name == "Persøn C Exåmple"
    )


def test_without_takeout_folder(tmp_path):
    """The same export zipped as 'Google Chat/...' (no Takeout/) gives the same posts."""
    archive = tmp_path / "chat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((FIXTURE / "Takeout").rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(FIXTURE / "Takeout").as_posix())
    posts, stats, _ = parse(archive)
    expected, _, _ = parse(FIXTURE)
    assert [p.source_id for p in posts] == [p.source_id for p in expected]
    assert posts[0].local_ref == "Google Chat/Groups/DM ExmP-1AAAAE/File-2015-04-27.jpg"
    assert stats.image_items == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Wednesday, April 15, 2015 at 12:51:41 AM UTC",
            datetime(2015, 4, 15, 0, 51, 41, tzinfo=UTC),
        ),
        (
            "Wednesday, April 15, 2015 at 12:51:41\u202fPM UTC",
            datetime(2015, 4, 15, 12, 51, 41, tzinfo=UTC),
        ),
        (
            "Wednesday, April 15, 2015 at 1:05:00\u00a0PM UTC",
            datetime(2015, 4, 15, 13, 5, tzinfo=UTC),
        ),
        ("Monday, April 27, 2015 at 17:13:43 UTC", datetime(2015, 4, 27, 17, 13, 43, tzinfo=UTC)),
        ("Tuesday, 14 March 2021 at 22:41:03 UTC", datetime(2021, 3, 14, 22, 41, 3, tzinfo=UTC)),
        ("2015. február 15., vasárnap 21:54:36 UTC", None),
        ("Monday, Smarch 27, 2015 at 17:13:43 UTC", None),
        ("Monday, April 31, 2015 at 17:13:43 UTC", None),
        ("", None),
        (None, None),
    ],
)
def test_created_date(text, expected):
    assert gchat.parse_created_date(text) == expected


def test_export_file_name_rules():
    assert gchat.export_file_name('a?b<c>d"e|f*g/h\\i:j%k.jpg') == "a_b_c_d_e_f_g_h_i_j_k.jpg"
    long = "File-" + "x" * 60 + ".jpeg"
    assert gchat.export_file_name(long) == "File-" + "x" * 42 + ".jpeg"  # 47-char stem


def test_broken_messages_json(tmp_path):
    group = tmp_path / "Google Chat" / "Groups" / "DM Broken1"
    group.mkdir(parents=True)
    (group / "messages.json").write_text('{"messages": [{"creator": {}, ')
    with open_export(tmp_path) as source, pytest.raises(ParseError, match="messages.json"):
        list(gchat.iter_posts(source, stats=ParseStats()))
    (group / "messages.json").write_text('["not", "chat"]')
    with open_export(tmp_path) as source, pytest.raises(ParseError, match="not a Google Chat"):
        list(gchat.iter_posts(source, stats=ParseStats()))
