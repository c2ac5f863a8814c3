"""Hostile input through `memetag ingest`: one clear line, non-zero exit, nothing lost or doubled."""

from __future__ import annotations

import csv
import io
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
