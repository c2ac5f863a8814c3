"""The tagging cog's work queue: bounded, fair between channels, never blocking the caller."""

from __future__ import annotations

import asyncio

from bot.queue import WorkQueue


class Jobs:
    """Jobs that record when they start and wait until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    def job(self, name: str):
        self.release[name] = asyncio.Event()

        async def run() -> None:
            self.started.append(name)
            await self.release[name].wait()

        return run

    async def until_started(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.started) < count:
                await asyncio.sleep(0.001)


async def test_a_channel_holds_at_most_its_share_of_the_workers():
    queue = WorkQueue(maxsize=100, workers=3, per_key=2)
    jobs = Jobs()
    queue.start()
    try:
        for i in range(4):
            assert queue.offer(f"a{i}", jobs.job(f"a{i}"), key="a")
        await jobs.until_started(2)
        assert queue.offer("b0", jobs.job("b0"), key="b")
        await jobs.until_started(3)
        await asyncio.sleep(0.01)
        # The third worker went to the other channel; channel a's next ones wait for its own.
        assert jobs.started == ["a0", "a1", "b0"] and queue.pending == 2
        jobs.release["a0"].set()
        await jobs.until_started(4)
        assert jobs.started[-1] == "a2"
    finally:
        for event in jobs.release.values():
            event.set()
        await queue.close(1)


async def test_a_free_worker_takes_the_next_channel_in_turn_not_the_oldest_job():
    queue = WorkQueue(maxsize=100, workers=1)
    jobs = Jobs()
    queue.start()
    try:
        for name, key in [("a0", "a"), ("a1", "a"), ("a2", "a"), ("b0", "b"), ("c0", "c")]:
            assert queue.offer(name, jobs.job(name), key=key)
        for expected in range(1, 6):
            await jobs.until_started(expected)
            jobs.release[jobs.started[-1]].set()
        await queue.join()
        assert jobs.started == ["a0", "b0", "c0", "a1", "a2"]
        assert queue.stats.done == 5 and queue.idle
    finally:
        await queue.close(1)


async def test_a_full_queue_drops_and_close_abandons_what_never_started():
    queue = WorkQueue(maxsize=2, workers=1)
    jobs = Jobs()
    queue.start()
    assert queue.offer("a0", jobs.job("a0"), key="a")
    await jobs.until_started(1)
    assert queue.offer("a1", jobs.job("a1"), key="a")
    assert queue.offer("b0", jobs.job("b0"), key="b")
    assert not queue.offer("b1", jobs.job("b1"), key="b")  # two waiting: full
    assert queue.stats.dropped == 1 and queue.pending == 2 and not queue.idle
    assert not await queue.close(0.05)  # a0 never finishes
    assert queue.stats.abandoned == 3 and queue.pending == 0 and queue.idle
    assert jobs.started == ["a0"]
    assert not queue.offer("c0", jobs.job("c0"), key="c")  # closed: not taken
