"""DiscordChatExporter JSON parser: --media paths, embeds, stickers, reactions, timestamps."""

from __future__ import annotations

import io
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.archive import open_export
from ingest.errors import ParseError
from ingest.parsers import discord_export
from ingest.parsers.base import ParseStats
from memetag.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "discord"
GENERAL = "Example guild - Text Channels - general [1000000000000000001].json"
THREAD = "Example guild - general - memes thread [1000000000000000002].json"
GROUP_DM = "Direct Messages - Group - Example group [1000000000000000003].json"
MEDIA = "Example guild - Text Channels - general [1000000000000000001].json_Files"


def parse(member: str):
    stats = ParseStats()
    with open_export(FIXTURES) as source, source.open(member) as f:
        posts = list(discord_export.iter_posts(f, file=member, base_dir="", stats=stats))
        present = [source.exists(p.local_ref) for p in posts if p.local_ref]
    return posts, stats, present


def test_media_export_windows_paths():
    posts, stats, present = parse(GENERAL)
    assert [(p.source_id, p.media_hint, p.local_ref) for p in posts] == [
        ("1060000000000000001:0", "attachment", f"{MEDIA}/dce-export-more-662EF.png"),
        ("1060000000000000004:0", "embed", f"{MEDIA}/example-preview-263B5"),  # no extension
        ("1060000000000000005:0", "attachment", f"{MEDIA}/SPOILER_cat-1A2B4.jpg"),
        ("1060000000000000005:3", "attachment", f"{MEDIA}/missing-ABCDE.png"),  # mp4 1, mp3 2
        ("1060000000000000010:0", "sticker", f"{MEDIA}/pepecute-7C3D1.png"),
        ("1060000000000000012:0", "attachment", f"{MEDIA}/funny-0A1B2.gif"),
    ]
    assert present == [True, True, True, False, True, True]
    assert all(p.url is None for p in posts)
    assert posts[1].must_sniff and not posts[0].must_sniff
    assert stats.messages == 9
    assert stats.skipped == {
        "video": 1,
        "not_image": 1,
        "sticker_lottie": 1,
        "media_outside_export": 1,
    }
    assert stats.bad_records == 0


def test_fields():
    posts, _, _ = parse(GENERAL)
    first = posts[0]
    assert first.source == "discord"
    assert first.conversation_id == "1000000000000000001"
    assert first.conversation_name == "Example guild / general"
    assert first.author_ref == "500000000000000001" and first.author_name == "Person A"
    assert first.posted_at == datetime(2023, 1, 6, 14, 24, 31, 114000, tzinfo=UTC)
    assert first.reaction_count == 0
    embed = posts[1]
    assert embed.posted_at == datetime(2023, 1, 6, 14, 22, 25, 250000, tzinfo=UTC)  # .25+02:00
    assert embed.reaction_count == 1  # standard emoji with "id": ""
    deleted = posts[-1]
    assert deleted.author_ref == "555555555555555555" and deleted.author_name == "Deleted User"
    assert deleted.reaction_count == 5  # custom emoji (snowflake id) 3 + "id": null 2


def test_thread_uses_other_channels_media_and_no_nickname():
    posts, stats, present = parse(THREAD)
    assert [(p.source_id, p.local_ref) for p in posts] == [
        ("1060000000000000020:0", f"{MEDIA}/funny-0A1B2.gif")
    ]
    assert present == [True]
    assert posts[0].author_name == "person_b"  # no nickname key: falls back to name
    assert posts[0].conversation_name == "Example guild / memes thread"
    assert posts[0].posted_at == datetime(2023, 1, 6, 15, 0, 0, 120000, tzinfo=UTC)
    assert stats.messages == 1


def test_group_dm_urls_and_embeds():
    posts, stats, _ = parse(GROUP_DM)
    assert [(p.source_id, p.media_hint) for p in posts] == [
        ("1060000000000000030:0", "attachment"),
        ("1060000000000000032:0", "embed"),  # tenor: thumbnail only (no image)
        ("1060000000000000032:1", "embed"),  # image, then images[] without the duplicate
        ("1060000000000000032:2", "embed"),
        ("1060000000000000034:0", "attachment"),
    ]
    attachment, tenor, one, two, undated = posts
    assert (
        attachment.url.startswith("https://cdn.discordapp.com/attachments/")
        and attachment.local_ref is None
    )
    assert attachment.posted_at == datetime(2024, 2, 10, 14, 15, 42, 700000, tzinfo=UTC)  # -05:00
    assert attachment.reaction_count == 2
    assert attachment.conversation_name == "Direct Messages / Example group"
    assert tenor.url.startswith("https://images-ext-1.discordapp.net/")
    assert tenor.fallback_urls == ("https://media.tenor.com/EXAMPLE/magic.png",)
    assert tenor.must_sniff
    assert one.fallback_urls == ("https://example.com/one.jpg",)
    assert two.fallback_urls == ("https://example.com/two.jpg",)
    assert undated.posted_at is None
    assert stats.bad_records == 1 and "1060000000000000034" in stats.bad_examples[0]


def test_base_dir_resolution():
    resolve = discord_export.resolve_asset
    assert resolve("exports/chan", "a.json_Files\\x-1A2B3.png") == (
        None,
        "exports/chan/a.json_Files/x-1A2B3.png",
    )
    assert resolve("", "https://cdn.discordapp.com/a.png") == (
        "https://cdn.discordapp.com/a.png",
        None,
    )
    assert resolve("exports", "..\\..\\etc\\passwd") == (None, None)
    assert resolve("", "C:\\Users\\x\\a.png") == (None, None)
    assert resolve("", "/home/x/a.png") == (None, None)
    assert resolve("", "file:///etc/passwd") == (None, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"conversations": []}', "not a DiscordChatExporter"),
        (b"[1, 2]", "not a DiscordChatExporter"),
        (b"{}", "not a DiscordChatExporter"),
        (
            b'{"guild": {"id": "1"}, "channel": {}, "messages": [{"id": "1",',
            "Expecting property name",
        ),
        (b"", "not a DiscordChatExporter"),
    ],
)
def test_not_dce(data, message):
    with pytest.raises(ParseError, match=message):
        list(
            discord_export.iter_posts(
                io.BytesIO(data), file="x.json", base_dir="", stats=ParseStats()
            )
        )


# --- a --media export passed as its .json file or as its folder (names with spaces and []) ----


def _media_export(tmp_path: Path, files: tuple[str, ...] = (GENERAL, THREAD)) -> Path:
    """The general channel's JSON and _Files folder (and the thread that points into it)."""
    folder = tmp_path / "Exports [2023] - memes"
    shutil.copytree(FIXTURES / MEDIA, folder / MEDIA)
    for name in files:
        shutil.copy(FIXTURES / name, folder / name)
    return folder


def _ingest(tmp_path: Path, target: Path, capsys) -> dict:
    code = main(["--data", str(tmp_path / "data"), "ingest", "discord-export", str(target),
                 "--json", "--no-progress"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 1  # missing-ABCDE.png really is missing: the run is incomplete
    return summary


@pytest.mark.parametrize("how", ["file", "folder"])
def test_media_export_found_whether_given_the_json_or_its_folder(tmp_path, capsys, how):
    folder = _media_export(tmp_path, (GENERAL,))
    summary = _ingest(tmp_path, folder / GENERAL if how == "file" else folder, capsys)
    assert summary["stored"] == 5
    assert summary["failures_by_reason"] == {"missing_file": 1}
    assert summary["failure_examples"] == [f"{MEDIA}/missing-ABCDE.png: missing_file: "
                                           "not found in the export"]  # fmt: skip


def test_json_file_reads_another_channels_media_folder(tmp_path, capsys):
    folder = _media_export(tmp_path)
    summary = _ingest(tmp_path, folder / GENERAL, capsys)
    assert summary["stored"] == 5
    capsys.readouterr()
    code = main(["--data", str(tmp_path / "data"), "ingest", "discord-export",
                 str(folder / THREAD), "--json", "--no-progress"])  # fmt: skip
    thread = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (thread["stored"], thread["duplicates_by_hash"]) == (1, 1)  # funny-0A1B2.gif again


def test_bare_json_reads_only_inside_its_folder(tmp_path):
    folder = _media_export(tmp_path, (GENERAL,))
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    os.symlink(tmp_path / "secret.png", folder / MEDIA / "link-out.png")
    (folder / "beside.png").write_bytes(b"\x89PNG beside")
    with open_export(folder / GENERAL) as source:
        assert list(source.iter_members()) == [GENERAL]
        assert source.find("**/*.json") == [GENERAL]
        member = f"{MEDIA}/dce-export-more-662EF.png"
        assert source.exists(member)
        assert source.read_bytes(member, 1000) == (folder / member).read_bytes()
        assert source.exists("beside.png")  # the JSON's folder is the export, as when given
        for outside in (f"{MEDIA}/link-out.png", "../secret.png", f"{MEDIA}/../../secret.png",
                        str(tmp_path / "secret.png"), f"{MEDIA}", f"{MEDIA}/missing-ABCDE.png"):  # fmt: skip
            assert not source.exists(outside), outside
            with pytest.raises(ParseError, match="no member"):
                source.open(outside)
