"""`memetag export --csv`: cells a spreadsheet would run as formulas are neutralised unless --raw."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from memetag.cli import build_parser, main
from tests.helpers.imagegen import make_image

# Display names members can choose; the first four start with a character a spreadsheet treats
# as the start of a formula (OWASP's CSV injection list; tab and carriage return, which folder
# ingest strips from names, are covered by test_neutralise_cell).
HOSTILE_SENDERS = [
    '=HYPERLINK("http://x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "Person A",
    "Person B=Person C",
    "Line\rbreak",
]


@pytest.fixture
def data(tmp_path: Path, capsys) -> Path:
    folder = tmp_path / "chat"
    folder.mkdir()
    out = io.StringIO()
    writer = csv.writer(out)  # "\r\n" rows: a "\r" inside a cell is then quoted
    writer.writerow(["filename", "sender", "labels", "timestamp"])
    for i, sender in enumerate(HOSTILE_SENDERS):
        (folder / f"{i}.png").write_bytes(make_image("PNG", seed=i))
        writer.writerow([f"{i}.png", sender, "", 1_600_000_000 + i])
    (folder / "labels.csv").write_text(out.getvalue(), encoding="utf-8")
    data = tmp_path / "data"
    code = main(
        ["--data", str(data), "ingest", "folder", str(folder / "labels.csv"), "--no-progress"]
    )
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    return data


def _senders(text: str) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [r["sender"] for r in sorted(rows, key=lambda r: r["timestamp"])]


def test_formula_cells_get_an_apostrophe(data: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out.csv"
    assert main(["--data", str(data), "export", "--csv", str(target)]) == 0
    senders = _senders(target.read_bytes().decode("utf-8"))
    assert senders == ["'" + s for s in HOSTILE_SENDERS[:4]] + [
        "Person A",
        "Person B=Person C",
        "Line\rbreak",
    ]


def test_raw_keeps_cells_as_stored(data: Path, capsys) -> None:
    assert main(["--data", str(data), "export", "--csv", "-", "--raw"]) == 0
    assert _senders(capsys.readouterr().out) == HOSTILE_SENDERS


def test_stdout_export_is_neutralised_too(data: Path, capsys) -> None:
    assert main(["--data", str(data), "export", "--csv", "-"]) == 0
    senders = _senders(capsys.readouterr().out)
    assert all(not s.startswith(("=", "+", "-", "@", "\t", "\r")) for s in senders)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("", ""),
        ("x=1", "x=1"),
        ("'=1", "'=1"),
        ("2021-07-14T21:00:00Z", "2021-07-14T21:00:00Z"),
        ("images/ab/ab.png", "images/ab/ab.png"),
    ],
)
def test_neutralise_cell(cell: str, expected: str) -> None:
    from memetag.commands.export import neutralise_cell

    assert neutralise_cell(cell) == expected


def test_help_documents_the_rule() -> None:
    export = build_parser()._subparsers._group_actions[0].choices["export"]  # type: ignore[union-attr]
    text = " ".join(export.format_help().split())
    assert "--raw" in text and "apostrophe" in text and "formula" in text
