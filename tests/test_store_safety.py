"""The store through the CLI when something is wrong with it: a lost database, a read-only data
dir, damaged pages. One line saying what is wrong, a non-zero exit, and no image file lost."""

from __future__ import annotations

import hashlib
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
