"""The HTTP downloader: one guarded aiohttp session, bounded retries, byte caps and early sniffing.

Every failure is a ``DownloadError(url, reason, detail)`` whose ``url`` is the URL the caller
asked for (the detail names the redirect hop or fallback when that is where it failed) and whose
``reason`` is one of:

- ``http_404``: the server says the file does not exist. Not retried.
- ``http_410``: the server says the file is gone for good. Not retried.
- ``http_4xx``: any other refusal (401, 403, 451...) or an unexpected 1xx/3xx. Not retried.
- ``http_429``: rate limited on every attempt (``Retry-After`` honoured). Retried.
- ``http_5xx``: a server error on every attempt (``Retry-After`` honoured). Retried.
- ``timeout``: no complete response within the session's timeout, every attempt, or the
  URL's whole deadline (``deadline_s``) is spent. Retried while the deadline allows.
- ``connection``: refused/reset connection, temporary DNS failure, broken body. Retried.
- ``unknown_host``: DNS says the name does not exist. Not retried.
- ``tls``: the TLS handshake failed (bad certificate, not a TLS server...). Not retried.
- ``bad_response``: the server's answer is not valid HTTP (headers over aiohttp's 8 KB
  line limit, a garbled status line). Not retried.
- ``too_large``: Content-Length, or the bytes actually received, exceed ``max_bytes``.
- ``not_image``: ``must_be_image`` and the first bytes are no image format (or no bytes at all).
- ``private_address``: the host is, or resolves only to, a loopback/private/link-local/
  multicast/reserved/unspecified address (IPv4-mapped and embedded IPv6 unwrapped).
- ``bad_url``: not an absolute http(s) URL, or a redirect without a usable Location.
- ``too_many_redirects``: more than ``max_redirects`` hops.

Retries are for what can succeed on a second try (a busy or restarting server, a dropped
connection); each URL has a total ``deadline_s`` over all its attempts and backoff waits, so a
server that drips a byte now and then cannot hold it for ``retries`` × the session timeout.
A retry whose wait would overrun the deadline is not made.

The private-address guard has three layers, all off with ``allow_private``: the session's
resolver drops refused addresses of every name it resolves (redirects and DNS rebinding
included); a session hook refuses IP-literal hosts, which aiohttp connects to unresolved; and
the Downloader follows redirects itself, checking scheme and host of every hop.

Usage: create one session per process with :func:`create_session` at the edge, wrap it in one
:class:`Downloader`, and call :meth:`Downloader.fetch` from as many tasks as you like (the
downloader's semaphore bounds concurrent requests; tasks waiting out a backoff hold no slot).
:meth:`Downloader.fetch_many` is a ready-made ``TaskGroup`` fan-out for callers without their own.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from ingest.errors import DownloadError
from ingest.images import describe_prefix, sniff_image_prefix

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MiB = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SNIFF_BYTES = 32  # enough for every signature sniff_image_prefix knows (ftyp brands need 16+)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# --- the private-address guard ----------------------------------------------------------------


class PrivateAddressError(aiohttp.ClientOSError):
    """The target host is, or resolves only to, addresses the policy refuses.

    An ``OSError`` so that, raised in the resolver, aiohttp wraps it like any DNS failure
    (``ClientConnectorError.os_error``); a ``ClientError`` so other users of the session catch it.
    """

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        self.host = host
        self.addresses = tuple(addresses)
        if list(self.addresses) == [host]:
            super().__init__(f"{host} is not a public address")
        else:
            super().__init__(
                f"{host} resolves only to non-public addresses: {', '.join(addresses)}"
            )


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address (mapped/embedded IPv4 unwrapped)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip.teredo is not None:
            return is_public_address(ip.teredo[1])
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses the downloader may connect to.

    ``allowed_networks`` are exceptions to the public-only rule (a LAN mirror you trust, or the
    loopback test server); with ``allow_private`` everything is allowed.
    """

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(cls, allow_private: bool, allowed_networks: Iterable[str] = ()) -> AddressPolicy:
        return cls(allow_private, tuple(ipaddress.ip_network(n) for n in allowed_networks))

    def is_allowed(self, ip: IPAddress) -> bool:
        if self.allow_private or is_public_address(ip):
            return True
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)


class PublicAddressResolver(AbstractResolver):
    """Wraps a resolver and drops every address the policy refuses.

    Sitting in the connector, it sees the address of every connection the session opens —
    redirect hops included — and the checked address is the one connected to, so a DNS answer
    that changes between a check and the connect (DNS rebinding) cannot slip through.
    """

    def __init__(self, inner: AbstractResolver, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.is_allowed(_ip_of(r["host"]))]
        if not allowed:
            raise PrivateAddressError(host, [r["host"] for r in results])
        if len(allowed) < len(results):
            log.debug("dropped non-public addresses of %s", host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _ip_of(host: str) -> IPAddress:
    return ipaddress.ip_address(host.split("%", 1)[0])


def _literal_guard(policy: AddressPolicy) -> aiohttp.TraceConfig:
    """A trace hook refusing IP-literal hosts, which aiohttp connects to without resolving.

    It sees each request a session starts (so each hop of the Downloader's hand-followed
    redirects); for other users of the session it is a backstop, not a redirect check.
    """

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: object,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        host = params.url.host
        if not host:
            return
        try:
            ip = _ip_of(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not policy.is_allowed(ip):
            raise PrivateAddressError(host, [str(ip)])

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace


def create_session(
    *,
    concurrency: int = 8,
    timeout_s: float = 30.0,
    allow_private: bool = False,
    user_agent: str = "memetag/0.1",
    limit_per_host: int | None = None,
    allowed_networks: Sequence[str] = (),
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The process's one HTTP session, with the private-address guard in its connector.

    Call it from async code (at the edge, e.g. ``async with create_session() as session``) and
    pass the same ``allow_private``/``allowed_networks`` to :class:`Downloader`.

    Args:
        concurrency: connection-pool size.
        timeout_s: per-request limit for the whole exchange, body included.
        limit_per_host: defaults to ``concurrency``: most chat images come from one CDN host.
        allowed_networks: CIDR exceptions to the public-only rule, e.g. ``("192.168.1.5/32",)``.
        resolver: the name resolver to wrap (default aiohttp's ``DefaultResolver``).
    """
    policy = AddressPolicy.build(allow_private, allowed_networks)
    if resolver is None:
        resolver = DefaultResolver()
    if not allow_private:
        resolver = PublicAddressResolver(resolver, policy)
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=limit_per_host or concurrency,
        resolver=resolver,
    )
    timeout = aiohttp.ClientTimeout(
        total=timeout_s, sock_connect=min(timeout_s, 10.0), sock_read=min(timeout_s, 15.0)
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": user_agent},
        trust_env=False,  # no proxy from the environment: the guard must see the real target
        trace_configs=[] if allow_private else [_literal_guard(policy)],
    )


# --- the downloader ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    """One URL for :meth:`Downloader.fetch_many`; ``key`` is the caller's handle (a post id)."""

    url: str
    fallback_urls: tuple[str, ...] = ()
    must_be_image: bool = False
    key: Hashable = None


OnResult = Callable[[FetchRequest, bytes | DownloadError], Awaitable[None]]


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; becomes a DownloadError when retries run out."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class Downloader:
    """Fetches URLs through an injected session with retries, caps and the address guard.

    Args:
        session: from :func:`create_session`; the downloader never closes it.
        concurrency: requests in flight at once (a task sleeping between retries holds none).
        retries: extra attempts after the first for retryable failures (so 5 tries by default).
        deadline_s: most seconds spent on one URL, all its attempts and backoff waits together
            (time spent queueing for a concurrency slot does not count); None for no limit.
        backoff_base, backoff_max: full-jitter exponential backoff, in seconds; ``Retry-After``
            replaces it when the server sends one, capped at ``backoff_max``.
        max_bytes: body cap, checked against Content-Length and while streaming.
        sleep, clock, rng: injectable for tests.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        concurrency: int = 8,
        retries: int = 4,
        deadline_s: float | None = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_bytes: int = 25 * MiB,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        max_redirects: int = 5,
        chunk_size: int = 64 * 1024,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.retries = retries
        self.deadline_s = deadline_s
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._policy = AddressPolicy.build(allow_private, allowed_networks)
        self._chunk_size = chunk_size
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    async def fetch(
        self, url: str, *, must_be_image: bool = False, fallback_urls: Iterable[str] = ()
    ) -> bytes:
        """The body of ``url``, or of the first fallback that works when ``url`` fails for good.

        Fallbacks are tried, in order, after the main URL has failed for any reason (retries
        exhausted included). With ``must_be_image`` the stream is abandoned as soon as its first
        bytes are not an image, and an empty body counts as not an image.

        Raises:
            DownloadError: for the main URL, with its reason; the detail lists the fallbacks'.
        """
        try:
            return await self._fetch_retrying(url, must_be_image)
        except DownloadError as main_error:
            failed: list[DownloadError] = []
            for fallback in fallback_urls:
                try:
                    data = await self._fetch_retrying(fallback, must_be_image)
                except DownloadError as exc:
                    failed.append(exc)
                    continue
                log.info("%s failed (%s); used fallback %s", url, main_error.reason, fallback)
                return data
            if not failed:
                raise
            tried = "; ".join(f"fallback {e.url}: {e.reason}" for e in failed)
            detail = f"{main_error.detail}; {tried}" if main_error.detail else tried
            raise DownloadError(url, main_error.reason, detail) from failed[-1]

    async def fetch_many(
        self,
        requests: Iterable[FetchRequest] | AsyncIterable[FetchRequest],
        on_result: OnResult,
        *,
        max_pending: int | None = None,
    ) -> None:
        """Fetch every request with bounded concurrency, handing each outcome to ``on_result``.

        ``on_result(request, data_or_error)`` is awaited once per request, with the bytes or the
        ``DownloadError``. Tasks are created lazily (at most ``max_pending``, default four times
        ``concurrency``, exist at once), so a huge iterable costs no memory up front. If
        ``on_result`` raises, the remaining fetches are cancelled and the error propagates
        inside an ``ExceptionGroup`` (``asyncio.TaskGroup`` semantics).
        """
        window = asyncio.Semaphore(max_pending or 4 * self.concurrency)

        async def one(request: FetchRequest) -> None:
            try:
                try:
                    result: bytes | DownloadError = await self.fetch(
                        request.url,
                        must_be_image=request.must_be_image,
                        fallback_urls=request.fallback_urls,
                    )
                except DownloadError as exc:
                    result = exc
                await on_result(request, result)
            finally:
                window.release()

        async with asyncio.TaskGroup() as tg:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    await window.acquire()
                    tg.create_task(one(request))
            else:
                for request in requests:
                    await window.acquire()
                    tg.create_task(one(request))

    # -- internals ----------------------------------------------------------------------------

    async def _fetch_retrying(self, url: str, must_be_image: bool) -> bytes:
        loop = asyncio.get_running_loop()
        left = self.deadline_s  # seconds of this URL's deadline not yet spent
        attempt = 0
        while True:
            tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
            try:
                async with self._semaphore:
                    started = loop.time()
                    try:
                        async with asyncio.timeout(left) as budget:
                            return await self._fetch_once(url, must_be_image)
                    except TimeoutError:
                        if not budget.expired():
                            raise
                        raise DownloadError(
                            url, "timeout", f"gave up at the {self.deadline_s}s deadline ({tries})"
                        ) from None
                    finally:
                        if left is not None:
                            left -= loop.time() - started
            except _Retryable as exc:
                if attempt >= self.retries:
                    raise DownloadError(url, exc.reason, f"{exc.detail} ({tries})") from None
                delay = self._backoff(attempt, exc.retry_after)
                if left is not None and delay >= left:
                    raise DownloadError(
                        url,
                        exc.reason,
                        f"{exc.detail} ({tries}; no time left for another before the "
                        f"{self.deadline_s}s deadline)",
                    ) from None
                log.debug(
                    "%s: %s (%s); retry %d/%d in %.2fs",
                    url, exc.reason, exc.detail, attempt + 1, self.retries, delay,
                )  # fmt: skip
                await self._sleep(delay)
                if left is not None:
                    left -= delay
                attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        return self._rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))

    async def _fetch_once(self, url: str, must_be_image: bool) -> bytes:
        """One attempt: follow redirects by hand, checking every hop, then stream the body."""
        target = self._checked_url(url, url)
        for _ in range(self.max_redirects + 1):
            where = "" if str(target) == url else f" (at {target})"
            try:
                async with self._session.get(target, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS:
                        location = resp.headers.get("Location", "").strip()
                        if not location:
                            raise DownloadError(url, "bad_url", f"redirect without Location{where}")
                        try:
                            next_url = str(target.join(URL(location)))
                        except ValueError as exc:
                            raise DownloadError(
                                url, "bad_url", f"bad redirect Location {location!r}: {exc}"
                            ) from None
                        target = self._checked_url(next_url, url)
                        continue
                    self._check_status(resp, url, where)
                    return await self._read_body(resp, url, must_be_image, where)
            except (DownloadError, _Retryable):
                raise
            except TimeoutError:
                # Before ClientError: aiohttp's timeout errors are both.
                limit = self._session.timeout.total
                raise _Retryable("timeout", f"no complete response in {limit}s{where}") from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, PrivateAddressError):  # from the session's resolver
                    raise DownloadError(url, "private_address", f"{exc.os_error}{where}") from None
                if isinstance(exc, aiohttp.ClientSSLError) or isinstance(
                    exc.os_error, ssl.SSLError
                ):
                    # A bad certificate or a server that speaks no TLS: the same next time.
                    raise DownloadError(url, "tls", f"{exc}{where}") from None
                if _is_unknown_host(exc):
                    raise DownloadError(url, "unknown_host", f"{exc}{where}") from None
                raise _Retryable("connection", f"{exc}{where}") from None
            except PrivateAddressError as exc:  # from the session's IP-literal hook
                raise DownloadError(url, "private_address", f"{exc}{where}") from None
            except aiohttp.InvalidURL as exc:
                raise DownloadError(url, "bad_url", f"{exc}{where}") from None
            except aiohttp.ClientResponseError as exc:
                # aiohttp could not parse the answer (headers over its 8 KB line limit, a
                # garbled status line): asking again gets the same answer.
                raise DownloadError(url, "bad_response", f"{exc.message}{where}") from None
            except aiohttp.ClientError as exc:
                raise _Retryable("connection", f"{type(exc).__name__}: {exc}{where}") from None
        raise DownloadError(url, "too_many_redirects", f"more than {self.max_redirects} redirects")

    def _checked_url(self, candidate: str, url: str) -> URL:
        """Parse one hop's URL and refuse bad schemes and refused literal/local hosts."""
        hop = "" if candidate == url else f" (redirect to {candidate})"
        try:
            parsed = URL(candidate)
        except (ValueError, TypeError) as exc:
            raise DownloadError(url, "bad_url", f"{exc}{hop}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise DownloadError(url, "bad_url", f"not an absolute http(s) URL{hop}")
        host = parsed.host.rstrip(".").lower()
        if self._policy.allow_private:
            return parsed
        try:
            ip = _ip_of(host)
        except ValueError:
            # A name: the session's PublicAddressResolver checks what it resolves to. "localhost"
            # is refused here too, in case the session was built without the guard.
            if host == "localhost" or host.endswith(".localhost"):
                raise DownloadError(url, "private_address", f"{host} is local{hop}") from None
            return parsed
        if not self._policy.is_allowed(ip):
            raise DownloadError(url, "private_address", f"{ip} is not a public address{hop}")
        return parsed

    def _check_status(self, resp: aiohttp.ClientResponse, url: str, where: str) -> None:
        status = resp.status
        if 200 <= status < 300:
            return
        detail = f"HTTP {status} {resp.reason or ''}".rstrip() + where
        if status == 404:
            raise DownloadError(url, "http_404", detail)
        if status == 410:
            raise DownloadError(url, "http_410", detail)
        if status == 429 or status >= 500:
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"), self._clock())
            raise _Retryable("http_429" if status == 429 else "http_5xx", detail, retry_after)
        raise DownloadError(url, "http_4xx", detail)

    async def _read_body(
        self, resp: aiohttp.ClientResponse, url: str, must_be_image: bool, where: str
    ) -> bytes:
        length = resp.content_length
        if length is not None and length > self.max_bytes:
            raise DownloadError(
                url, "too_large", f"Content-Length {length} > {self.max_bytes} bytes{where}"
            )
        body = bytearray()
        sniffed = not must_be_image
        async for chunk in resp.content.iter_chunked(self._chunk_size):
            body += chunk
            if len(body) > self.max_bytes:
                # Leaving the response context unread closes the connection: the rest never comes.
                raise DownloadError(
                    url, "too_large", f"more than {self.max_bytes} bytes, aborted{where}"
                )
            if not sniffed and len(body) >= _SNIFF_BYTES:
                sniffed = True
                self._check_sniff(body, url, where)
        if not sniffed:
            if not body:
                raise DownloadError(url, "not_image", f"empty body{where}")
            self._check_sniff(body, url, where)
        return bytes(body)

    @staticmethod
    def _check_sniff(body: bytearray, url: str, where: str) -> None:
        head = bytes(body[:512])
        if not sniff_image_prefix(head):
            raise DownloadError(url, "not_image", f"{describe_prefix(head)}{where}")


# getaddrinfo's "no such name" answers (EAI_AGAIN, a DNS server that did not answer, is retried)
_NO_SUCH_HOST = frozenset(
    code
    for code in (getattr(socket, n, None) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY"))
    if code is not None
)


def _is_unknown_host(exc: aiohttp.ClientConnectorError) -> bool:
    """DNS answered that the name does not exist (not: it could not be asked right now)."""
    os_error = exc.os_error
    return (
        isinstance(exc, aiohttp.ClientConnectorDNSError)
        and isinstance(os_error, socket.gaierror)
        and os_error.errno in _NO_SUCH_HOST
    )


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - now, 0.0)
