"""A loopback aiohttp server for network tests: images, errors, slow/endless bodies, redirects.

Usage::

    async with ImageServer() as server:      # 127.0.0.1, random port
        server.add_standard_routes()          # the catalogue below (optional)
        server.add_bytes("/mine.jpg", data)   # or register your own, any time
        url = server.url("/mine.jpg")
        ...
        assert server.hits["/mine.jpg"] == 1

Routes are looked up per request in a dict, so they can be added or replaced while the server
runs (e.g. make a path fail only after a pipeline crash). Every request is counted in ``hits``
(by path, query excluded); streamed bodies count ``bytes_sent`` and note ``disconnects`` when the
client goes away mid-body; ``max_in_flight`` is the peak of concurrent requests.

The pytest fixture ``image_server`` yields a started server with the standard routes; enable it
in a conftest with ``pytest_plugins = ["tests.helpers.imageserver"]`` or import it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

import pytest
from aiohttp import web

from tests.helpers.imagegen import (
    HTML_PAGE,
    make_animated_gif,
    make_bomb_png,
    make_image,
    truncate,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ImageServer:
    """An aiohttp.web server on 127.0.0.1 whose routes tests register at will."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.content: dict[str, bytes] = {}  # what add_bytes/add_image registered, by path
        self._handlers: dict[str, Handler] = {}
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ImageServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def reset_counters(self) -> None:
        self.hits.clear()
        self.bytes_sent.clear()
        self.disconnects.clear()
        self.max_in_flight = 0

    # -- registering routes -----------------------------------------------------------------

    def add_handler(self, path: str, handler: Handler) -> None:
        """Serve ``path`` (any method) with ``handler``; replaces an existing route."""
        self._handlers[path] = handler

    def remove(self, path: str) -> None:
        self._handlers.pop(path, None)

    def add_bytes(
        self,
        path: str,
        data: bytes,
        *,
        content_type: str = "image/jpeg",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.content[path] = data

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(
                body=data, status=status, content_type=content_type, headers=headers
            )

        self.add_handler(path, handler)

    def add_image(self, path: str, fmt: str = "JPEG", size: tuple[int, int] = (64, 48), *,
                  seed: int = 0) -> bytes:  # fmt: skip
        """Serve a generated image; returns its bytes."""
        data = make_image(fmt, size, seed=seed)
        self.add_bytes(path, data, content_type=f"image/{fmt.lower()}")
        return data

    def add_status(
        self, path: str, status: int, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.add_bytes(path, f"status {status}".encode(), content_type="text/plain",
                       status=status, headers=headers)  # fmt: skip

    def add_flaky(
        self,
        path: str,
        data: bytes,
        *,
        failures: int = 1,
        status: int = 500,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        content_type: str = "image/jpeg",
    ) -> None:
        """Answer ``status`` (with ``headers``) to the first ``failures`` hits, then ``data``."""
        self.content[path] = data

        async def handler(request: web.Request) -> web.StreamResponse:
            if self.hits[path] <= failures:
                extra = headers() if callable(headers) else headers
                return web.Response(text=f"status {status}", status=status, headers=extra)
            return web.Response(body=data, content_type=content_type)

        self.add_handler(path, handler)

    def add_redirect(self, path: str, location: str | None, status: int = 302) -> None:
        """Redirect to ``location`` (absolute or relative; None sends no Location at all)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            headers = {"Location": location} if location is not None else {}
            return web.Response(status=status, headers=headers)

        self.add_handler(path, handler)

    def add_stream(
        self,
        path: str,
        chunks: Callable[[], Iterable[bytes]],
        *,
        delay: float = 0.0,
        content_length: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        """Stream ``chunks()`` (called per request; may be endless), sleeping ``delay`` between.

        A client disconnecting mid-body is counted in ``disconnects[path]``.
        """

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            if content_length is not None:
                resp.content_length = content_length
            await resp.prepare(request)
            try:
                for chunk in chunks():
                    await resp.write(chunk)
                    self.bytes_sent[path] += len(chunk)
                    await asyncio.sleep(delay)
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                # aiohttp raises ClientConnectionResetError (a ConnectionResetError) once the
                # client has gone; older versions a RuntimeError on a closing transport.
                self.disconnects[path] += 1
            return resp

        self.add_handler(path, handler)

    def add_standard_routes(self) -> None:
        """The catalogue the download tests use (see the paths below)."""
        self.add_image("/img/photo.jpg", "JPEG", (64, 48), seed=1)
        self.add_image("/img/pic.png", "PNG", (50, 40), seed=2)
        self.add_image("/img/pic.webp", "WEBP", (32, 32), seed=3)
        self.add_bytes("/img/anim.gif", make_animated_gif(), content_type="image/gif")
        # An image behind a URL that names no type and a lying Content-Type.
        self.add_bytes("/download?id=7", make_image("PNG", seed=4), content_type="text/html")
        self.add_bytes("/img/no-extension", make_image("PNG", seed=4), content_type="text/plain")
        for status in (400, 403, 404, 410, 500, 502, 503):
            self.add_status(f"/status/{status}", status)
        self.add_flaky("/flaky", self.content["/img/photo.jpg"], failures=1, status=500)
        self.add_flaky("/flaky/503x2", self.content["/img/photo.jpg"], failures=2, status=503)
        self.add_flaky("/ratelimited", self.content["/img/photo.jpg"], failures=1, status=429,
                       headers={"Retry-After": "7"})  # fmt: skip
        self.add_bytes("/html", HTML_PAGE, content_type="text/html")
        # A large HTML page served slowly: a client that sniffs must not wait for all of it.
        self.add_stream("/html/slow", lambda: _repeat(HTML_PAGE, 200), delay=0.01,
                        content_type="text/html")  # fmt: skip
        self.add_bytes("/empty", b"", content_type="image/jpeg")
        self.add_bytes("/bomb.png", make_bomb_png(50_000, 50_000), content_type="image/png")
        self.add_bytes("/truncated.jpg", truncate(make_image("JPEG", (256, 256), seed=5)))
        photo = self.content["/img/photo.jpg"]
        self.add_stream("/slow", lambda: split_chunks(photo, 8), delay=0.02,
                        content_type="image/jpeg")  # fmt: skip
        self.add_stream("/endless", lambda: forever(photo[:1024]), delay=0.005,
                        content_type="image/jpeg")  # fmt: skip
        self.add_handler("/stall", _stall(photo[:64]))
        # 3 MiB bodies, for a downloader capped lower: one announced, one not.
        big = photo + bytes(3 * 1024 * 1024)
        self.add_stream("/big/with-length", lambda: split_chunks(big, 48), content_length=len(big),
                        content_type="image/jpeg")  # fmt: skip
        self.add_stream("/big/chunked", lambda: split_chunks(big, 48), delay=0.005,
                        content_type="image/jpeg")  # fmt: skip
        # Never ends, as fast as the client reads: only a byte cap stops it.
        self.add_stream("/big/endless", lambda: forever(photo + bytes(64 * 1024)),
                        content_type="image/jpeg")  # fmt: skip
        self.add_redirect("/redirect/1", "/redirect/2", 301)
        self.add_redirect("/redirect/2", self.url("/redirect/3"), 307)
        self.add_redirect("/redirect/3", "../img/photo.jpg", 302)
        self.add_redirect("/redirect/loop", "/redirect/loop")
        self.add_redirect("/redirect/no-location", None)
        self.add_redirect("/redirect/ftp", "ftp://example.com/x.jpg")
        self.add_redirect("/redirect/private", "http://10.0.0.1/x.jpg")
        self.add_redirect("/redirect/metadata", "http://169.254.169.254/latest/meta-data/")
        self.add_redirect("/redirect/mapped", "http://[::ffff:10.0.0.1]/x.jpg")
        self.add_redirect("/redirect/loopback6", f"http://[::1]:{self.port}/img/photo.jpg")
        self.add_redirect("/redirect/localhost", f"http://localhost:{self.port}/img/photo.jpg")

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        key = request.path_qs if request.path_qs in self._handlers else request.path
        self.hits[key] += 1
        handler = self._handlers.get(key)
        if handler is None:
            return web.Response(status=404, text="no such route")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1


def split_chunks(data: bytes, parts: int) -> list[bytes]:
    """``data`` cut into about ``parts`` chunks, for ``add_stream``."""
    step = max(1, -(-len(data) // parts))
    return [data[i : i + step] for i in range(0, len(data), step)]


def _repeat(chunk: bytes, times: int) -> Iterable[bytes]:
    return (chunk for _ in range(times))


_split = split_chunks  # the name tests/test_ingest_resume.py imports


def forever(chunk: bytes) -> Iterable[bytes]:
    """``chunk`` again and again, for an endless ``add_stream`` body."""
    while True:
        yield chunk


def _stall(first: bytes) -> Handler:
    """Send headers and ``first``, then nothing, ever (until the server shuts down)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        await resp.write(first)
        # aiohttp does not cancel handlers when the client leaves: watch the transport.
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)
        return resp

    return handler


@pytest.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    """A started loopback server with the standard routes."""
    async with ImageServer() as server:
        server.add_standard_routes()
        yield server
