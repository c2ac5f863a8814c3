"""A loopback image host for the demo's Hangouts export: serves a folder on 127.0.0.1.

It runs its own event loop in a background thread, so the real `memetag ingest hangouts`
(which runs its own loop in the calling thread) downloads from it exactly as it would from
Google's servers, through the same downloader, once its private-address guard is loosened with
``--allow-private``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

from aiohttp import web

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif"}


class ImageHost:
    """``with ImageHost(folder) as host:`` serves ``GET /<any>/s0/<name>`` from ``folder/<name>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.port = 0
        self.hits: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.folder / name
        # Only plain names of files in the folder: never a path out of it.
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        self.hits[name] += 1
        body = await asyncio.to_thread(path.read_bytes)
        content_type = _TYPES.get(path.suffix.lower(), "application/octet-stream")
        return web.Response(body=body, content_type=content_type)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{key}/s0/{name}", self._serve_file)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def __enter__(self) -> ImageHost:
        self._thread = threading.Thread(target=self._run, name="demo-image-host", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
