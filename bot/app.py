"""The bot process: ``MemetagBot`` (a discord.py ``commands.Bot``), its cogs, and running it.

``run_bot`` opens the shared dependencies once, starts the bot, and on SIGINT/SIGTERM stops
taking work, drains the queue within ``[bot] drain_timeout_s``, disconnects and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
from collections.abc import Sequence

import aiohttp
import discord
from discord.ext import commands

from bot.deps import Deps, open_deps
from bot.tagger import TAGGER
from memetag.config import AppConfig
from memetag.errors import MemetagError

log = logging.getLogger(__name__)

# One module per concern; a module that is not installed (yet) is skipped.
COGS: tuple[str, ...] = (
    "bot.cogs.tagging",
    "bot.cogs.corrections",
    "bot.cogs.admin",
    "bot.cogs.retrain",
    "bot.cogs.review",
    "bot.cogs.backfill",
    "bot.cogs.privacy",
    "bot.cogs.insights",
)


def invite_permissions() -> discord.Permissions:
    """What the bot needs in a watched channel: see it, read its history (Discord requires it
    to react, and `/tagger backfill` reads it), add reactions, send replies, also inside
    threads; attach files and open a public thread for `/tagger review`'s posts."""
    return discord.Permissions(
        view_channel=True,
        read_message_history=True,
        add_reactions=True,
        send_messages=True,
        send_messages_in_threads=True,
        attach_files=True,
        create_public_threads=True,
    )


def invite_url(application_id: int | str) -> str:
    """The OAuth2 link that adds the bot to a server with :func:`invite_permissions`."""
    return discord.utils.oauth_url(
        int(application_id),
        permissions=invite_permissions(),
        scopes=("bot", "applications.commands"),
    )


class BotError(MemetagError):
    """The bot could not start or run (shown as one line; never contains the token)."""


def bot_intents() -> discord.Intents:
    """Guilds, guild messages, message content (privileged) and guild reactions: nothing more."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.guild_reactions = True
    return intents


class MemetagBot(commands.Bot):
    """The memetag bot. Cogs reach the shared store, session and model through ``self.deps``."""

    def __init__(
        self,
        *,
        deps: Deps,
        cogs: Sequence[str] = COGS,
        sync_commands: bool = True,
        **options: object,
    ) -> None:
        options.setdefault("command_prefix", commands.when_mentioned)
        options.setdefault("help_command", None)
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(intents=bot_intents(), **options)
        self.deps = deps
        self._cog_modules = tuple(cogs)
        self._sync_commands = sync_commands
        self.loaded_cogs: list[str] = []
        # [bot] command_sync "guild": each guild gets the commands once it is seen (on ready,
        # on join); set once the guilds known at ready are done (tests wait on it).
        self.commands_synced = asyncio.Event()
        self._synced_guilds: set[int] = set()
        self._global_cleared = False
        self._sync_lock = asyncio.Lock()

    @property
    def guild_sync(self) -> bool:
        return self._sync_commands and self.deps.cfg.bot.command_sync == "guild"

    async def setup_hook(self) -> None:
        for name in self._cog_modules:
            if importlib.util.find_spec(name) is None:
                log.debug("cog %s is not installed; skipped", name)
                continue
            await self.load_extension(name)
            self.loaded_cogs.append(name)
        # /tagger: the cogs above add their subcommands to this one shared group at import.
        if TAGGER.commands and self.tree.get_command(TAGGER.name) is None:
            self.tree.add_command(TAGGER)
        if self._sync_commands and not self.guild_sync and self.tree.get_commands():
            await self.tree.sync()
            self.commands_synced.set()
        elif not self._sync_commands:
            self.commands_synced.set()

    async def on_ready(self) -> None:
        guilds = ", ".join(g.name for g in self.guilds) or "no servers yet"
        log.info("connected as %s to %s", self.user, guilds)
        if self.guild_sync:
            await self.sync_guild_commands(self.guilds)
        self.commands_synced.set()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        if self.guild_sync:
            await self.sync_guild_commands([guild])

    async def sync_guild_commands(self, guilds: Sequence[discord.Guild]) -> None:
        """Register the global commands in each guild not done yet (they show at once, where
        global ones can take an hour), then remove any global registration left from a
        "global" run so members do not see every command twice."""
        async with self._sync_lock:
            for guild in guilds:
                if guild.id in self._synced_guilds:
                    continue
                self.tree.copy_global_to(guild=guild)
                try:
                    await self.tree.sync(guild=guild)
                except discord.HTTPException as exc:
                    log.warning(
                        "could not register the commands in guild %s: %s %s",
                        guild.id,
                        exc.status,
                        exc.text,
                    )
                    continue
                self._synced_guilds.add(guild.id)
            if not self._global_cleared and self.application_id is not None:
                try:
                    await self.http.bulk_upsert_global_commands(self.application_id, payload=[])
                    self._global_cleared = True
                except discord.HTTPException as exc:
                    log.warning("could not clear the global commands: %s %s", exc.status, exc.text)

    async def drain(self, timeout: float) -> None:
        """Ask every cog that queues work to finish it within ``timeout`` seconds in total."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for cog in list(self.cogs.values()):
            drain = getattr(cog, "drain", None)
            if drain is not None:
                await drain(max(0.0, deadline - loop.time()))

    async def shutdown(self, timeout: float) -> None:
        """Stop taking work, finish queued work (bounded), then disconnect."""
        try:
            await self.drain(timeout)
        finally:
            await self.close()


class MemetagShardedBot(MemetagBot, commands.AutoShardedBot):
    """The same bot on discord.py's AutoShardedBot: this process runs ``shard_ids`` of
    ``shard_count`` shards (Discord sends it only the guilds whose ``(guild_id >> 22) %
    shard_count`` is one of them). Several such processes share one data dir."""


def create_bot(deps: Deps, **options: object) -> MemetagBot:
    """A MemetagBot, or a MemetagShardedBot when ``[bot] shard_count`` is set."""
    settings = deps.cfg.bot
    if settings.shard_count > 0:
        options.setdefault("shard_count", settings.shard_count)
        if settings.shard_ids:
            options.setdefault("shard_ids", list(settings.shard_ids))
        return MemetagShardedBot(deps=deps, **options)
    return MemetagBot(deps=deps, **options)


async def run_bot(
    cfg: AppConfig,
    *,
    token: str,
    stop: asyncio.Event | None = None,
    bot_options: dict[str, object] | None = None,
    allow_private: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set); then shut down cleanly.

    Raises:
        BotError: the token was refused or the Message Content intent is not enabled.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with open_deps(cfg, allow_private=allow_private) as deps:
            bot = create_bot(deps, **(bot_options or {}))
            runner = asyncio.create_task(bot.start(token), name="memetag-bot")
            waiter = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if stop.is_set():
                log.info("stopping: finishing queued images (at most %ss)", cfg.bot.drain_timeout_s)
                await bot.shutdown(cfg.bot.drain_timeout_s)
            else:
                await bot.shutdown(0)
            try:
                await runner
            except discord.LoginFailure:
                raise BotError(
                    "Discord refused the token: check DISCORD_TOKEN (Developer Portal > your "
                    "application > Bot > Reset Token)"
                ) from None
            except discord.PrivilegedIntentsRequired:
                raise BotError(
                    "the Message Content intent is not enabled: Developer Portal > your "
                    "application > Bot > Privileged Gateway Intents > Message Content Intent"
                ) from None
            except (discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError) as exc:
                raise BotError(f"could not connect to Discord: {_one_line(exc)}") from None
            except discord.ConnectionClosed as exc:
                raise BotError(f"Discord closed the connection (code {exc.code})") from None
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
