"""Reading exports in place: folders, zips, tarballs, bare files; unsafe names and broken archives."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from ingest.archive import match_member, normalize_member, open_export
from ingest.errors import ParseError
from ingest.parsers.detect import detect_format, list_export_files

FIXTURES = Path(__file__).parent / "fixtures"
HANGOUTS = (FIXTURES / "hangouts" / "Hangouts.json").read_bytes()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


TAKEOUT = {
    "Takeout/Hangouts/Hangouts.json": HANGOUTS,
    "Takeout/archive_browser.html": b"<html></html>",
}


@pytest.fixture(params=["dir", "zip", "tgz"])
def takeout(request, tmp_path) -> Path:
    if request.param == "zip":
        return make_zip(tmp_path / "takeout.zip", TAKEOUT)
    if request.param == "tgz":
        return make_tgz(tmp_path / "takeout.tgz", TAKEOUT)
    for name, data in TAKEOUT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_same_api_for_every_kind(takeout):
    with open_export(takeout) as source:
        assert sorted(source.iter_members()) == sorted(TAKEOUT)
        assert source.find("**/Hangouts*.json") == ["Takeout/Hangouts/Hangouts.json"]
        member = "Takeout/Hangouts/Hangouts.json"
        assert source.exists(member) and not source.exists("Takeout/Hangouts")
        assert source.size(member) == len(HANGOUTS)
        with source.open(member) as f:
            assert f.read() == HANGOUTS
        assert source.read_bytes(member, len(HANGOUTS)) == HANGOUTS
        with pytest.raises(ParseError, match="larger than"):
            source.read_bytes(member, 100)
        with pytest.raises(ParseError, match="no member"):
            source.open("Takeout/nope.json")
        assert detect_format(source) == "hangouts"
        assert list_export_files(source, "hangouts") == [member]


def test_glob():
    assert match_member("Hangouts.json", "**/Hangouts*.json")
    assert match_member("Takeout/Hangouts/Hangouts2.json", "**/Hangouts*.json")
    assert not match_member("Takeout/Hangouts/Hangouts.json.bak", "**/Hangouts*.json")
    assert match_member("Google Chat/Groups/DM x/messages.json", "**/Groups/*/messages.json")
    assert not match_member("Groups/a/b/messages.json", "**/Groups/*/messages.json")
    assert match_member("a.csv", "*.csv") and not match_member("x/a.csv", "*.csv")


def test_bare_json_file(tmp_path):
    path = tmp_path / "Hangouts.json"
    path.write_bytes(HANGOUTS)
    with open_export(path) as source:
        assert list(source.iter_members()) == ["Hangouts.json"]
        assert source.find("**/Hangouts*.json") == ["Hangouts.json"]
        assert detect_format(source) == "hangouts"


@pytest.mark.parametrize(
    "name",
    ["../../evil.json", "/etc/passwd", "a/../../b.json", "C:/Windows/x.json", "..\\..\\y.json"],
)
def test_unsafe_zip_names_are_not_members(tmp_path, name):
    path = make_zip(tmp_path / "slip.zip", {name: b"{}", "ok/x.json": b"{}"})
    with open_export(path) as source:
        assert list(source.iter_members()) == ["ok/x.json"]
        with pytest.raises(ParseError):
            source.open(name)
    assert not (tmp_path.parent / "evil.json").exists()


def test_unsafe_tar_members(tmp_path):
    path = tmp_path / "slip.tgz"
    with tarfile.open(path, "w:gz") as tf:
        for name in ("../evil.json", "ok.json"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
        link = tarfile.TarInfo("link.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with open_export(path) as source:
        assert list(source.iter_members()) == ["ok.json"]


def test_normalize_member():
    assert normalize_member("./a//b/./c.png") == "a/b/c.png"
    assert normalize_member("a\\b.png") == "a/b.png"
    for bad in ("", "/abs", "../x", "a/../../x", "C:\\x", "a\x00b", "."):
        assert normalize_member(bad) is None


def test_symlink_outside_folder_is_skipped(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    (root / "in.png").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, root / "leak.png")
    os.symlink(root / "in.png", root / "alias.png")
    with open_export(root) as source:
        assert sorted(source.iter_members()) == ["alias.png", "in.png"]


def test_non_utf8_member_names(tmp_path):
    raw = b"caf\xe9.png"  # Latin-1 bytes, not UTF-8
    root = tmp_path / "export"
    root.mkdir()
    os.mkdir(os.path.join(os.fsencode(root), b"x"))
    with open(os.path.join(os.fsencode(root), b"x", raw), "wb") as f:
        f.write(b"img")
    with open_export(root) as source:
        [member] = list(source.iter_members())
        assert member == "x/caf\ufffd.png"
        member.encode("utf-8")  # storable
        assert source.read_bytes(member, 10) == b"img"
    tgz = tmp_path / "names.tgz"
    with tarfile.open(tgz, "w:gz", encoding="latin-1") as tf:
        info = tarfile.TarInfo(raw.decode("latin-1"))
        info.size = 3
        tf.addfile(info, io.BytesIO(b"img"))
    with open_export(tgz) as source:
        [member] = list(source.iter_members())
        member.encode("utf-8")
        assert source.read_bytes(member, 10) == b"img"


def test_missing_path(tmp_path):
    with pytest.raises(ParseError, match="no such file") as err:
        with open_export(tmp_path / "nope.zip"):
            pass
    assert "nope.zip" in str(err.value)


@pytest.mark.parametrize("name", ["bad.zip", "bad.tgz"])
def test_corrupt_archive(tmp_path, name):
    good = (
        make_zip(tmp_path / "g.zip", TAKEOUT)
        if name.endswith("zip")
        else make_tgz(tmp_path / "g.tgz", TAKEOUT)
    )
    path = tmp_path / name
    path.write_bytes(good.read_bytes()[:200])  # truncated
    with pytest.raises(ParseError) as err:
        with open_export(path) as source:
            with source.open("Takeout/Hangouts/Hangouts.json") as f:
                f.read()
    assert name in str(err.value)


def test_corrupt_member_data(tmp_path):
    path = tmp_path / "t.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Hangouts.json", HANGOUTS)
    data = bytearray(path.read_bytes())
    data[100:140] = b"\x00" * 40  # damage the deflate stream
    path.write_bytes(bytes(data))
    with open_export(path) as source, pytest.raises(ParseError, match="Hangouts.json"):
        with source.open("Hangouts.json") as f:
            f.read()


def test_unknown_file_type(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(ParseError, match="unknown file type"):
        with open_export(path):
            pass


def test_zip_without_hangouts_json(tmp_path):
    path = make_zip(tmp_path / "takeout.zip", {"Takeout/Mail/All mail.mbox": b"From x"})
    with open_export(path) as source:
        assert source.find("**/Hangouts*.json") == []
        with pytest.raises(ParseError, match="takeout.zip.*Hangouts") as err:
            list_export_files(source, "hangouts")
        assert "expected" in str(err.value)
        with pytest.raises(ParseError, match="no file matching"):
            source.find_required("**/Hangouts*.json", "a Takeout Hangouts export")


def test_detect_each_fixture():
    for sub, expected in [
        ("hangouts", "hangouts"),
        ("gchat", "gchat"),
        ("discord", "discord-export"),
        ("folder", "folder"),
    ]:
        with open_export(FIXTURES / sub) as source:
            assert detect_format(source) == expected, sub
    with open_export(FIXTURES / "discord") as source:
        assert len(list_export_files(source, "discord-export")) == 3


def test_a_bare_file_opens_the_files_beside_it_only_inside_its_folder(tmp_path):
    """A labels CSV given as a file reads the images it names by path: regular files inside
    its folder only; anything else is no member, and a FIFO never hangs the reader."""
    from ingest.errors import MemberMissing

    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    (root / "labels.csv").write_text("filename,labels\n")
    (root / "img" / "a.png").write_bytes(b"inside")
    (tmp_path / "secret.png").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.png", root / "img" / "out.png")
    os.symlink(root / "img" / "a.png", root / "img" / "alias.png")
    os.symlink(root / "img", root / "dir-alias")
    os.mkfifo(root / "img" / "pipe.png")
    with open_export(root / "labels.csv") as source:
        assert source.read_bytes("img/a.png", 100) == b"inside"
        assert source.read_bytes("img/alias.png", 100) == b"inside"  # a link kept inside
        assert source.read_bytes("dir-alias/a.png", 100) == b"inside"
        with source.open("img/a.png") as fh:
            assert fh.read() == b"inside"
        for member in ("img/out.png", "img/pipe.png", "img", "img/none.png", "../secret.png",
                       "/etc/passwd", "img/a.png/x"):  # fmt: skip
            with pytest.raises(MemberMissing, match="no member"):
                source.read_bytes(member, 100)
            assert not source.exists(member)
        assert source.exists("img/a.png")
