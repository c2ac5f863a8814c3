"""`memetag failures`, the ingest summary that points to it, and truthful `ingest folder` help."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime

import pytest
from PIL import Image

from ingest.pipeline import IngestSummary
from memetag.cli import build_parser, main
from memetag.commands.ingest import _print_summary
from store.db import open_database
from store.queries.failures import count_failed_posts, list_failed_posts
from store.queries.posts import insert_posts, list_posts, record_failure
from store.rows import NewPost

LONG_URL = "https://cdn.example.com/" + "a" * 5000 + "/meme.png"
EVIL_URL = "https://example.com/\x1b[2Jclear.png"


def _post(source: str, n: int, *, url: str | None = None, local: str | None = None) -> NewPost:
    return NewPost(
        source=source,
        source_id=f"{source}-{n}",
        conversation_id="c1",
        conversation_name="Chat",
        author_source=source,
        author_ref="u1",
        author_name="Person A",
        posted_at=datetime(2024, 1, n + 1, tzinfo=UTC),
        url=url,
        local_ref=local,
    )


async def _fill(data_dir) -> None:
    """Five failed posts over three sources and four reasons, plus one pending post."""
    failures = [
        (_post("discord", 1, url="https://cdn.example.com/1.png"), "connection", "reset by peer"),
        (_post("discord", 2, url=LONG_URL), "timeout", "no complete response in 30s"),
        (_post("hangouts", 1, url=EVIL_URL), "http_404", "HTTP 404 Not Found"),
        (_post("folder", 1, local="memes/gone.png"), "missing_file", "not found in the export"),
        (_post("folder", 2, local="memes/big.png"), "too_large", "over 25 MB"),
    ]
    async with open_database(data_dir / "memetag.db") as db:
        await insert_posts(db, [p for p, *_ in failures] + [_post("gchat", 1, local="x.jpg")], {})
        ids = {p.source_id: p.id for p in await list_posts(db)}
        for post, reason, detail in failures:
            await record_failure(db, ids[post.source_id], reason, detail)


@pytest.fixture
def store(tmp_path):
    data = tmp_path / "data"
    asyncio.run(_fill(data))
    return ["--data", str(data)]


async def test_queries_filter_and_count(tmp_path):
    await _fill(tmp_path)
    async with open_database(tmp_path / "memetag.db") as db:
        assert await count_failed_posts(db) == {
            "connection": 1,
            "http_404": 1,
            "missing_file": 1,
            "timeout": 1,
            "too_large": 1,
        }
        assert await count_failed_posts(db, source="folder") == {"missing_file": 1, "too_large": 1}
        rows = await list_failed_posts(db, source="discord", reason="timeout")
        assert [(r.source, r.reason, r.url) for r in rows] == [("discord", "timeout", LONG_URL)]
        assert rows[0].sender == "Person A" and rows[0].conversation == "Chat"
        assert rows[0].failed_at is not None and rows[0].attempts == 1
        assert len(await list_failed_posts(db, limit=2)) == 2
        assert await list_failed_posts(db, source="gchat") == []  # pending is no failure


def test_lists_every_failure_escaped_and_cut(store, capsys):
    assert main([*store, "failures"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("5 failed image items (")
    for text in ("connection 1", "http_404 1", "missing_file 1", "timeout 1", "too_large 1"):
        assert text in lines[0]
    assert "memes/gone.png" in out and "not found in the export" in out
    assert "https://cdn.example.com/1.png" in out and "reset by peer" in out
    assert "\x1b" not in out and "\\x1b[2Jclear.png" in out
    assert LONG_URL not in out and "characters cut]" in out
    assert max(len(line) for line in lines) < 400
    # Two of the five are network trouble: the re-run hint names them and the right commands.
    assert lines[-1].startswith("2 of these failed for network reasons")
    assert "`memetag ingest discord-export PATH --retry-failed`" in lines[-1]


def test_filters_and_limit(store, capsys):
    assert main([*store, "failures", "--source", "folder"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 failed image items (missing_file 1, too_large 1)")
    assert "cdn.example.com" not in out
    assert "network reasons" not in out  # nothing here would succeed on a re-run

    assert main([*store, "failures", "--source", "discord-export", "--reason", "timeout"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 failed image item (timeout 1)") and "memes/" not in out

    assert main([*store, "failures", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "… and 3 more (--limit 0 shows all)" in out

    assert main([*store, "failures", "--reason", "http_418"]) == 0
    assert capsys.readouterr().out == "no failed image items match these filters\n"


def test_json_keeps_values_whole(store, capsys):
    assert main([*store, "failures", "--json", "--limit", "0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["timeout"]["url"] == LONG_URL and by_reason["timeout"]["retryable"]
    assert by_reason["http_404"]["url"] == EVIL_URL and not by_reason["http_404"]["retryable"]
    assert by_reason["missing_file"]["path"] == "memes/gone.png"
    assert by_reason["missing_file"]["url"] is None
    assert by_reason["connection"]["posted_at"] == "2024-01-02T00:00:00Z"
    assert by_reason["connection"]["failed_at"].endswith("Z")
    assert set(rows[0]) == {
        "post_id", "source", "reason", "retryable", "url", "path", "detail", "conversation",
        "sender", "posted_at", "failed_at", "attempts",
    }  # fmt: skip


def test_bad_arguments_are_one_line(store, tmp_path, capsys):
    assert main([*store, "failures", "--source", "myspace"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hangouts, gchat, discord, folder" in err
    assert main([*store, "failures", "--limit", "-1"]) == 1
    assert "--limit" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "empty"), "failures"]) == 1
    assert "no store here yet" in capsys.readouterr().err


def _summary(**failures: int) -> IngestSummary:
    summary = IngestSummary(source="discord", messages=9, image_items=9, failures=Counter(failures))
    summary.failure_examples = [f"item {i}: {r}: x" for i, r in enumerate(failures)]
    return summary


def test_summary_suggests_retry_only_for_network_failures(capsys):
    _print_summary(_summary(missing_file=3, http_404=2, not_image=1), "export.json")
    captured = capsys.readouterr()
    assert "--retry-failed" not in captured.out
    assert "list them with `memetag failures`" in captured.out
    assert "memetag: … and 3 more (see `memetag failures`)" in captured.err
    assert "memetag stats" not in captured.out + captured.err

    _print_summary(_summary(connection=4, timeout=1, missing_file=2), "export.json")
    out = capsys.readouterr().out
    assert "5 may succeed later: re-run with --retry-failed" in out

    _print_summary(_summary(), "export.json")
    out = capsys.readouterr().out
    assert "retry" not in out and "memetag failures" not in out


def _labelled_zip(tmp_path):
    folder = tmp_path / "labelled"
    for label, colour in (("memes", "red"), ("photos", "blue")):
        (folder / label).mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(folder / label / "a.png")
    archive = tmp_path / "labelled.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, path.relative_to(tmp_path).as_posix())
    return archive


def test_folder_ingest_reads_a_zip(tmp_path, capsys):
    data = ["--data", str(tmp_path / "data")]
    archive = _labelled_zip(tmp_path)
    assert main([*data, "ingest", "folder", str(archive), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "images stored        2 (2 new" in out
    assert main([*data, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label_votes"] == {"memes": 1, "photos": 1}

    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    assert main([*data, "ingest", "folder", str(notes)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a .zip/.tar/.tgz of one, or a .csv file" in err


def test_folder_missing_file_is_not_offered_a_retry(tmp_path, capsys):
    root = tmp_path / "set"
    root.mkdir()
    Image.new("RGB", (40, 30), "red").save(root / "here.png")
    (root / "labels.csv").write_text(
        "filename,sender,labels,timestamp\nhere.png,A,meme,\ngone.png,A,meme,\n"
    )
    data = ["--data", str(tmp_path / "data")]
    assert main([*data, "ingest", "folder", str(root / "labels.csv"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "failures             1 (missing_file 1)" in captured.out
    assert "--retry-failed" not in captured.out
    assert "list them with `memetag failures`" in captured.out
    assert main([*data, "failures"]) == 0
    out = capsys.readouterr().out
    assert "gone.png" in out and "missing_file" in out and "network" not in out


def _options(*path: str) -> dict[str, str]:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return {a.option_strings[0]: a.help for a in parser._actions if a.option_strings} | {
        a.dest: a.help for a in parser._actions if not a.option_strings
    }


def test_ingest_help_offers_only_what_works_for_each_source():
    folder = _options("ingest", "folder")
    assert "--allow-private" not in folder  # a folder has no URLs
    assert ".zip" in folder["path"] and ".csv" in folder["path"]
    assert "download" not in folder["--concurrency"] + folder["--retry-failed"]
    gchat = _options("ingest", "gchat")
    assert "--allow-private" not in gchat and "download" not in gchat["--concurrency"]
    for source in ("hangouts", "discord-export"):
        options = _options("ingest", source)
        assert "--allow-private" in options and "download" in options["--concurrency"]


def test_failures_command_is_registered_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "failures" in sub.choices
    options = _options("failures")
    assert {"--reason", "--source", "--limit", "--json"} <= set(options)
