"""`memetag bot` as a process: --check, the token, intents, cogs, signals and a bounded drain.

The bot runs through ``bot.app.run_bot`` (what ``memetag bot`` runs) against the stand-in
Discord; SIGTERM is sent to this very process, whose event loop the bot installs handlers on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from bot.app import COGS, BotError, MemetagBot, bot_intents, run_bot
from bot.deps import open_deps
from memetag.cli import main
from memetag.commands.bot import _Redact
from memetag.standin import StandinDiscord, running_bot
from store.db import open_database
from tests.helpers.bot_fixtures import bot_world, make_config, record_model
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]

# The first part of a bot token is its application id in base64 ("123456789012345678").
SECRET = "MTIzNDU2Nzg5MDEyMzQ1Njc4.secret-token-never-shown"
CONFIG = textwrap.dedent(
    """
    [model]
    backbone = "test_efficientnet"
    pretrained = "none"
    image_size = 64
    resize = "crop"
    device = "cpu"

    [bot]
    channels = { "123456789012345678" = "reply" }

    [labels.meme]
    emoji = "😂"
    description = "meme"
    [labels.social_media]
    emoji = "🐦"
    description = "social media"
    [labels.photo]
    emoji = "📷"
    description = "photo"
    """
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A config file for the tiny model, run from an empty folder without a token."""
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("MEMETAG_DATA", raising=False)
    monkeypatch.delenv("MEMETAG_CONFIG", raising=False)
    return tmp_path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", "config.toml", "--data", "data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def _record(project, *, broken: bool = False) -> None:
    from memetag.config import load_config

    cfg = load_config(project / "config.toml", data_dir=str(project / "data"), environ={})
    (project / "data").mkdir(exist_ok=True)
    async with open_database(cfg.db_path) as db:
        path = await record_model(cfg, db)
    if broken:
        path.write_bytes(b"garbage")


# -- --check --------------------------------------------------------------------------------------


def test_check_without_token_or_store(project, capsys):
    code, out, _ = run_cli(capsys, "bot", "--check")
    assert code == 1
    assert "token: DISCORD_TOKEN is not set" in out
    assert "no store yet" in out and "model: none yet" in out
    assert "channels: 123456789012345678 reply; other channels: off" in out
    assert not (project / "data").exists()  # a check writes nothing


def test_check_with_token_and_model_never_shows_the_token(project, capsys, monkeypatch):
    asyncio.run(_record(project))
    (project / ".env").write_text(f"DISCORD_TOKEN={SECRET}\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "bot", "--check")
    assert code == 0, out
    assert "token: DISCORD_TOKEN is set" in out
    assert "model: v-test: loads (3 labels, 3 senders)" in out
    assert (
        "invite: https://discord.com/oauth2/authorize?client_id=123456789012345678"
        "&scope=bot+applications.commands&permissions=309237746752" in out
    )
    assert out.rstrip().endswith("ok: ready to run `memetag bot`")
    assert SECRET not in out + err


def test_check_reports_a_model_that_does_not_load(project, capsys, monkeypatch):
    asyncio.run(_record(project, broken=True))
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    code, out, err = run_cli(capsys, "bot", "--check")
    assert code == 1 and "model: v-test does not load" in out
    assert SECRET not in out + err


def test_invite_permissions_are_what_tagging_needs():
    from bot.app import invite_permissions

    perms = invite_permissions()
    # 1024 view + 65536 read history + 64 add reactions + 2048 send + 2**38 send in threads
    assert perms.value == 1024 + 65536 + 64 + 2048 + 2**38 + 32768 + 2**35 == 309237746752
    assert not perms.administrator and not perms.manage_messages and not perms.mention_everyone


def test_bot_without_token_is_one_line(project, capsys):
    code, out, err = run_cli(capsys, "bot")
    assert code == 1
    assert err.startswith("memetag: error: DISCORD_TOKEN is not set") and err.count("\n") == 1


def test_bot_help_explains_modes_and_the_intent(capsys):
    with pytest.raises(SystemExit):
        main(["bot", "--help"])
    out = capsys.readouterr().out
    for word in ("DISCORD_TOKEN", "react", "reply", "silent", "Message Content", "--check"):
        assert word in out


def test_token_is_redacted_from_any_log_line(caplog):
    logger = logging.getLogger("test.redact")
    handler = logging.StreamHandler()
    handler.addFilter(_Redact(SECRET))
    record = logger.makeRecord("x", logging.ERROR, "f", 1, "login with %s failed", (SECRET,), None)
    handler.filter(record)
    assert record.getMessage() == "login with [token] failed"


# -- the running bot -------------------------------------------------------------------------------


async def test_intents_cogs_and_shared_deps(standin, tmp_path):
    assert "bot.cogs.corrections" in COGS
    async with bot_world(standin, tmp_path / "data") as world:
        bot = world.bot
        assert bot.intents == bot_intents()
        assert standin.gateway.intents == bot_intents().value
        assert not bot.intents.members and not bot.intents.presences
        assert "bot.cogs.tagging" in bot.loaded_cogs
        # One session for every download, owned by the deps, never one per message.
        assert world.deps.downloader._session is world.deps.session
        await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.png", make_image("PNG"))]
        )
        await world.settle()
        assert not world.deps.session.closed
        assert world.deps.models.predictor is not None


async def test_a_cog_module_that_is_not_there_is_skipped(standin, tmp_path):
    cfg = make_config(tmp_path / "data")
    async with open_deps(cfg, allow_private=True) as deps:
        bot = MemetagBot(
            deps=deps,
            cogs=("bot.cogs.tagging", "bot.cogs.not_written_yet"),
            guild_ready_timeout=0.05,
        )
        async with running_bot(standin, bot):
            assert bot.loaded_cogs == ["bot.cogs.tagging"]


def _cfg(tmp_path, standin: StandinDiscord, **bot):
    channels = {str(standin.channel.id): "react"}
    return make_config(tmp_path / "data", channels=channels, **bot)


async def _prepare(cfg) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_database(cfg.db_path) as db:
        await record_model(cfg, db)


async def test_sigterm_drains_the_queue_then_closes_the_store(standin, tmp_path):
    cfg = _cfg(tmp_path, standin, drain_timeout_s=10.0)
    await _prepare(cfg)
    author = await standin.add_member("Person A")
    options = {"guild_ready_timeout": 0.05}
    runner = asyncio.create_task(
        run_bot(cfg, token=standin.token, bot_options=options, allow_private=True)
    )
    await standin.wait_for(lambda: standin.gateway.connected or runner.done(), 30)
    async with standin.hold_downloads():
        messages = [
            await standin.post_message(
                standin.channel, author, attachments=[(f"{i}.jpg", make_image("JPEG", seed=i))]
            )
            for i in range(3)
        ]
        await standin.wait_for(lambda: standin.downloads_waiting >= 1)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)  # the bot is draining: no new work, the queued still runs
        late = await standin.post_message(
            standin.channel, author, attachments=[("late.jpg", make_image("JPEG", seed=9))]
        )
    await asyncio.wait_for(runner, 30)
    assert all(standin.reactions_on(m) for m in messages)
    assert standin.reactions_on(late) == {}
    assert not standin.gateway.connected
    # The store was closed cleanly (WAL checkpointed) and holds the three posts.
    assert not (cfg.data_dir / "memetag.db-wal").exists()
    async with open_database(cfg.db_path) as db:
        found = await db.fetchall("SELECT COUNT(*) AS n FROM posts WHERE status = 'stored'")
        assert found[0]["n"] == 3


async def test_the_drain_is_bounded(standin, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    cfg = _cfg(tmp_path, standin, drain_timeout_s=0.3)
    await _prepare(cfg)
    author = await standin.add_member("Person A")
    stop = asyncio.Event()
    runner = asyncio.create_task(
        run_bot(
            cfg,
            token=standin.token,
            stop=stop,
            bot_options={"guild_ready_timeout": 0.05},
            allow_private=True,
        )
    )
    await standin.wait_for(lambda: standin.gateway.connected or runner.done(), 30)
    async with standin.hold_downloads():
        await standin.post_message(
            standin.channel, author, attachments=[("a.jpg", make_image("JPEG", seed=1))]
        )
        await standin.wait_for(lambda: standin.downloads_waiting >= 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop.set()
        await asyncio.wait_for(runner, 10)
        assert loop.time() - started < 3
    assert any("stopped work still running" in r.getMessage() for r in caplog.records)


async def test_a_refused_token_is_one_line_without_the_token(standin, tmp_path, caplog):
    cfg = _cfg(tmp_path, standin)
    with pytest.raises(BotError) as info:
        await asyncio.wait_for(run_bot(cfg, token=SECRET, allow_private=True), 30)
    assert "Discord refused the token" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


async def test_message_content_intent_not_enabled_says_where_to_enable_it(tmp_path):
    async with StandinDiscord.start(privileged_intents=()) as standin:
        with standin.patch_client():
            cfg = _cfg(tmp_path, standin)
            with pytest.raises(BotError, match="Message Content Intent"):
                await asyncio.wait_for(
                    run_bot(
                        cfg,
                        token=standin.token,
                        bot_options={"guild_ready_timeout": 0.05},
                        allow_private=True,
                    ),
                    30,
                )


BOOT = """
import sys, yarl, discord
discord.http.Route.BASE = sys.argv[1] + "/api/v10"
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])
from memetag.cli import main
sys.exit(main(["--config", "config.toml", "--data", "data", "bot"]))
"""


async def test_memetag_bot_command_runs_and_stops_on_sigterm(standin, project):
    """The real command in its own process: connects, keeps the private-address guard,
    says why it tags nothing, never prints the token, and exits 0 on SIGTERM."""

    config = CONFIG.replace("123456789012345678", str(standin.channel.id))
    (project / "config.toml").write_text(config, encoding="utf-8")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "DISCORD_TOKEN": standin.token, "PYTHONPATH": root}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BOOT,
        standin.api_url.removesuffix("/api/v10"),
        standin.gateway_url,
        cwd=project,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await standin.wait_for(lambda: standin.gateway.connected or proc.returncode is not None, 60)
        author = await standin.add_member("Person A")
        await standin.post_message(
            standin.channel, author, attachments=[("a.jpg", make_image("JPEG"))]
        )
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = err.decode()
    assert proc.returncode == 0, text
    assert standin.gateway.identify_count == 1
    assert "not tagging: no trained model yet" in text
    assert "private_address" in text  # 127.0.0.1 is refused outside tests
    assert "stopping" in text
    assert standin.token not in text + out.decode()
    assert "voice will NOT be supported" not in text
