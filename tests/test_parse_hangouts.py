"""Hangouts.json parser: both layouts, every odd case of formats.md §1.6, and broken files."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.errors import ParseError
from ingest.parsers import hangouts
from ingest.parsers.base import ParseStats

FIXTURES = Path(__file__).parent / "fixtures" / "hangouts"
NEW = FIXTURES / "Hangouts.json"
OLD = FIXTURES / "Hangouts_old.json"


def parse(path: Path, **kwargs):
    stats = ParseStats()
    with open(path, "rb") as f:
        posts = list(hangouts.iter_posts(f, file=path.name, stats=stats, **kwargs))
    return posts, stats


def parse_bytes(data: bytes, **kwargs):
    stats = ParseStats()
    return list(hangouts.iter_posts(io.BytesIO(data), file="x.json", stats=stats, **kwargs)), stats


def test_new_layout_posts_exactly():
    posts, stats = parse(NEW)
    assert [p.source_id for p in posts] == [
        "EXAMPLEevt2.~EXAMPLEseq2:0",  # PLUS_PHOTO with thumbnail.url and annotation
        "EXAMPLEevt5:2",  # LINK behind a google.com/url redirect; 0 is the PLACE_V2, 1 the maps link
        "EXAMPLEevt8:0",  # ANIMATED_PHOTO with an embed_item.id
        "EXAMPLEevt10:0",  # two photos in one message
        "EXAMPLEevt10:1",
        "EXAMPLEevt22:0",  # PENDING_INVITATION sender without fallback_name
        "EXAMPLEevt23:0",  # fallback_name is an email
        "EXAMPLEevt24:0",  # sender missing from participant_data
        "EXAMPLEevt26:0",  # unparseable timestamp: kept, posted_at None
        "EXAMPLEevt40:0",  # the 6th conversation
    ]
    assert all(p.source == "hangouts" for p in posts)
    assert stats.messages == 16  # chat messages only: HANGOUT_EVENT/ADD_USER/RENAME are not
    assert stats.image_items == 10
    assert stats.skipped == {
        "sticker": 1,
        "place": 1,
        "link_maps": 1,
        "video": 1,
        "thing": 1,
        "voicemail": 1,
    }
    assert stats.bad_records == 2
    assert "EXAMPLEevt26" in stats.bad_examples[0]
    assert "no event_id" in stats.bad_examples[1]


def test_new_layout_photo_fields():
    posts, _ = parse(NEW)
    first = posts[0]
    lh3 = (
        "https://lh3.googleusercontent.com/-EXAMPLE0001/EXAMPLE0001/AAAAAAAAAAA/"
        "EXAMPLE-PHOTO-ID-0001-xxxxxxxxxxxxxxxxxxxxx/s0/2020-09-13.jpg"
    )
    assert first.url == lh3  # plus_photo.url; thumbnail.image_url is the same, deduplicated
    assert first.fallback_urls == (
        "https://lh3.googleusercontent.com/EXAMPLE-ORIGINAL-CONTENT-ID-0001-" + "x" * 50,
    )
    assert "plus.google.com" not in first.url and not any(
        "plus.google" in u for u in first.fallback_urls
    )
    assert first.posted_at == datetime(2020, 9, 13, 12, 26, 40, 123456, tzinfo=UTC)
    assert first.author_ref == "100000000000000000011"
    assert first.author_name == "Person A Example"
    assert first.conversation_id == "UgzEXAMPLE-conv-0024AaABAQ"
    assert first.conversation_name == "Person A Example, Person B Example"  # unnamed 1:1
    assert first.media_hint == "PHOTO" and not first.must_sniff
    by_id = {p.source_id: p for p in posts}
    assert by_id["EXAMPLEevt8:0"].media_hint == "ANIMATED_PHOTO"
    assert by_id["EXAMPLEevt10:0"].url.endswith(
        "EXAMPLE-PHOTO-ID-0005-xxxxxxxxxxxxxxxxxxxxx/s0/2020-09-13.jpg"
    )
    assert by_id["EXAMPLEevt10:1"].url.startswith(
        "https://lh3.googleusercontent.com/EXAMPLE-ORIGINAL"
    )
    assert by_id["EXAMPLEevt10:1"].fallback_urls == ()
    link = by_id["EXAMPLEevt5:2"]
    assert link.url == "https://example.com/meme.png"
    assert link.must_sniff and link.media_hint == "LINK"
    assert by_id["EXAMPLEevt22:0"].author_name == "100000000000000000013"
    assert by_id["EXAMPLEevt23:0"].author_name == "person.d@example.com"
    assert by_id["EXAMPLEevt24:0"].author_name == "100000000000000000015"
    assert by_id["EXAMPLEevt24:0"].conversation_name == "Example group"
    assert by_id["EXAMPLEevt26:0"].posted_at is None


def test_stickers_kept_on_request():
    posts, stats = parse(NEW, skip_stickers=False)
    sticker = [p for p in posts if p.source_id == "EXAMPLEevt3:0"]
    assert len(sticker) == 1 and sticker[0].url.endswith("Callouts_Internet_SeeULater.png")
    assert "sticker" not in stats.skipped


def test_old_layout():
    posts, stats = parse(OLD)
    assert [p.source_id for p in posts] == ["EXAMPLEoldEvt0001:0"]
    post = posts[0]
    assert post.url.endswith("/s0/3000000000000000001%253Faccount_id%253D1")  # kept double-encoded
    assert post.author_name == "Person A Example"
    assert post.conversation_id == "UgwEXAMPLE_conv_0034AaABAQ"
    assert (
        post.conversation_name == "Person A Example, Person B \U0001f62f Example"
    )  # surrogate pair
    assert post.posted_at == datetime(2016, 11, 24, 15, 6, 40, 123456, tzinfo=UTC)
    assert stats.messages == 4
    assert stats.skipped == {"sticker": 1, "place": 1, "link_maps": 1}  # ANIMATED sticker, PlaceV2


def test_filter_by_id_or_name():
    posts, stats = parse(NEW, conversations=["Example group"])
    assert {p.conversation_id for p in posts} == {"UgzEXAMPLE-conv-0025AaABAQ"}
    assert stats.messages == 6
    posts, _ = parse(NEW, conversations={"UgzEXAMPLE-conv-0029AaABAQ"})
    assert [p.source_id for p in posts] == ["EXAMPLEevt40:0"]
    posts, _ = parse(OLD, conversations=["Old group"])
    assert posts == []


def test_list_conversations():
    with open(NEW, "rb") as f:
        rows = hangouts.list_conversations(f, file="Hangouts.json")
    assert len(rows) == 6
    assert [(r.name, r.type, r.messages, r.images) for r in rows] == [
        ("Person A Example, Person B Example", "STICKY_ONE_TO_ONE", 7, 5),
        ("Example group", "GROUP", 6, 4),
        ("Person A Example, Person B Example, person.d@example.com", "GROUP", 0, 0),
        ("Person A Example, Person E Example", "STICKY_ONE_TO_ONE", 0, 0),  # INVITED, no events
        ("Person A Example, +15550000002", "STICKY_ONE_TO_ONE", 2, 0),  # SMS + voicemail
        ("Sixth conversation", "GROUP", 1, 1),
    ]
    assert rows[1].participants == (
        "Person A Example",
        "Person B Example",
        "100000000000000000013",
        "person.d@example.com",
    )
    with open(OLD, "rb") as f:
        old = hangouts.list_conversations(f, file="Hangouts_old.json")
    assert [(r.id, r.name, r.messages) for r in old] == [
        ("UgwEXAMPLE_conv_0034AaABAQ", "Person A Example, Person B \U0001f62f Example", 4),
        ("UgwEXAMPLE_conv_0035AaABAQ", "Old group", 0),
    ]


def test_unwrap_redirect():
    target = hangouts.unwrap_redirect(
        "https://www.google.com/url?q=https://example.com/a.jpg%3Fx%3D1&sa=D&source=hangouts"
    )
    assert target == "https://example.com/a.jpg?x=1"
    assert (
        hangouts.unwrap_redirect("https://example.com/url?q=https://x")
        == "https://example.com/url?q=https://x"
    )


def test_timestamp_exact():
    assert hangouts.parse_timestamp("1590000000123456") == datetime(
        2020, 5, 20, 18, 40, 0, 123456, tzinfo=UTC
    )
    assert hangouts.parse_timestamp("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert hangouts.parse_timestamp("9" * 30) is None
    assert hangouts.parse_timestamp(None) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a Hangouts export"),
        (b"[]", "not a Hangouts export"),
        (b'{"guild": {}, "messages": []}', "not a Hangouts export"),
        (b"{}", "not a Hangouts export"),
        (b'{"conversations": 5}', "not a Hangouts export"),
        (b'{"conversations": [{"conversation": {}, "events": [{"a": 1},', "expected a JSON value"),
        (b'{"conversations": [] garbage', "expected ',' or '}'"),
        (b'{"conversations": []} trailing', "unexpected data after"),
        (b'{"conversations": [{"events": [1 2]}]}', "expected ',' or ']'"),
    ],
)
def test_broken_files_raise_parse_error(data, message):
    with pytest.raises(ParseError, match=message):
        parse_bytes(data)


def test_malformed_json_reports_byte_offset():
    text = NEW.read_bytes()
    cut = text.index(b'"EXAMPLEevt24"')
    broken = text[:cut] + b"}" + text[cut:]  # a stray brace inside an event
    with pytest.raises(ParseError) as err:
        parse_bytes(broken)
    assert err.value.offset is not None and abs(err.value.offset - cut) < 8
    assert err.value.file == "x.json"


def test_text_encodings():
    """Raw UTF-8, escapes and invalid bytes in one file; a UTF-16 file is refused clearly."""
    doc = (
        '{"conversations": [{"conversation": {"conversation": {"name": "Gr\u00f8up \\u00e9 '
        '\\uD83D\\uDE02 caf\u00e9 \\u2019"}}, "events": [{"event_id": "e\xff1", "timestamp": "1", '
        '"chat_message": {"message_content": {"segment": [{"type": "LINK", "text": "https://example.com/\u00e9.png"}]}}}]}]}'
    )
    data = doc.encode("utf-8").replace("e\u00ff1".encode(), b"e\xff1")
    [post], stats = parse_bytes(b"\xef\xbb\xbf" + data)  # with a UTF-8 byte-order mark
    assert post.conversation_name == "Gr\u00f8up \u00e9 \U0001f602 caf\u00e9 \u2019"
    assert post.url == "https://example.com/\u00e9.png"
    assert post.source_id == "e\u00ff1:0"  # an invalid UTF-8 byte is kept, not fatal
    with pytest.raises(ParseError, match="UTF-16"):
        parse_bytes('{"conversations": []}'.encode("utf-16"))


def test_truncated_file():
    data = NEW.read_bytes()[:-5000]
    with pytest.raises(ParseError):
        parse_bytes(data)


def test_bad_records_are_counted_not_fatal():
    doc = {
        "conversations": [
            {
                "conversation": {"conversation_id": {"id": "c1"}, "conversation": "not an object"},
                "events": [
                    5,
                    {"chat_message": "text"},
                    {
                        "chat_message": {
                            "message_content": {
                                "attachment": [{"embed_item": {"type": ["PLUS_PHOTO"]}}]
                            }
                        },
                        "event_id": "e1",
                        "timestamp": "1",
                    },
                    {
                        "chat_message": {
                            "message_content": {
                                "attachment": [
                                    7,
                                    {
                                        "embed_item": {
                                            "type": "PLUS_PHOTO",
                                            "plus_photo": {"thumbnail": {"url": "x"}},
                                        }
                                    },
                                ]
                            }
                        },
                        "event_id": "e2",
                        "timestamp": "1",
                    },
                ],
            },
            "not a conversation",
        ]
    }
    posts, stats = parse_bytes(json.dumps(doc).encode())
    assert posts == []
    assert stats.bad_records == 4
    assert stats.skipped["attachment_without_embed"] == 1


def test_tiny_reads_same_result():
    """Reads of 7 bytes (chunk boundaries mid-token, mid-character) give the same posts."""
    data = NEW.read_bytes()
    expected, _ = parse_bytes(data)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(7)

    got = list(hangouts.iter_posts(Trickle(), file="x", stats=ParseStats()))  # type: ignore[arg-type]
    assert got == expected


def test_many_events_across_buffer_boundaries():
    """Thousands of events of varying size: records straddle the 1 MB read buffer."""
    events = []
    for i in range(6000):
        event = {
            "event_id": f"e{i}",
            "timestamp": str(i),
            "sender_id": {"gaia_id": "g1"},
            "chat_message": {
                "message_content": {"segment": [{"type": "TEXT", "text": "é" * (i % 700)}]}
            },
        }
        if i % 7 == 0:
            event["chat_message"]["message_content"]["attachment"] = [
                {
                    "embed_item": {
                        "type": ["PLUS_PHOTO"],
                        "plus_photo": {
                            "thumbnail": {
                                "url": "https://plus.google.com/x",
                                "image_url": f"https://lh3/{i}.jpg",
                            },
                            "url": f"https://lh3/{i}.jpg",
                            "media_type": "PHOTO",
                        },
                    }
                }
            ]
        events.append(event)
    doc = {
        "conversations": [
            {
                "conversation": {
                    "conversation_id": {"id": "c"},
                    "conversation": {
                        "participant_data": [
                            {"id": {"gaia_id": "g1"}, "fallback_name": "Person A Example"}
                        ]
                    },
                },
                "events": events,
            }
        ]
    }
    data = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    assert len(data) > 3 << 20
    posts, stats = parse_bytes(data)
    assert [p.source_id for p in posts] == [f"e{i}:0" for i in range(0, 6000, 7)]
    assert all(p.author_name == "Person A Example" for p in posts)
    assert stats.messages == 6000 and stats.bad_records == 0
