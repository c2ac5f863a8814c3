"""Property tests: whatever bytes come in, the Hangouts parser raises nothing but ParseError."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.parsers import discord_export, hangouts
from ingest.parsers.base import ParsedPost, ParseStats

FIXTURES = Path(__file__).parent / "fixtures"
# The old-layout fixture is small: mutations land on interesting bytes often.
SEED = (FIXTURES / "hangouts" / "Hangouts_old.json").read_bytes()
NEW_SEED = (FIXTURES / "hangouts" / "Hangouts.json").read_bytes()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_hangouts(data: bytes) -> list[ParsedPost]:
    stats = ParseStats()
    try:
        posts = list(hangouts.iter_posts(io.BytesIO(data), file="fuzz.json", stats=stats))
    except ParseError:
        return []
    for post in posts:
        assert isinstance(post, ParsedPost)
        for text in (post.source_id, post.url, post.author_name, post.conversation_name):
            if text is not None:
                text.encode("utf-8")  # storable: no lone surrogates
    try:
        hangouts.list_conversations(io.BytesIO(data), file="fuzz.json")
    except ParseError:
        pass
    return posts


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_byte_flips(flips):
    data = bytearray(SEED)
    for pos, value in flips:
        data[pos] = value
    run_hangouts(bytes(data))


@FUZZ
@given(st.integers(0, len(NEW_SEED)))
def test_truncation(cut):
    run_hangouts(NEW_SEED[:cut])


@FUZZ
@given(st.integers(0, len(SEED) - 1), st.binary(min_size=1, max_size=20))
def test_insertions(pos, junk):
    run_hangouts(SEED[:pos] + junk + SEED[pos:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
# Values shaped like the real thing, so the parser gets past the outer checks.
keys = st.sampled_from(
    [
        "chat_message",
        "message_content",
        "attachment",
        "segment",
        "embed_item",
        "type",
        "plus_photo",
        "embeds.PlusPhoto.plus_photo",
        "thumbnail",
        "url",
        "image_url",
        "event_id",
        "timestamp",
        "sender_id",
        "gaia_id",
        "media_type",
        "link_data",
        "link_target",
        "text",
        "participant_data",
        "conversation",
        "id",
        "fallback_name",
        "owner_obfuscated_id",
        "original_content_url",
    ]
)
shaped = st.recursive(
    st.none()
    | st.text(max_size=30)
    | st.integers()
    | st.sampled_from(["PLUS_PHOTO", "LINK", "VIDEO", "1600000000000000"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(json_values)
def test_random_documents(value):
    run_hangouts(json.dumps(value).encode())


@FUZZ
@given(shaped, st.lists(shaped, max_size=5), st.booleans())
def test_random_conversations(header, events, old):
    if old:
        doc = {
            "conversation_state": [
                {"conversation_state": {"conversation": header, "event": events}}
            ]
        }
    else:
        doc = {"conversations": [{"conversation": {"conversation": header}, "events": events}]}
    run_hangouts(json.dumps(doc).encode())


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), min_size=1, max_size=6))
def test_discord_byte_flips(flips):
    seed = (
        FIXTURES / "discord" / "Direct Messages - Group - Example group [1000000000000000003].json"
    ).read_bytes()
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        list(
            discord_export.iter_posts(
                io.BytesIO(bytes(data)), file="f", base_dir="", stats=ParseStats()
            )
        )
    except ParseError:
        pass


def test_deep_nesting():
    for data in (
        b'{"conversations": [' + b"[" * 100_000,
        b'{"conversations": [{"events": [' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}]}",
        b'{"continuation_end_timestamp": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        try:
            run_hangouts(data)
        except ParseError:
            pass


def test_lone_surrogates_are_cleaned():
    doc = (
        b'{"conversations": [{"conversation": {"conversation": {"name": "bad \\ud800 name"}},'
        b' "events": [{"event_id": "e\\udc00", "timestamp": "1", "chat_message": {"message_content":'
        b' {"segment": [{"type": "LINK", "text": "https://example.com/\\ud83d.png"}]}}}]}]}'
    )
    posts = run_hangouts(doc)
    assert len(posts) == 1 and posts[0].conversation_name == "bad ? name"
