"""A StandinDiscord in a child process, driven from the bot's process over a pipe.

Run in the bot's own process, the stand-in's work (serving attachments, taking REST requests,
writing gateway frames) shares the bot's event loop and GIL, and a benchmark of the bot
measures the stand-in too. Here it runs in a child process; the two still share the machine's
cores, as a bot and its network stack do. The bot connects over 127.0.0.1 as to any stand-in:
:meth:`RemoteStandin.patch_client` points discord.py at it, and :func:`running_bot` starts the
bot against a ``RemoteStandin`` as against a ``StandinDiscord``.

What the child does is a *driver* class, loaded in the child from a Python file:
``Driver(standin, **driver_options)``, whose ``async def`` methods are the operations the parent
runs with ``await remote.call("method", **kwargs)`` (arguments and results are pickled), and
whose ``describe()`` says what the parent needs to know (ids, names). Each call runs as a task
of its own in the child, so a call waiting for the client (``standin.sync()``) still hears the
client's acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import multiprocessing
import threading
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from memetag.standin.server import StandinDiscord, StandinFailure, patched_client

log = logging.getLogger(__name__)

_NOTIFY = None  # the id of a message that expects no answer


class RemoteStandin:
    """The parent's handle on a stand-in in a child process (see the module docstring)."""

    def __init__(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        self._conn = conn
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._loop = asyncio.get_running_loop()
        self._send_lock = threading.Lock()
        self._client_listening = False
        self.failures: list[BaseException] = []
        self.base_url = ""
        self.token = ""
        self.info: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, name="standin-pipe-reader", daemon=True)
        self._reader.start()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        driver_file: Path | str,
        driver_class: str,
        *,
        standin_options: dict[str, Any] | None = None,
        driver_options: dict[str, Any] | None = None,
        start_timeout: float = 60.0,
    ) -> AsyncIterator[RemoteStandin]:
        """Start the child, its stand-in and its driver; stop them when the block ends."""
        ctx = multiprocessing.get_context("spawn")  # no copy of the parent's threads or torch
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_child_main,
            args=(child, str(driver_file), driver_class, standin_options or {}),
            name="standin",
            daemon=True,
        )
        process.start()
        child.close()
        remote = cls(parent, process)
        try:
            ready = await asyncio.wait_for(
                remote.call("_start", **(driver_options or {})), start_timeout
            )
            remote.base_url, remote.token, remote.info = ready
            yield remote
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(remote.call("_stop"), 10)
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()
            parent.close()

    async def call(self, op: str, **kwargs: Any) -> Any:
        """Run the driver's ``op(**kwargs)`` in the child and return its result.

        Raises:
            StandinFailure: the call raised in the child (its repr is the message), or the
                child exited.
        """
        ident = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting[ident] = future
        self._send((op, ident, kwargs))
        try:
            return await future
        finally:
            self._waiting.pop(ident, None)

    def _send(self, message: tuple[str, int | None, dict[str, Any]]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                ident, ok, value = self._conn.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._gone)
                return
            self._loop.call_soon_threadsafe(self._answer, ident, ok, value)

    def _answer(self, ident: int, ok: bool, value: Any) -> None:
        future = self._waiting.get(ident)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(StandinFailure(f"in the stand-in's process: {value}"))

    def _gone(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(StandinFailure("the stand-in's process exited"))

    # -- what running_bot uses -------------------------------------------------------------------

    @property
    def client_listening(self) -> bool:
        return self._client_listening

    @client_listening.setter
    def client_listening(self, value: bool) -> None:
        self._client_listening = value
        self._send(("_listening", _NOTIFY, {"value": value}))

    def client_synced(self) -> None:
        self._send(("_synced", _NOTIFY, {}))

    def report_failure(self, exc: BaseException) -> None:
        self.failures.append(exc)

    def check(self) -> None:
        """Raise if the bot's side reported a failure (the child's are raised by its calls)."""
        if self.failures:
            first = self.failures[0]
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise StandinFailure(f"{first!r}{more}") from first

    @contextlib.contextmanager
    def patch_client(self) -> Iterator[None]:
        """Point discord.py at the child's stand-in (see ``StandinDiscord.patch_client``)."""
        with patched_client(self.base_url):
            yield


# -- the child ------------------------------------------------------------------------------------


def _child_main(
    conn: Connection, driver_file: str, driver_class: str, standin_options: dict[str, Any]
) -> None:
    spec = importlib.util.spec_from_file_location("standin_driver", driver_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the stand-in driver from {driver_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    asyncio.run(_serve(conn, getattr(module, driver_class), standin_options))


async def _serve(conn: Connection, driver_class: type, standin_options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, int | None, dict[str, Any]] | None] = asyncio.Queue()
    send_lock = threading.Lock()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(inbox.put_nowait, None)
                return
            loop.call_soon_threadsafe(inbox.put_nowait, message)

    def answer(ident: int, ok: bool, value: Any) -> None:
        with send_lock:
            conn.send((ident, ok, value))

    threading.Thread(target=read, name="standin-pipe-reader", daemon=True).start()
    tasks: set[asyncio.Task[None]] = set()
    stopped = asyncio.Event()
    async with StandinDiscord.start(**standin_options) as standin:
        driver: Any = None

        async def run(op: str, ident: int, kwargs: dict[str, Any]) -> None:
            nonlocal driver
            try:
                if op == "_start":
                    driver = driver_class(standin, **kwargs)
                    await driver.setup()
                    result: Any = (standin.base_url, standin.token, driver.describe())
                elif op == "_stop":
                    stopped.set()
                    result = None
                else:
                    result = await getattr(driver, op)(**kwargs)
            except Exception as exc:  # noqa: BLE001 - the parent's call raises it
                answer(ident, False, f"{op}: {exc!r}")
            else:
                answer(ident, True, result)

        while not stopped.is_set():
            getter = asyncio.ensure_future(inbox.get())
            stop = asyncio.ensure_future(stopped.wait())
            await asyncio.wait({getter, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not getter.done():
                getter.cancel()
                break
            message = getter.result()
            if message is None:  # the parent went away
                break
            op, ident, kwargs = message
            if op == "_synced":
                standin.client_synced()
            elif op == "_listening":
                standin.client_listening = bool(kwargs["value"])
            elif ident is not None:
                task = asyncio.create_task(run(op, ident, kwargs), name=f"standin-call-{op}")
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        for task in list(tasks):
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
