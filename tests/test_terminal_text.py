"""Names, URLs and file names from exports reach the terminal escaped and cut to a sane length."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from ml_helpers import make_checkpoint, tiny_model_config, write_images

from classifier.checkpoint import save_checkpoint
from memetag.cli import main
from memetag.commands._text import LINE_LIMIT, VALUE_LIMIT, shown
from tests.chatgen import hangouts_export

ANSI = "\x1b[2J\x1b[31mRED\x1b[0m"
BIDI = "evil\u202egnp.exe"
HUGE_URL = "http://127.0.0.1/" + "a" * 1_000_000 + "/meme.png"
# What must never reach a terminal raw from untrusted text.
RAW_CONTROLS = ("\x1b", "\u202e", "\r", "\x07", "\x08")


def _clean(text: str) -> None:
    for c in RAW_CONTROLS:
        assert c not in text, (c, text[:300])


# -- the helper ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Person A", "Person A"),
        ("Zoë 🐱 東京", "Zoë 🐱 東京"),
        ("👨\u200d👩\u200d👧 family", "👨\u200d👩\u200d👧 family"),  # ZWJ emoji sequence kept
        (ANSI, "\\x1b[2J\\x1b[31mRED\\x1b[0m"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        (BIDI, "evil\\u202egnp.exe"),
        ("zero\u200bwidth\u2066iso\u2069", "zero\\u200bwidth\\u2066iso\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # a surrogate-escaped file name byte
        ("bell\x07del\x7f", "bell\\x07del\\x7f"),
        ("C:\\Users\\x", "C:\\Users\\x"),
    ],
)
def test_shown_escapes(raw: str, expected: str) -> None:
    assert shown(raw) == expected
    shown(raw).encode("utf-8")  # always encodable, even from a surrogate


def test_shown_cuts_the_middle_of_long_values() -> None:
    line = shown(HUGE_URL)
    assert len(line) < VALUE_LIMIT + 40
    assert line.startswith("http://127.0.0.1/aaa") and line.endswith("/meme.png")
    assert f"…[{len(HUGE_URL) - VALUE_LIMIT:,} characters cut]…" in line
    long_escapes = shown("\x1b" * 10_000)
    assert len(long_escapes) < VALUE_LIMIT * 4 + 40 and "\x1b" not in long_escapes


# -- through the commands --------------------------------------------------------------------


def _hostile_hangouts(tmp_path: Path) -> Path:
    export = hangouts_export(
        tmp_path / "Hangouts.json",
        [HUGE_URL, f"http://127.0.0.1/{ANSI}{BIDI}.png"],
    )
    doc = json.loads(export.read_text(encoding="utf-8"))
    conv = doc["conversations"][0]["conversation"]["conversation"]
    conv["name"] = f"Chat {ANSI} {BIDI}"
    conv["participant_data"][0]["fallback_name"] = f"Person {ANSI}"
    conv["participant_data"][1]["fallback_name"] = "B" * 50_000
    export.write_text(json.dumps(doc), encoding="utf-8")
    return export


def test_hangouts_list_is_escaped(tmp_path: Path, capsys) -> None:
    export = _hostile_hangouts(tmp_path)
    assert main(["--data", str(tmp_path / "d"), "ingest", "hangouts", str(export), "--list"]) == 0
    out = capsys.readouterr().out
    _clean(out)
    row = out.splitlines()[1]
    assert "Chat \\x1b[2J\\x1b[31mRED" in row and "evil\\u202egnp.exe" in row
    assert "Person \\x1b[2J" in row and len(row) < 3 * VALUE_LIMIT


def test_failure_lines_are_escaped_and_short(tmp_path: Path, capsys) -> None:
    export = _hostile_hangouts(tmp_path)
    data = tmp_path / "data"
    code = main(["--data", str(data), "ingest", "hangouts", str(export), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    _clean(captured.out)
    _clean(captured.err)
    failed = [line for line in captured.err.splitlines() if line.startswith("memetag: failed: ")]
    assert len(failed) == 2, captured.err
    for line in failed:
        assert len(line) <= LINE_LIMIT + 60, len(line)
    # Cut in the middle (by the pipeline's clip or by the terminal helper): both ends remain.
    assert any("cut]" in line and "/aaaa" in line and "/meme.png:" in line for line in failed)
    assert max(len(line) for line in captured.err.splitlines()) <= LINE_LIMIT + 60

    # stats and the error line of a command that refuses a hostile path
    assert main(["--data", str(data), "stats"]) == 0
    _clean(capsys.readouterr().out)
    missing = tmp_path / f"gone{ANSI}.json"
    assert main(["--data", str(data), "ingest", "hangouts", str(missing)]) == 1
    err = capsys.readouterr().err
    _clean(err)
    assert "gone\\x1b[2J" in err and err.count("\n") == 1


@pytest.fixture
def cli_env(tmp_path: Path) -> list[str]:
    from store.db import open_database
    from store.queries.models import insert_model

    cfg = tiny_model_config()
    senders = (f"Sender {ANSI}", BIDI, "S" * 5000)
    ckpt = make_checkpoint(cfg, senders=senders, finetuned=True, sender_min_confidence=0.0)
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    save_checkpoint(ckpt, data / "models" / f"{ckpt.version}.pt")

    async def record() -> None:
        async with open_database(data / "memetag.db") as db:
            await insert_model(db, ckpt.version, f"models/{ckpt.version}.pt", {}, make_current=True)

    asyncio.run(record())
    labels = "".join(
        f'[labels.{n}]\nemoji = "{chr(0x1F600 + i)}"\ndescription = "{n}"\n'
        for i, n in enumerate(ckpt.labels)
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\nbackbone = "{cfg.backbone}"\npretrained = "none"\n'
        f'image_size = {cfg.image_size}\ndevice = "cpu"\n\n{labels}'
    )
    return ["--config", str(config), "--data", str(data)]


def test_predict_table_and_explain_are_escaped(cli_env, tmp_path: Path, capsys) -> None:
    (good,) = write_images(tmp_path / "imgs", 1)
    hostile = good.with_name(f"img{ANSI}{BIDI}.jpg")
    good.rename(hostile)
    broken = tmp_path / f"broken\r\n{ANSI}.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert main([*cli_env, "predict", str(hostile), str(broken)]) == 0
    out = capsys.readouterr().out
    _clean(out)
    lines = out.splitlines()
    assert len(lines) == 4, out  # model line, header, one row per file
    assert all(len(line) < 3 * VALUE_LIMIT for line in lines)
    assert "error: " in lines[3] and "\\x1b[2J" in lines[3]

    # The JSON is data, not terminal text: it keeps the names exactly (JSON escapes controls).
    assert main([*cli_env, "predict", "--json", str(hostile)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["file"] == str(hostile)

    out_png = tmp_path / f"o{ANSI}.png"
    assert main([*cli_env, "explain", str(hostile), "--sender", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    _clean(out)
    assert out_png.exists() and "o\\x1b[2J" in out.splitlines()[0]
    assert out.splitlines()[1].startswith("sender ") and len(out.splitlines()[1]) < 2 * VALUE_LIMIT
