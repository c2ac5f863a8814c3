"""Run a real discord.py client against a StandinDiscord: start, wait for on_ready, close cleanly.

Used by the test fixtures and by anything else (a demo) that drives the real bot offline.
Exceptions discord.py would only log (handler errors, view and command-tree errors, a crashed
gateway parser) are reported to the stand-in, so ``wait_for`` fails at once instead of timing out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from discord.ext import commands

from memetag.standin.gateway import SYNC_EVENT
from memetag.standin.server import StandinDiscord


class ClientError(Exception):
    """An error the client logged at ERROR level (the log message; the cause is chained)."""


class _ErrorLogHandler(logging.Handler):
    def __init__(self, discord: StandinDiscord) -> None:
        super().__init__(logging.ERROR)
        self._discord = discord

    def emit(self, record: logging.LogRecord) -> None:
        error = ClientError(f"{record.name}: {record.getMessage()}")
        if record.exc_info and record.exc_info[1] is not None:
            error.__cause__ = record.exc_info[1]
        self._discord.report_failure(error)


@contextlib.asynccontextmanager
async def running_bot(
    discord: StandinDiscord,
    bot: commands.Bot,
    *,
    ready_timeout: float = 10.0,
    error_loggers: Sequence[str] = ("discord",),
) -> AsyncIterator[commands.Bot]:
    """Start ``bot`` against ``discord`` (already patched in) and yield once on_ready fired.

    Args:
        error_loggers: loggers whose ERROR records count as failures; discord.py logs every
            exception it swallows there. Pass ``()`` when a test provokes errors on purpose.
    """
    handler = _ErrorLogHandler(discord)
    loggers = [logging.getLogger(name) for name in error_loggers]
    for logger in loggers:
        logger.addHandler(handler)
    ready = asyncio.Event()

    async def _on_ready() -> None:
        ready.set()

    async def _on_socket_event_type(event: str) -> None:
        if event == SYNC_EVENT:
            discord.client_synced()

    bot.add_listener(_on_ready, "on_ready")
    bot.add_listener(_on_socket_event_type, "on_socket_event_type")
    discord.client_listening = True
    task = asyncio.create_task(bot.start(discord.token), name="standin-bot")

    def _finished(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            discord.report_failure(t.exception())

    task.add_done_callback(_finished)
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            discord.check()
            raise AssertionError(f"the bot did not become ready within {ready_timeout}s")
        yield bot
    finally:
        waiter.cancel()
        bot.remove_listener(_on_ready, "on_ready")
        bot.remove_listener(_on_socket_event_type, "on_socket_event_type")
        discord.client_listening = False
        await bot.close()
        with contextlib.suppress(Exception):  # already reported through _finished
            await asyncio.wait_for(task, 5)
        for logger in loggers:
            logger.removeHandler(handler)
