"""`memetag audit`: the admin actions taken from Discord, oldest first, filtered and limited."""

from __future__ import annotations

import asyncio
import json

from memetag.cli import main
from store.db import open_database
from store.queries.audit import add_audit

GUILD_A, GUILD_B = "100000000000000001", "100000000000000002"


def _store(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    asyncio.run(_fill(data))
    return ["--data", str(data)]


async def _fill(data):
    async with open_database(data / "memetag.db") as db:
        await add_audit(db, guild_id=GUILD_A, actor="discord:11", action="status")
        await add_audit(
            db,
            guild_id=GUILD_A,
            actor="discord:11",
            action="threshold",
            arguments=json.dumps({"label": "meme", "value": "0.3"}),
        )
        await add_audit(
            db,
            guild_id=GUILD_B,
            actor="discord:22",
            action="tagger rollback",
            outcome="refused: not an admin",
        )


def test_audit_prints_entries_oldest_first_with_arguments_and_outcomes(tmp_path, capsys):
    store = _store(tmp_path)
    assert main([*store, "audit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("when (UTC)")
    assert len(lines) == 4
    assert GUILD_A in lines[1] and "discord:11" in lines[1] and lines[1].endswith("status -> ok")
    assert lines[2].endswith('threshold {"label": "meme", "value": "0.3"} -> ok')
    assert lines[3].endswith("tagger rollback -> refused: not an admin")


def test_audit_filters_by_guild_limits_and_prints_json(tmp_path, capsys):
    store = _store(tmp_path)
    assert main([*store, "audit", "--guild", GUILD_A, "--limit", "1", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["action"] == "threshold" and entry["guild_id"] == GUILD_A
    assert entry["arguments"] == {"label": "meme", "value": "0.3"}
    assert entry["actor"] == "discord:11" and entry["outcome"] == "ok"
    assert entry["time"].endswith("Z")

    assert main([*store, "audit", "--json", "--limit", "0"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)] == [
        "status",
        "threshold",
        "tagger rollback",
    ]
    assert main([*store, "audit", "--guild", "999"]) == 0
    assert capsys.readouterr().out == "no audit entries for server 999\n"


def test_audit_refuses_bad_arguments_and_a_missing_store(tmp_path, capsys):
    store = _store(tmp_path)
    assert main([*store, "audit", "--limit", "-1"]) == 1
    assert main([*store, "audit", "--guild", "abc"]) == 1
    assert main(["--data", str(tmp_path / "none"), "audit"]) == 1
    err = capsys.readouterr().err
    assert err.count("memetag: error:") == 3 and "Traceback" not in err
