"""The downloader against a loopback aiohttp server: every reason code, retries, caps, the guard."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from ingest.download import (
    AddressPolicy,
    Downloader,
    FetchRequest,
    MiB,
    PrivateAddressError,
    PublicAddressResolver,
    _parse_retry_after,
    create_session,
    is_public_address,
)
from ingest.errors import DownloadError
from ingest.images import inspect_image
from tests.helpers.imagegen import HTML_PAGE
from tests.helpers.imageserver import ImageServer, forever

# --- fixtures ---------------------------------------------------------------------------------


class RecordingSleep:
    """Stands in for asyncio.sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    async with ImageServer() as srv:
        srv.add_standard_routes()
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(allow_private=True, timeout_s=3.0) as s:
        yield s


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def make_downloader(
    session: aiohttp.ClientSession, sleeps: RecordingSleep
) -> Callable[..., Downloader]:
    def make(**kwargs: object) -> Downloader:
        options: dict[str, object] = {
            "allow_private": True,
            "max_bytes": 1 * MiB,
            "sleep": sleeps,
            "rng": random.Random(0),
        }
        options.update(kwargs)
        return Downloader(kwargs.pop("session", session), **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def downloader(make_downloader: Callable[..., Downloader]) -> Downloader:
    return make_downloader()


async def reason_of(downloader: Downloader, url: str, **kwargs: object) -> DownloadError:
    with pytest.raises(DownloadError) as err:
        await downloader.fetch(url, **kwargs)  # type: ignore[arg-type]
    assert err.value.url == url
    return err.value


# --- success ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ext"),
    [
        ("/img/photo.jpg", "jpg"),
        ("/img/pic.png", "png"),
        ("/img/pic.webp", "webp"),
        ("/img/anim.gif", "gif"),
        ("/download?id=7", "png"),  # the URL names no type, the Content-Type lies
        ("/img/no-extension", "png"),
    ],
)
async def test_fetches_images(
    server: ImageServer, downloader: Downloader, path: str, ext: str
) -> None:
    data = await downloader.fetch(server.url(path), must_be_image=True)
    assert data == server.content[path]
    assert inspect_image(data, max_pixels=10**7).ext == ext
    assert server.hits[path] == 1


async def test_slow_body_within_the_timeout_completes(
    server: ImageServer, downloader: Downloader
) -> None:
    assert await downloader.fetch(server.url("/slow")) == server.content["/img/photo.jpg"]


async def test_empty_body(server: ImageServer, downloader: Downloader) -> None:
    assert await downloader.fetch(server.url("/empty")) == b""
    err = await reason_of(downloader, server.url("/empty"), must_be_image=True)
    assert (err.reason, err.detail) == ("not_image", "empty body")


async def test_html_without_must_be_image_is_just_bytes(
    server: ImageServer, downloader: Downloader
) -> None:
    assert (await downloader.fetch(server.url("/html"))).startswith(b"<!DOCTYPE html>")


# --- HTTP errors and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, "http_404"), (410, "http_410"), (403, "http_4xx"), (400, "http_4xx")],
)
async def test_client_errors_are_not_retried(
    server: ImageServer, downloader: Downloader, sleeps: RecordingSleep, status: int, reason: str
) -> None:
    err = await reason_of(downloader, server.url(f"/status/{status}"))
    assert err.reason == reason
    assert f"HTTP {status}" in err.detail
    assert server.hits[f"/status/{status}"] == 1
    assert sleeps.delays == []


async def test_server_errors_are_retried_with_full_jitter(
    server: ImageServer, make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    downloader = make_downloader(retries=4, backoff_base=0.5, backoff_max=3.0)
    err = await reason_of(downloader, server.url("/status/502"))
    assert err.reason == "http_5xx"
    assert "5 attempts" in err.detail
    assert server.hits["/status/502"] == 5
    assert len(sleeps.delays) == 4
    for attempt, delay in enumerate(sleeps.delays):
        assert 0 <= delay <= min(3.0, 0.5 * 2**attempt)


async def test_flaky_server_succeeds_on_retry(
    server: ImageServer, downloader: Downloader, sleeps: RecordingSleep
) -> None:
    assert await downloader.fetch(server.url("/flaky")) == server.content["/flaky"]
    assert server.hits["/flaky"] == 2
    assert await downloader.fetch(server.url("/flaky/503x2")) == server.content["/flaky"]
    assert server.hits["/flaky/503x2"] == 3
    assert len(sleeps.delays) == 3


async def test_retry_after_seconds_is_honoured(
    server: ImageServer, downloader: Downloader, sleeps: RecordingSleep
) -> None:
    assert await downloader.fetch(server.url("/ratelimited")) == server.content["/ratelimited"]
    assert server.hits["/ratelimited"] == 2
    assert sleeps.delays == [7.0]


async def test_retry_after_is_capped_at_backoff_max(
    server: ImageServer, make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    await make_downloader(backoff_max=2.5).fetch(server.url("/ratelimited"))
    assert sleeps.delays == [2.5]


async def test_retry_after_http_date_uses_the_injected_clock(
    server: ImageServer, make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    now = email.utils.parsedate_to_datetime(when).timestamp() - 12
    server.add_flaky("/dated", b"\xff\xd8\xff", status=503, headers={"Retry-After": when})
    assert await make_downloader(clock=lambda: now).fetch(server.url("/dated")) == b"\xff\xd8\xff"
    assert sleeps.delays == [12.0]


async def test_rate_limited_for_good(
    server: ImageServer, make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    server.add_status("/always-429", 429, headers={"Retry-After": "1"})
    err = await reason_of(make_downloader(retries=2), server.url("/always-429"))
    assert err.reason == "http_429"
    assert server.hits["/always-429"] == 3
    assert sleeps.delays == [1.0, 1.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("nan", None), ("soon", None), ("", None)],
)
def test_parse_retry_after(header: str, expected: float | None) -> None:
    assert _parse_retry_after(header, now=0.0) == expected


def test_parse_retry_after_past_date_means_now() -> None:
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=time.time()) == 0.0


async def test_backoff_holds_no_concurrency_slot(
    server: ImageServer, make_downloader: Callable[..., Downloader]
) -> None:
    released = asyncio.Event()
    waits: list[float] = []

    async def blocking_sleep(delay: float) -> None:
        waits.append(delay)
        await released.wait()

    downloader = make_downloader(concurrency=1, sleep=blocking_sleep)
    async with asyncio.TaskGroup() as tg:
        flaky = tg.create_task(downloader.fetch(server.url("/flaky")))
        while not waits:
            await asyncio.sleep(0.01)
        # The flaky fetch is backing off; the only slot must be free for this one.
        photo = await asyncio.wait_for(downloader.fetch(server.url("/img/photo.jpg")), 2)
        released.set()
    assert photo == flaky.result() == server.content["/img/photo.jpg"]


# --- timeouts and connection failures ---------------------------------------------------------


async def test_never_ending_body_times_out(server: ImageServer, sleeps: RecordingSleep) -> None:
    async with create_session(allow_private=True, timeout_s=0.4) as short:
        downloader = Downloader(short, allow_private=True, retries=1, sleep=sleeps)
        err = await reason_of(downloader, server.url("/endless"))
        assert err.reason == "timeout"
        assert server.hits["/endless"] == 2
        err = await reason_of(downloader, server.url("/stall"))
        assert err.reason == "timeout"


async def test_connection_refused_is_retried(
    make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = await reason_of(make_downloader(retries=2), f"http://127.0.0.1:{port}/x.jpg")
    assert err.reason == "connection"
    assert "3 attempts" in err.detail
    assert len(sleeps.delays) == 2


# --- the per-URL deadline and what is worth retrying ------------------------------------------


async def test_dripping_server_is_cut_at_the_deadline(
    server: ImageServer, sleeps: RecordingSleep
) -> None:
    # One byte now and then never trips the session's 30 s limits; only the deadline stops it.
    server.add_stream("/drip", lambda: forever(b"\xff"), delay=0.05, content_type="image/jpeg")
    async with create_session(allow_private=True, timeout_s=30.0) as patient:
        downloader = Downloader(patient, allow_private=True, retries=4, deadline_s=0.3,
                                sleep=sleeps)  # fmt: skip
        err = await reason_of(downloader, server.url("/drip"))
    assert err.reason == "timeout"
    assert "0.3s deadline" in err.detail and "1 attempt" in err.detail
    assert server.hits["/drip"] == 1
    assert sleeps.delays == []


async def test_no_retry_that_would_overrun_the_deadline(
    server: ImageServer, make_downloader: Callable[..., Downloader], sleeps: RecordingSleep
) -> None:
    server.add_status("/busy", 503, headers={"Retry-After": "1"})
    err = await reason_of(make_downloader(retries=10, deadline_s=2.5), server.url("/busy"))
    assert err.reason == "http_5xx"
    assert "no time left" in err.detail and "3 attempts" in err.detail
    assert server.hits["/busy"] == 3
    assert sleeps.delays == [1.0, 1.0]


async def test_deadline_is_per_url_so_a_fallback_gets_its_own(
    server: ImageServer, sleeps: RecordingSleep
) -> None:
    server.add_stream("/drip", lambda: forever(b"\xff"), delay=0.05, content_type="image/jpeg")
    async with create_session(allow_private=True, timeout_s=30.0) as patient:
        downloader = Downloader(patient, allow_private=True, deadline_s=0.3, sleep=sleeps)
        data = await downloader.fetch(
            server.url("/drip"), fallback_urls=[server.url("/img/photo.jpg")]
        )
    assert data == server.content["/img/photo.jpg"]


class FailingResolver(AbstractResolver):
    """A DNS that answers every name with the given getaddrinfo error."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.asked = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked += 1
        raise socket.gaierror(self.code, "Name or service not known")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "reason", "asked"),
    [(socket.EAI_NONAME, "unknown_host", 1), (socket.EAI_AGAIN, "connection", 3)],
)
async def test_unknown_host_is_not_retried_but_a_dns_hiccup_is(
    sleeps: RecordingSleep, code: int, reason: str, asked: int
) -> None:
    dns = FailingResolver(code)
    async with create_session(allow_private=True, resolver=dns) as session:
        downloader = Downloader(session, allow_private=True, retries=2, sleep=sleeps)
        err = await reason_of(downloader, "http://no-such-host.test/a.jpg")
    assert err.reason == reason
    assert dns.asked == asked
    assert len(sleeps.delays) == asked - 1


async def test_oversized_headers_are_not_retried(
    server: ImageServer, downloader: Downloader, sleeps: RecordingSleep
) -> None:
    async def huge_header(request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8\xff", headers={"X-Padding": "a" * 20_000})

    server.add_handler("/huge-header", huge_header)
    err = await reason_of(downloader, server.url("/huge-header"))
    assert err.reason == "bad_response"
    assert server.hits["/huge-header"] == 1
    assert sleeps.delays == []
    assert len(str(err)) < 2000  # aiohttp quotes the header; the message stays one short line


async def test_tls_to_a_plain_http_server_is_not_retried(
    server: ImageServer, downloader: Downloader, sleeps: RecordingSleep
) -> None:
    err = await reason_of(downloader, f"https://127.0.0.1:{server.port}/img/photo.jpg")
    assert err.reason == "tls"
    assert sleeps.delays == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_untrusted_certificate_is_not_retried(
    tmp_path: Path, downloader: Downloader, sleeps: RecordingSleep
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with ImageServer() as plain:
        plain.add_standard_routes()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", plain._dispatch)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            err = await reason_of(downloader, f"https://127.0.0.1:{port}/img/photo.jpg")
        finally:
            await runner.cleanup()
    assert err.reason == "tls"
    assert "certificate" in err.detail.lower()
    assert plain.hits["/img/photo.jpg"] == 0
    assert sleeps.delays == []


# --- caps and sniffing ------------------------------------------------------------------------


async def test_content_length_over_the_cap_is_refused_up_front(
    server: ImageServer, downloader: Downloader
) -> None:
    err = await reason_of(downloader, server.url("/big/with-length"))
    assert err.reason == "too_large"
    assert "Content-Length" in err.detail
    assert server.hits["/big/with-length"] == 1


@pytest.mark.parametrize("path", ["/big/chunked", "/big/endless"])
async def test_cap_aborts_mid_stream(
    server: ImageServer, downloader: Downloader, path: str
) -> None:
    err = await reason_of(downloader, server.url(path))
    assert err.reason == "too_large"
    assert "aborted" in err.detail
    assert server.hits[path] == 1
    # The server notices the client hanging up rather than finishing (or never finishing).
    for _ in range(100):
        if server.disconnects[path]:
            break
        await asyncio.sleep(0.02)
    assert server.disconnects[path] == 1


async def test_must_be_image_abandons_html_early(
    server: ImageServer, downloader: Downloader
) -> None:
    err = await reason_of(downloader, server.url("/html/slow"), must_be_image=True)
    assert err.reason == "not_image"
    assert "HTML" in err.detail
    for _ in range(100):
        if server.disconnects["/html/slow"]:
            break
        await asyncio.sleep(0.02)
    assert server.disconnects["/html/slow"] == 1
    assert server.hits["/html/slow"] == 1
    # The client hung up after the first chunks, not after the whole 200-chunk page.
    assert server.bytes_sent["/html/slow"] < 20 * len(HTML_PAGE)


# --- URLs and redirects -----------------------------------------------------------------------


async def test_redirect_chain_is_followed(server: ImageServer, downloader: Downloader) -> None:
    data = await downloader.fetch(server.url("/redirect/1"), must_be_image=True)
    assert data == server.content["/img/photo.jpg"]
    for path in ("/redirect/1", "/redirect/2", "/redirect/3", "/img/photo.jpg"):
        assert server.hits[path] == 1


async def test_redirect_loop(server: ImageServer, downloader: Downloader) -> None:
    err = await reason_of(downloader, server.url("/redirect/loop"))
    assert err.reason == "too_many_redirects"
    assert server.hits["/redirect/loop"] == 6  # the request and 5 redirects, not retried


@pytest.mark.parametrize("path", ["/redirect/no-location", "/redirect/ftp"])
async def test_bad_redirects(server: ImageServer, downloader: Downloader, path: str) -> None:
    err = await reason_of(downloader, server.url(path))
    assert err.reason == "bad_url"
    assert server.hits[path] == 1


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.jpg", "not a url", "http://", "/relative.jpg", "file:///etc/passwd"],
)
async def test_bad_urls(downloader: Downloader, url: str) -> None:
    assert (await reason_of(downloader, url)).reason == "bad_url"


# --- fallbacks --------------------------------------------------------------------------------


async def test_fallback_is_used_when_the_main_url_is_gone(
    server: ImageServer, downloader: Downloader
) -> None:
    data = await downloader.fetch(
        server.url("/status/404"),
        fallback_urls=[server.url("/status/410"), server.url("/img/pic.png")],
    )
    assert data == server.content["/img/pic.png"]
    assert [server.hits[p] for p in ("/status/404", "/status/410", "/img/pic.png")] == [1, 1, 1]


async def test_all_fallbacks_failing_reports_the_main_reason(
    server: ImageServer, downloader: Downloader
) -> None:
    err = await reason_of(
        downloader, server.url("/status/410"), fallback_urls=[server.url("/status/403")]
    )
    assert err.reason == "http_410"
    assert "fallback" in err.detail and "http_4xx" in err.detail


async def test_fallback_after_retries_run_out(
    server: ImageServer, make_downloader: Callable[..., Downloader]
) -> None:
    downloader = make_downloader(retries=1)
    data = await downloader.fetch(
        server.url("/status/500"), fallback_urls=[server.url("/img/photo.jpg")]
    )
    assert data == server.content["/img/photo.jpg"]
    assert server.hits["/status/500"] == 2


# --- the private-address guard ----------------------------------------------------------------


class MapResolver(AbstractResolver):
    """A fake DNS: host name -> addresses."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def test_loopback_is_refused_without_allow_private(server: ImageServer) -> None:
    async with create_session() as guarded:
        downloader = Downloader(guarded)
        for url in (
            server.url("/img/photo.jpg"),
            f"http://localhost:{server.port}/img/photo.jpg",
            f"http://[::ffff:127.0.0.1]:{server.port}/img/photo.jpg",
        ):
            err = await reason_of(downloader, url)
            assert err.reason == "private_address"
    assert server.hits["/img/photo.jpg"] == 0


@pytest.mark.parametrize(
    "path", ["/redirect/private", "/redirect/metadata", "/redirect/mapped", "/redirect/loopback6"]
)
async def test_redirect_to_a_private_address_is_refused(server: ImageServer, path: str) -> None:
    # Only the test server's own address is let through, so the first hop can reach it.
    async with create_session(allowed_networks=["127.0.0.1/32"]) as guarded:
        downloader = Downloader(guarded, allowed_networks=["127.0.0.1/32"])
        assert await downloader.fetch(server.url("/img/photo.jpg"))
        err = await reason_of(downloader, server.url(path))
        assert err.reason == "private_address"
        assert "redirect to" in err.detail
        assert server.hits[path] == 1


async def test_resolver_refuses_names_that_resolve_to_private_addresses(
    server: ImageServer,
) -> None:
    dns = MapResolver(
        {
            "cdn.test": ["127.0.0.1"],
            "evil.test": ["10.0.0.1"],
            "meta.test": ["169.254.169.254", "fe80::1"],
            "mixed.test": ["10.0.0.1", "127.0.0.1"],
        }
    )
    server.add_redirect("/redirect/evil", f"http://evil.test:{server.port}/img/photo.jpg")
    async with create_session(allowed_networks=["127.0.0.1/32"], resolver=dns) as guarded:
        # The Downloader's own per-hop check is off: the resolver alone must hold the line.
        downloader = Downloader(guarded, allow_private=True, sleep=RecordingSleep())
        port = server.port
        assert await downloader.fetch(f"http://cdn.test:{port}/img/photo.jpg")
        assert await downloader.fetch(f"http://mixed.test:{port}/img/photo.jpg")
        for url in (
            f"http://evil.test:{port}/img/photo.jpg",
            f"http://meta.test:{port}/img/photo.jpg",
            f"http://cdn.test:{port}/redirect/evil",
        ):
            err = await reason_of(downloader, url)
            assert err.reason == "private_address"
    assert server.hits["/img/photo.jpg"] == 2
    assert server.hits["/redirect/evil"] == 1
    assert "evil.test" in dns.asked


async def test_guarded_session_refuses_ip_literals_on_its_own(server: ImageServer) -> None:
    # aiohttp skips the resolver for IP literals; the session's request hook covers them, for
    # a Downloader configured too loosely and for any other user of the session.
    async with create_session() as guarded:
        loose = Downloader(guarded, allow_private=True)
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "[::1]"):
            err = await reason_of(loose, f"http://{host}:{server.port}/img/photo.jpg")
            assert err.reason == "private_address"
        with pytest.raises(aiohttp.ClientError) as err:
            async with guarded.get(server.url("/img/photo.jpg")):
                pass
        assert isinstance(err.value, PrivateAddressError)
    assert server.hits["/img/photo.jpg"] == 0


async def test_public_address_resolver_filters_and_refuses() -> None:
    dns = MapResolver({"a.test": ["10.0.0.1", "93.184.216.34"], "b.test": ["::1", "127.0.0.1"]})
    resolver = PublicAddressResolver(dns, AddressPolicy())
    assert [r["host"] for r in await resolver.resolve("a.test", 80)] == ["93.184.216.34"]
    with pytest.raises(PrivateAddressError):
        await resolver.resolve("b.test", 80)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:db8::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


# --- fan-out ----------------------------------------------------------------------------------


async def test_fetch_many_bounds_concurrency_and_reports_everything(
    server: ImageServer, make_downloader: Callable[..., Downloader]
) -> None:
    photo = server.content["/img/photo.jpg"]

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.03)
        return web.Response(body=photo, content_type="image/jpeg")

    for i in range(20):
        server.add_handler(f"/many/{i}", slowish)
    requests = [
        FetchRequest(server.url(f"/many/{i}"), must_be_image=True, key=i) for i in range(20)
    ]
    requests.append(FetchRequest(server.url("/status/404"), key="gone"))
    requests.append(
        FetchRequest(
            server.url("/status/410"), fallback_urls=(server.url("/img/pic.png"),), key="fb"
        )
    )
    results: dict[object, bytes | DownloadError] = {}

    async def on_result(request: FetchRequest, result: bytes | DownloadError) -> None:
        results[request.key] = result

    await make_downloader(concurrency=4).fetch_many(requests, on_result)
    assert server.max_in_flight <= 4
    assert len(results) == 22
    assert all(results[i] == photo for i in range(20))
    gone = results["gone"]
    assert isinstance(gone, DownloadError) and gone.reason == "http_404"
    assert results["fb"] == server.content["/img/pic.png"]


async def test_fetch_many_accepts_async_iterables(
    server: ImageServer, downloader: Downloader
) -> None:
    async def requests() -> AsyncIterator[FetchRequest]:
        for path in ("/img/photo.jpg", "/img/pic.png"):
            yield FetchRequest(server.url(path), key=path)

    seen: list[object] = []

    async def on_result(request: FetchRequest, result: bytes | DownloadError) -> None:
        seen.append(request.key)

    await downloader.fetch_many(requests(), on_result)
    assert sorted(seen) == ["/img/photo.jpg", "/img/pic.png"]  # type: ignore[type-var]


async def test_fetch_many_callback_failure_cancels_the_rest(
    server: ImageServer, make_downloader: Callable[..., Downloader]
) -> None:
    async def on_result(request: FetchRequest, result: bytes | DownloadError) -> None:
        if request.key == 0:
            raise RuntimeError("store is broken")
        await asyncio.sleep(5)  # would make the test slow if not cancelled

    requests = [FetchRequest(server.url("/img/photo.jpg"), key=i) for i in range(10)]
    with pytest.raises(ExceptionGroup) as group:
        await make_downloader(concurrency=2).fetch_many(requests, on_result, max_pending=3)
    assert group.group_contains(RuntimeError)
    # Bounded pending work: the failure stopped the rest before most were even requested.
    assert server.hits["/img/photo.jpg"] < len(requests)
