"""Hostile input through `memetag ingest`: one clear line, non-zero exit, nothing lost or doubled."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import zipfile
from pathlib import Path

import pytest

from memetag.cli import main
from tests.helpers.imagegen import make_bomb_png, make_image


def _counts(data: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(data / "memetag.db")
    try:
        posts = con.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
        stored = con.execute("SELECT COUNT(*) FROM posts WHERE status='stored'").fetchone()[0]
        images = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    finally:
        con.close()
    return posts, stored, images


@pytest.fixture
def data(tmp_path, capsys) -> Path:
    """A data dir that already holds three good images, so every test can check nothing is lost."""
    good = tmp_path / "good"
    for i, label in enumerate(["meme", "meme", "news"]):
        (good / label).mkdir(parents=True, exist_ok=True)
        (good / label / f"{i}.png").write_bytes(make_image("PNG", seed=i))
    data = tmp_path / "data"
    assert main(["--data", str(data), "ingest", "folder", str(good), "--no-progress"]) == 0
    assert _counts(data) == (3, 3, 3)
    capsys.readouterr()
    return data


def _ingest(data: Path, *args: str) -> int:
    return main(["--data", str(data), "ingest", *args, "--no-progress"])


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_path_that_does_not_exist(data, tmp_path, capsys):
    assert _ingest(data, "hangouts", str(tmp_path / "missing.json")) == 1
    _one_line_error(capsys, "missing.json", "no such file")
    assert _counts(data) == (3, 3, 3)


def test_malformed_json_reports_byte_offset(data, tmp_path, capsys):
    bad = tmp_path / "Hangouts.json"
    bad.write_text('{"conversations": [{"conversation": {"id": }]}', encoding="utf-8")
    assert _ingest(data, "hangouts", str(bad)) == 1
    line = _one_line_error(capsys, "Hangouts.json", "byte")
    assert "expected" in line or "invalid" in line.lower() or "malformed" in line.lower()
    assert _counts(data) == (3, 3, 3)


def test_truncated_hangouts_export(data, tmp_path, capsys):
    from tests.chatgen import hangouts_export

    full = hangouts_export(tmp_path / "full.json", ["http://127.0.0.1:9/x.jpg"] * 3)
    cut = tmp_path / "Hangouts.json"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    assert _ingest(data, "hangouts", str(cut)) == 1
    _one_line_error(capsys, "Hangouts.json")
    assert _counts(data)[1:] == (3, 3)


def test_unknown_json_is_not_a_hangouts_export(data, tmp_path, capsys):
    other = tmp_path / "Hangouts.json"
    other.write_text('{"guild": {"id": "1"}, "messages": []}', encoding="utf-8")
    assert _ingest(data, "hangouts", str(other)) == 1
    _one_line_error(capsys, "Hangouts.json", "conversations")


def test_zip_without_hangouts_json(data, tmp_path, capsys):
    archive = tmp_path / "takeout.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Takeout/Mail/readme.txt", "nothing here")
    assert _ingest(data, "hangouts", str(archive)) == 1
    _one_line_error(capsys, "takeout.zip", "expected")
    assert _counts(data) == (3, 3, 3)


def test_bad_files_in_a_folder_are_named_and_the_rest_stored(data, tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "meme").mkdir(parents=True)
    (folder / "meme" / "fine.jpg").write_bytes(make_image("JPEG", seed=42))
    (folder / "meme" / "empty.png").write_bytes(b"")
    (folder / "meme" / "bomb.png").write_bytes(make_bomb_png(50_000, 50_000))
    (folder / "meme" / "letter.jpg").write_bytes(b"%PDF-1.4 not a picture at all")
    # A file name that is not valid UTF-8 (as old archives and other OSes produce).
    odd = os.fsencode(folder / "meme") + b"/caf\xe9.png"
    with open(odd, "wb") as fh:
        fh.write(make_image("PNG", seed=43))
    assert _ingest(data, "folder", str(folder)) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("memetag: failed:")]
    assert len(failed) == 3
    reasons = {line.split(": ")[2].split("/")[-1]: line.split(": ")[3] for line in failed}
    assert reasons == {
        "empty.png": "empty",
        "bomb.png": "decompression_bomb",
        "letter.jpg": "not_image",
    }
    assert "Traceback" not in captured.err
    posts, stored, images = _counts(data)
    assert (stored, images) == (5, 5)  # 3 before + fine.jpg + the non-UTF-8-named PNG
    # Running it again stores nothing twice and keeps the failures as they were.
    assert _ingest(data, "folder", str(folder)) == 0
    assert _counts(data) == (posts, stored, images)


def test_csv_with_missing_columns(data, tmp_path, capsys):
    folder = tmp_path / "csvdir"
    folder.mkdir()
    (folder / "a.png").write_bytes(make_image("PNG", seed=7))
    (folder / "labels.csv").write_text("filename,labels\na.png,meme\n", encoding="utf-8")
    assert _ingest(data, "folder", str(folder / "labels.csv")) == 1
    _one_line_error(capsys, "labels.csv", "sender")
    assert _counts(data) == (3, 3, 3)


def test_csv_ingest_with_labels_then_export_round_trip(data, tmp_path, capsys):
    folder = tmp_path / "csvok"
    folder.mkdir()
    (folder / "x.png").write_bytes(make_image("PNG", seed=8))
    (folder / "labels.csv").write_text(
        "filename,sender,labels,timestamp\nx.png,Person A,meme photo,1600000000\n",
        encoding="utf-8",
    )
    assert _ingest(data, "folder", str(folder / "labels.csv")) == 0
    capsys.readouterr()
    assert main(["--data", str(data), "export", "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0])[:5] == ["filename", "sender", "timestamp", "source", "labels"]
    mine = [r for r in rows if r["sender"] == "Person A"]
    assert len(mine) == 1
    assert mine[0]["labels"] == "meme photo"
    assert mine[0]["timestamp"] == "2020-09-13T12:26:40Z"
    assert (data / mine[0]["filename"]).is_file()
    assert len(rows) == 4


def test_unknown_conversation_and_zero_concurrency(data, tmp_path, capsys):
    from tests.chatgen import hangouts_export

    export = hangouts_export(tmp_path / "Hangouts.json", [])
    assert _ingest(data, "hangouts", str(export), "--conversation", "typo") == 1
    _one_line_error(capsys, "Hangouts.json", "'typo'", "--list")
    assert _ingest(data, "hangouts", str(export), "--conversation", "Test chat") == 0
    capsys.readouterr()
    assert _ingest(data, "hangouts", str(export), "--concurrency", "0") == 1
    _one_line_error(capsys, "--concurrency must be at least 1")


def test_unwritable_image_store_is_one_line_and_loses_nothing(data, tmp_path, capsys):
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "new.png").write_bytes(make_image("PNG", seed=77))
    images = data / "images"
    moved = tmp_path / "images-moved"
    images.rename(moved)
    images.write_text("not a folder")  # every write into images/ now fails
    assert _ingest(data, "folder", str(folder)) == 1
    _one_line_error(capsys, "cannot store images")
    images.unlink()
    moved.rename(images)
    assert _counts(data) == (4, 3, 3)  # the new post is recorded, still pending
    assert _ingest(data, "folder", str(folder)) == 0  # and the re-run finishes it
    assert _counts(data) == (4, 4, 4)


def test_two_folders_with_the_same_paths_and_labels_added_later(data, tmp_path, capsys):
    for name, seed in (("A", 50), ("B", 51)):
        (tmp_path / name / "funny").mkdir(parents=True)
        (tmp_path / name / "funny" / "001.png").write_bytes(make_image("PNG", seed=seed))
    assert _ingest(data, "folder", str(tmp_path / "A")) == 0
    assert _ingest(data, "folder", str(tmp_path / "B")) == 0
    assert _counts(data) == (5, 5, 5)  # B's image is not mistaken for A's
    # A labels CSV for a folder already ingested as a tree adds its sender and labels.
    (tmp_path / "A" / "labels.csv").write_text(
        "filename,sender,labels,timestamp\nfunny/001.png,Person C,meme news,1600000000\n",
        encoding="utf-8",
    )
    assert _ingest(data, "folder", str(tmp_path / "A" / "labels.csv")) == 0
    assert _counts(data) == (5, 5, 5)
    capsys.readouterr()
    assert main(["--data", str(data), "export", "--csv", "-"]) == 0
    rows = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    mine = [r for r in rows if r["sender"] == "Person C"]
    assert len(mine) == 1 and mine[0]["labels"] == "funny meme news"
    assert mine[0]["timestamp"] == "2020-09-13T12:26:40Z"


# --- numbers, times and encodings no parser may crash on --------------------------------------

_HUGE = "9" * 5000  # over Python's 4300-digit int conversion limit


def _dce(messages: list[str], guild: str = '{"id": "1", "name": "g"}') -> str:
    return (f'{{"guild": {guild}, "channel": {{"id": "2", "name": "c"}}, "messages": '
            f"[{', '.join(messages)}], \"messageCount\": {_HUGE}}}")  # fmt: skip


def _dce_message(i: int, timestamp: str, size: str = "10") -> str:
    return (f'{{"id": "{i}", "timestamp": "{timestamp}", "author": {{"id": "7", "name": "a"}}, '
            f'"attachments": [{{"id": "{i}0", "url": "x.json_Files/{i}.png", '
            f'"fileName": "{i}.png", "fileSizeBytes": {size}}}]}}')  # fmt: skip


def _gchat(tmp_path: Path, created_dates: list[str], huge: bool) -> Path:
    group = tmp_path / "Takeout" / "Google Chat" / "Groups" / "Space AAAA"
    group.mkdir(parents=True)
    messages = []
    for i, date in enumerate(created_dates):
        (group / f"p{i}.png").write_bytes(make_image("PNG", seed=200 + i))
        messages.append(f'{{"creator": {{"name": "A", "email": "a@example.com"}}, '
                        f'"created_date": "{date}", "message_id": "m/{i}", '
                        f'"attached_files": [{{"export_name": "p{i}.png"}}]}}')  # fmt: skip
    if huge:
        messages.append(f'{{"creator": {{"name": "A"}}, "message_id": "m/x", "n": {_HUGE}}}')
    (group / "messages.json").write_text(f'{{"messages": [{", ".join(messages)}]}}')
    return tmp_path / "Takeout"


def _summary(capsys) -> dict:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return json.loads(captured.out)


def test_json_integer_too_long_for_python_is_a_bad_record(data, tmp_path, capsys):
    from tests.chatgen import hangouts_export

    # Hangouts: an event carries a 5000-digit number.
    export = hangouts_export(tmp_path / "Hangouts.json", [])
    text = export.read_text().replace('"events": []', f'"events": [{{"timestamp": {_HUGE}}}]', 1)
    export.write_text(text)
    assert _ingest(data, "hangouts", str(export), "--json") == 0
    summary = _summary(capsys)
    assert summary["bad_records"] == 1 and "5000 digits" in summary["bad_examples"][0]
    # Discord: a message whose fileSizeBytes has 5000 digits; its neighbour is stored.
    dce = tmp_path / "dce"
    (dce / "x.json_Files").mkdir(parents=True)
    (dce / "x.json_Files" / "1.png").write_bytes(make_image("PNG", seed=101))
    t = "2023-01-06T14:24:31.114+00:00"
    (dce / "x.json").write_text(_dce([_dce_message(1, t), _dce_message(2, t, _HUGE)]))
    assert _ingest(data, "discord-export", str(dce / "x.json"), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 1)
    assert "5000 digits" in summary["bad_examples"][0]
    # Google Chat: the same, in messages.json.
    takeout = _gchat(tmp_path, ["Monday, 6 January 2020 at 10:00:00 UTC"], huge=True)
    assert _ingest(data, "gchat", str(takeout), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 1)
    assert _counts(data) == (5, 5, 5)


def test_json_integer_too_long_in_a_header_is_one_line(data, tmp_path, capsys):
    (tmp_path / "x.json").write_text(_dce([], guild=f'{{"id": {_HUGE}}}'))
    assert _ingest(data, "discord-export", str(tmp_path / "x.json")) == 1
    _one_line_error(capsys, "x.json", "5000 digits")
    assert _counts(data) == (3, 3, 3)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-05:00"])
def test_times_at_the_limits_are_bad_records(data, tmp_path, capsys, when):
    # Discord
    dce = tmp_path / "dce"
    (dce / "x.json_Files").mkdir(parents=True)
    (dce / "x.json_Files" / "1.png").write_bytes(make_image("PNG", seed=111))
    (dce / "x.json").write_text(_dce([_dce_message(1, when)]))
    assert _ingest(data, "discord-export", str(dce / "x.json"), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 1)
    assert when in summary["bad_examples"][0]
    # Google Chat
    assert _ingest(data, "gchat", str(_gchat(tmp_path, [when], huge=False)), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 1)
    # CSV
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "a.png").write_bytes(make_image("PNG", seed=112))
    (folder / "labels.csv").write_text(f"filename,sender,labels,timestamp\na.png,A,meme,{when}\n")
    assert _ingest(data, "folder", str(folder / "labels.csv"), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 1)
    assert "bad timestamp" in summary["bad_examples"][0]
    assert _counts(data) == (6, 6, 6)


def test_hangouts_conversations_key_twice_reads_both(data, tmp_path, capsys):
    from tests.chatgen import hangouts_export

    one = json.loads(hangouts_export(tmp_path / "a.json", ["https://127.0.0.1/a.jpg"]).read_text())
    two = json.loads(hangouts_export(tmp_path / "b.json", ["https://127.0.0.1/b.jpg"]).read_text())
    two["conversations"][0]["events"][0]["event_id"] = "OTHER"
    export = tmp_path / "Hangouts.json"
    export.write_text('{"conversations": ' + json.dumps(one["conversations"])
                      + ', "conversations": ' + json.dumps(two["conversations"]) + "}")  # fmt: skip
    _ingest(data, "hangouts", str(export), "--json")
    summary = _summary(capsys)
    # Both copies are read (their images fail here: 127.0.0.1 is no public address).
    assert summary["image_items"] == 2
    assert summary["failures_by_reason"] == {"private_address": 2}


@pytest.mark.parametrize("encoding", ["utf-32", "utf-32-be", "utf-16", "utf-16-le"])
def test_json_in_another_unicode_encoding_is_named(data, tmp_path, capsys, encoding):
    export = tmp_path / "x.json"
    export.write_text(_dce([]), encoding=encoding)
    assert _ingest(data, "discord-export", str(export)) == 1
    line = _one_line_error(capsys, "x.json", "expected UTF-8")
    assert f"is {encoding.upper()[:6]}" in line


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_labels_csv_in_utf16_or_utf32_is_read(data, tmp_path, capsys, encoding):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "é.png").write_bytes(make_image("PNG", seed=113))
    (folder / "labels.csv").write_text(
        "filename,sender,labels,timestamp\né.png,Person É,meme,1600000000\n", encoding=encoding
    )
    assert _ingest(data, "folder", str(folder / "labels.csv"), "--json") == 0
    summary = _summary(capsys)
    assert (summary["stored"], summary["bad_records"]) == (1, 0)
    assert main(["--data", str(data), "export", "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["labels"] for r in rows if r["sender"] == "Person É"] == ["meme"]
    # Found without naming it too: a labelled folder picks the UTF-16 CSV up.
    assert folder_csv_found(folder)


def folder_csv_found(folder: Path) -> bool:
    from ingest.archive import open_export
    from ingest.parsers.folder import find_label_csv

    with open_export(folder) as source:
        return find_label_csv(source) == "labels.csv"


def test_megabyte_values_from_an_export_make_short_messages(data, tmp_path, capsys):
    long_id = "1" * 1_000_000
    url = "https://127.0.0.1/" + "a" * 1_000_000 + ".png"  # refused at once: a private address
    message = (f'{{"id": "{long_id}", "timestamp": "not a time {long_id}", "attachments": '
               f'[{{"url": "{url}", "fileName": "a.png"}}]}}')  # fmt: skip
    (tmp_path / "x.json").write_text(_dce([message]))
    assert _ingest(data, "discord-export", str(tmp_path / "x.json"), "--json") == 1
    captured = capsys.readouterr()
    assert len(captured.out) < 5000, len(captured.out)
    summary = json.loads(captured.out)
    assert summary["failures_by_reason"] == {"private_address": 1}
    assert summary["bad_records"] == 1
    assert _ingest(data, "discord-export", str(tmp_path / "x.json"), "--retry-failed") == 1
    captured = capsys.readouterr()
    assert max(len(line) for line in (captured.out + captured.err).splitlines()) < 2000
