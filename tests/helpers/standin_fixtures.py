"""Pytest fixtures for the stand-in Discord: ``standin``, ``start_bot`` and ``bot``.

Enable them in a test module or conftest with
``pytest_plugins = ["tests.helpers.standin_fixtures"]`` (conftest only), or import them:
``from tests.helpers.standin_fixtures import bot, standin, start_bot  # noqa: F401``.

``standin`` serves a fresh stand-in and patches discord.py to use it; teardown fails the test if
the stand-in or the bot reported an error, or the bot called a route the stand-in lacks.
``start_bot(bot=None, *, cogs=(), error_loggers=("discord",))`` starts a real bot (a
``make_test_bot()`` one by default) and returns it once on_ready fired; every started bot is
closed, and its ``start()`` task awaited, before the stand-in stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from discord.ext import commands

from tests.helpers.discord_standin import StandinDiscord, make_test_bot, running_bot

StartBot = Callable[..., Awaitable[commands.Bot]]


@pytest.fixture
async def standin() -> AsyncIterator[StandinDiscord]:
    async with StandinDiscord.start() as discord:
        with discord.patch_client():
            yield discord
        discord.check()


@pytest.fixture
async def start_bot(standin: StandinDiscord) -> AsyncIterator[StartBot]:
    async with contextlib.AsyncExitStack() as stack:

        async def _start(
            bot: commands.Bot | None = None,
            *,
            cogs: Sequence[commands.Cog] = (),
            error_loggers: Sequence[str] = ("discord",),
        ) -> commands.Bot:
            bot = bot or make_test_bot()
            for cog in cogs:
                await bot.add_cog(cog)
            return await stack.enter_async_context(
                running_bot(standin, bot, error_loggers=error_loggers)
            )

        yield _start


@pytest.fixture
async def bot(start_bot: StartBot) -> commands.Bot:
    """A plain test bot, started and ready."""
    return await start_bot()
