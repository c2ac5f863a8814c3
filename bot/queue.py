"""The bot's bounded work queue: a fixed set of workers, and what happens when it is full.

Overload policy: ``offer`` never waits. When the queue is full the new job is skipped and
counted (``dropped``), and a warning is logged for the first drop and then every 100th, so the
gateway handler that offers work returns at once and heartbeats keep flowing. A job that raises
is logged and counted (``failed``); the worker goes on. ``close`` stops taking work, lets the
workers finish what is queued within a bound, then cancels the rest (``abandoned``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


@dataclass
class QueueStats:
    accepted: int = 0
    done: int = 0
    dropped: int = 0
    failed: int = 0
    abandoned: int = 0


class WorkQueue:
    """``offer(job)`` puts a zero-argument coroutine function on the queue, or drops it when full."""

    def __init__(self, *, maxsize: int, workers: int, name: str = "memetag-work") -> None:
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue(maxsize)
        self._workers_wanted = workers
        self._workers: list[asyncio.Task[None]] = []
        self._name = name
        self._closing = False
        self._running = 0
        self.stats = QueueStats()

    def start(self) -> None:
        if self._workers:
            return
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self._name}-{i}")
            for i in range(self._workers_wanted)
        ]

    @property
    def pending(self) -> int:
        """Jobs waiting (not yet picked up by a worker)."""
        return self._queue.qsize()

    @property
    def closing(self) -> bool:
        return self._closing

    def offer(self, what: str, job: Job) -> bool:
        """Queue ``job`` (``what`` names it in logs); False when it was dropped."""
        if self._closing:
            log.info("shutting down: not taking %s", what)
            return False
        try:
            self._queue.put_nowait((what, job))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                log.warning(
                    "work queue full (%d waiting): skipped %s; %d skipped so far",
                    self._queue.maxsize,
                    what,
                    self.stats.dropped,
                )
            return False
        self.stats.accepted += 1
        return True

    async def _work(self) -> None:
        while True:
            what, job = await self._queue.get()
            self._running += 1
            try:
                await job()
                self.stats.done += 1
            except asyncio.CancelledError:
                self.stats.abandoned += 1
                raise
            except Exception:  # noqa: BLE001 - one bad job must not stop the worker
                self.stats.failed += 1
                log.exception("%s failed", what)
            finally:
                self._running -= 1
                self._queue.task_done()

    @property
    def idle(self) -> bool:
        return self._running == 0 and self._queue.empty()

    async def join(self) -> None:
        """Wait until every queued job is done (for tests and shutdown)."""
        await self._queue.join()

    async def close(self, timeout: float) -> bool:
        """Stop taking work and drain for at most ``timeout`` seconds. True if fully drained."""
        self._closing = True
        drained = True
        if self._workers and not self.idle:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                drained = False
        while not self._queue.empty():
            what, _ = self._queue.get_nowait()
            self._queue.task_done()
            self.stats.abandoned += 1
            log.warning("shutting down: %s was never started", what)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers = []
        if not drained:
            log.warning("shutting down: stopped work still running after %.1fs", timeout)
        return drained
