"""The store through the CLI when something is wrong with it: a lost database, a read-only data
dir, damaged pages. One line saying what is wrong, a non-zero exit, and no image file lost."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from memetag.cli import main
from tests.helpers.imagegen import make_image


def _folder(root: Path, seeds: range) -> Path:
    for i, seed in enumerate(seeds):
        label = root / ("meme" if i % 2 else "news")
        label.mkdir(parents=True, exist_ok=True)
        (label / f"{seed}.png").write_bytes(make_image("PNG", seed=seed))
    return root


def _image_files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (data / "images").rglob("*") if p.is_file()}


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("loss", ["emptied", "deleted"])
def test_a_lost_database_never_costs_an_image_file(tmp_path, capsys, loss):
    data = tmp_path / "data"
    first = _folder(tmp_path / "A", range(6))
    second = _folder(tmp_path / "B", range(100, 101))
    assert main(["--data", str(data), "ingest", "folder", str(first), "--no-progress"]) == 0
    before = _image_files(data)
    assert len(before) == 6
    capsys.readouterr()
    db = data / "memetag.db"
    if loss == "emptied":
        db.write_bytes(b"")
    else:
        db.unlink()
    assert main(["--data", str(data), "ingest", "folder", str(second), "--no-progress"]) == 1
    line = _one_line(capsys, "memetag.db", "holds 6 image files", "backup")
    assert "move" in line and "images" in line
    assert _image_files(data) == before  # nothing swept
    for name, blob in before.items():
        assert hashlib.sha256(blob).hexdigest() == name.split(".")[0]
    # Asking again changes nothing; moving images/ aside (as the message says) starts afresh.
    assert main(["--data", str(data), "ingest", "folder", str(second), "--no-progress"]) == 1
    capsys.readouterr()
    (data / "images").rename(tmp_path / "images.old")
    assert main(["--data", str(data), "ingest", "folder", str(second), "--no-progress"]) == 0
    assert len(_image_files(data)) == 1
    assert len({p.name for p in (tmp_path / "images.old").rglob("*") if p.is_file()}) == 6


def _damage_pages(db: Path) -> None:
    """Overwrite every table's root page but the first: the header and schema stay intact."""
    con = sqlite3.connect(db)
    try:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        roots = [r for (r,) in con.execute("SELECT rootpage FROM sqlite_master") if r and r > 1]
    finally:
        con.close()
    with open(db, "r+b") as fh:
        for page in roots:
            fh.seek((page - 1) * page_size)
            fh.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def test_damaged_pages_are_one_line_from_every_command(tmp_path, capsys):
    data = tmp_path / "data"
    first = _folder(tmp_path / "A", range(6))
    assert main(["--data", str(data), "ingest", "folder", str(first), "--no-progress"]) == 0
    before = _image_files(data)
    _damage_pages(data / "memetag.db")
    header = (data / "memetag.db").read_bytes()[:16]
    assert header == b"SQLite format 3\x00"
    capsys.readouterr()
    second = _folder(tmp_path / "B", range(100, 102))
    for command in (
        ["stats"],
        ["export", "--csv", str(tmp_path / "out.csv")],
        ["ingest", "folder", str(second), "--no-progress"],
        ["train", "--no-progress"],
        ["models"],
    ):
        assert main(["--data", str(data), *command]) == 1, command
        line = _one_line(capsys, "memetag.db", "database disk image is malformed")
        assert "PRAGMA integrity_check" in line and "backup" in line
    assert _image_files(data) == before
    assert not (tmp_path / "out.csv").exists()  # no half export either


def _without_root_powers() -> list[str]:
    """A command prefix under which the permission bits bind, as they do for any user.

    Root writes through any permission bits (CAP_DAC_OVERRIDE), so a chmod'ed folder is only
    read-only for root without that capability; util-linux's setpriv takes it away.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a chmod cannot make a folder read-only")
    return [setpriv, "--bounding-set=-dac_override", "--inh-caps=-dac_override"]


def test_read_only_data_dir_is_one_line_and_loses_nothing(tmp_path):
    data = tmp_path / "data"
    first = _folder(tmp_path / "A", range(3))
    assert main(["--data", str(data), "ingest", "folder", str(first), "--no-progress"]) == 0
    before = _image_files(data)
    db_bytes = (data / "memetag.db").read_bytes()
    prefix = _without_root_powers()

    def memetag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "memetag.cli", "--data", str(data), *args],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip

    data.chmod(0o555)
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(data / 'x')!r}, 'w')"])
        if probe.returncode == 0:
            pytest.skip("this user can write into a read-only folder here")
        for args in (
            ["ingest", "folder", str(first), "--no-progress"],
            ["export", "--csv", "-"],
            ["models"],
        ):
            out = memetag(*args)
            assert out.returncode == 1, (args, out.stderr)
            lines = [line for line in out.stderr.splitlines() if line]
            assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
            assert "read-only" in lines[0] and str(data) in lines[0], lines[0]
            assert "not a memetag database" not in lines[0]
    finally:
        data.chmod(0o755)
    assert _image_files(data) == before
    assert (data / "memetag.db").read_bytes() == db_bytes
