"""The bot's bounded work queue: a fixed set of workers, fair between channels, and what happens
when it is full.

Overload policy: ``offer`` never waits. When the queue is full the new job is skipped and
counted (``dropped``), and a warning is logged for the first drop and then every 100th, so the
gateway handler that offers work returns at once and heartbeats keep flowing. A job that raises
is logged and counted (``failed``); the worker goes on. ``close`` stops taking work, lets the
workers finish what is queued within a bound, then cancels the rest (``abandoned``).

Fairness: every job has a key (the tagging cog uses the channel). A free worker takes the
oldest job of the next key in turn, not the oldest job overall, and one key never holds more
than ``per_key`` workers at once. Discord paces each channel's requests on its own (a
reaction every quarter of a second or so): a burst in one channel whose tags wait on
Discord then leaves the other workers, and the other channels' messages, free.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
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
    """``offer(what, job, key)`` queues a zero-argument coroutine function, or drops it when full."""

    def __init__(
        self,
        *,
        maxsize: int,
        workers: int,
        per_key: int | None = None,
        name: str = "memetag-work",
    ) -> None:
        self._maxsize = max(1, maxsize)
        self._workers_wanted = workers
        self._per_key = max(1, min(per_key or workers, workers))
        self._workers: list[asyncio.Task[None]] = []
        self._name = name
        self._closing = False
        # key -> its waiting jobs, oldest first; the keys in the order their turns come
        self._lanes: OrderedDict[Hashable, deque[tuple[str, Job]]] = OrderedDict()
        self._waiting = 0
        self._running: Counter[Hashable] = Counter()
        self._unfinished = 0
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._idle_workers: deque[asyncio.Future[None]] = deque()  # one waiter each
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
        return self._waiting

    @property
    def closing(self) -> bool:
        return self._closing

    def offer(self, what: str, job: Job, key: Hashable = None) -> bool:
        """Queue ``job`` (``what`` names it in logs) under ``key``; False when it was dropped."""
        if self._closing:
            log.info("shutting down: not taking %s", what)
            return False
        if self._waiting >= self._maxsize:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                log.warning(
                    "work queue full (%d waiting): skipped %s; %d skipped so far",
                    self._maxsize,
                    what,
                    self.stats.dropped,
                )
            return False
        self._lanes.setdefault(key, deque()).append((what, job))
        self._waiting += 1
        self._unfinished += 1
        self._all_done.clear()
        self._wake_one()
        self.stats.accepted += 1
        return True

    def _wake_one(self) -> None:
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _take(self) -> tuple[Hashable, str, Job] | None:
        """The oldest job of the first key in turn that may have one more worker."""
        for key, lane in self._lanes.items():
            if self._running[key] < self._per_key:
                what, job = lane.popleft()
                if lane:
                    self._lanes.move_to_end(key)  # its next job waits for the other keys' turns
                else:
                    del self._lanes[key]
                self._waiting -= 1
                self._running[key] += 1
                return key, what, job
        return None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = self._take()
            if taken is None:
                waiter = loop.create_future()
                self._idle_workers.append(waiter)
                await waiter
                continue
            key, what, job = taken
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
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
                if key in self._lanes:
                    self._wake_one()  # the key may take a worker again
                self._finished()

    def _finished(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._all_done.set()

    @property
    def idle(self) -> bool:
        return self._unfinished == 0

    async def join(self) -> None:
        """Wait until every queued job is done (for tests and shutdown)."""
        await self._all_done.wait()

    async def close(self, timeout: float) -> bool:
        """Stop taking work and drain for at most ``timeout`` seconds. True if fully drained."""
        self._closing = True
        drained = True
        if self._workers and not self.idle:
            try:
                await asyncio.wait_for(self.join(), timeout)
            except TimeoutError:
                drained = False
        for lane in self._lanes.values():
            for what, _ in lane:
                self._waiting -= 1
                self._finished()
                self.stats.abandoned += 1
                log.warning("shutting down: %s was never started", what)
        self._lanes.clear()
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
