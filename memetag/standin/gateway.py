"""The stand-in's gateway websocket: HELLO, heartbeats, IDENTIFY, RESUME, member chunks and dispatch.

Each IDENTIFY opens a session. Every dispatch gets the session's next sequence number and is kept
in the session's log, whether or not a connection is attached; a client that RESUMEs gets the
events after the sequence number it last saw, as Discord replays them. Frames are TEXT, or
``zlib-stream`` binary frames when the client asks for them and compression is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from memetag.standin import payloads

if TYPE_CHECKING:
    from memetag.standin.server import StandinDiscord

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_EXPRESSIONS = 1 << 3
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15
PRIVILEGED = {
    "members": GUILD_MEMBERS,
    "presences": GUILD_PRESENCES,
    "message_content": MESSAGE_CONTENT,
}

# The intent each event needs, as (guild intent, DM intent). None: always sent.
EVENT_INTENTS: dict[str, tuple[int, int] | None] = {
    "READY": None,
    "RESUMED": None,
    "INTERACTION_CREATE": None,
    "GUILD_CREATE": (GUILDS, GUILDS),
    "GUILD_DELETE": (GUILDS, GUILDS),
    "GUILD_ROLE_CREATE": (GUILDS, GUILDS),
    "GUILD_ROLE_UPDATE": (GUILDS, GUILDS),
    "CHANNEL_CREATE": (GUILDS, GUILDS),
    "CHANNEL_UPDATE": (GUILDS, GUILDS),
    "THREAD_CREATE": (GUILDS, GUILDS),
    "THREAD_UPDATE": (GUILDS, GUILDS),
    "GUILD_MEMBER_ADD": (GUILD_MEMBERS, GUILD_MEMBERS),
    "GUILD_MEMBER_UPDATE": (GUILD_MEMBERS, GUILD_MEMBERS),
    "GUILD_MEMBER_REMOVE": (GUILD_MEMBERS, GUILD_MEMBERS),
    "GUILD_EMOJIS_UPDATE": (GUILD_EXPRESSIONS, GUILD_EXPRESSIONS),
    "MESSAGE_CREATE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_DELETE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_DELETE_BULK": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE_ALL": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE_EMOJI": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
}
SYNC_EVENT = "STANDIN_SYNC"
_CONTENT_KEYS = ("content", "embeds", "attachments", "components", "poll")


class Connection:
    """One websocket. Sends are serialised so zlib-stream frames reach the client in order."""

    def __init__(self, ws: web.WebSocketResponse, *, compress: bool) -> None:
        self.ws = ws
        self._compressor = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    @property
    def compressed(self) -> bool:
        return self._compressor is not None

    async def send_text(self, text: str) -> bool:
        """Send one gateway payload; False when the socket is already gone."""
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._compressor is not None:
                    raw = text.encode()
                    frame = self._compressor.compress(raw) + self._compressor.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
            return True


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    log: list[tuple[int, str]] = field(default_factory=list)
    connection: Connection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, event: str, data: dict[str, Any]) -> int:
        async with self.lock:
            self.seq += 1
            text = json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
            self.log.append((self.seq, text))
            if self.connection is not None and not await self.connection.send_text(text):
                self.connection = None
            return self.seq


class Gateway:
    """Accepts gateway websockets for one bot application."""

    def __init__(
        self,
        discord: StandinDiscord,
        *,
        zlib_stream: bool,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
    ) -> None:
        self._discord = discord
        self.zlib_stream = zlib_stream
        self.heartbeat_interval_ms = heartbeat_interval_ms
        # When each heartbeat arrived (loop time): a client whose event loop is blocked sends
        # them late, since discord.py's heartbeat thread hands each one to the loop.
        self.heartbeat_times: list[float] = []
        # (event, the payload's "id", time.monotonic() once its frame was written) for every
        # dispatch written to a live connection: the start of a benchmark's latency.
        self.sent_times: list[tuple[str, str | None, float]] = []
        self._heartbeat_waiters: list[asyncio.Future[float]] = []
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.connect_count = 0
        self.chunk_requests: list[dict[str, Any]] = []
        self.queries: list[dict[str, str]] = []
        self._hello = asyncio.Event()
        self._hello.set()

    # -- state ------------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The most recent session (the bot's), or None before IDENTIFY."""
        return next(reversed(self.sessions.values()), None)

    @property
    def intents(self) -> int | None:
        session = self.session
        return None if session is None else session.intents

    @property
    def connected(self) -> bool:
        session = self.session
        return session is not None and session.connection is not None

    # -- dispatch ---------------------------------------------------------------------------

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        dm: bool = False,
        shape: Callable[[Session, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        """Send an event to every session whose intents cover it.

        The payload is snapshotted as JSON at this moment, so later edits to the stand-in's
        records never change what a RESUME replays.
        """
        needed = EVENT_INTENTS.get(event)
        snapshot = json.dumps(data)
        for session in list(self.sessions.values()):
            if needed is not None and not session.intents & needed[1 if dm else 0]:
                continue
            payload = json.loads(snapshot)
            if shape is not None:
                payload = shape(session, payload)
                if payload is None:
                    continue
            live = session.connection is not None
            await session.send(event, payload)
            if live and session.connection is not None:
                self.sent_times.append((event, payload.get("id"), time.monotonic()))

    @staticmethod
    def strip_content(payload: dict[str, Any]) -> dict[str, Any]:
        """What Discord sends for a message when the bot lacks the MESSAGE_CONTENT intent."""
        for key in _CONTENT_KEYS:
            if key in payload:
                payload[key] = "" if key == "content" else []
        payload.pop("poll", None)
        return payload

    # -- controls used by the driver ---------------------------------------------------------

    async def close_connections(self, code: int = 4000, message: str = "") -> None:
        for connection in list(self.connections):
            await connection.ws.close(code=code, message=message.encode())

    def hold_hello(self) -> None:
        self._hello.clear()

    def release_hello(self) -> None:
        self._hello.set()

    async def send_op(self, op: int, data: Any = None) -> None:
        for connection in list(self.connections):
            await connection.send_text(json.dumps({"op": op, "d": data}))

    async def request_heartbeat(self, timeout: float = 10.0) -> float | None:
        """Ask the bot for a heartbeat now (op 1, as Discord may) and time its answer.

        Returns the seconds from writing the request to reading the bot's heartbeat, or None
        with no connection or no answer within ``timeout``. The client answers from its
        event loop after every frame sent before, so this is the gateway's view of how long a
        busy bot takes to answer; a heartbeat the client sends on its own schedule in between
        would be taken for the answer, so keep the interval long while probing.
        """
        session = self.session
        connection = session.connection if session is not None else None
        if connection is None:
            return None
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._heartbeat_waiters.append(waiter)
        sent = time.monotonic()  # before the write (and its lock): never too short
        try:
            if not await connection.send_text('{"op":1,"d":null}'):
                return None
            received = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            if waiter in self._heartbeat_waiters:
                self._heartbeat_waiters.remove(waiter)
        return received - sent

    async def send_sync(self) -> Connection | None:
        """Send the sync sentinel on the bot's connection; returns that connection, if any.

        It is an unknown event to discord.py, so no parser runs, but the client still reports
        its name through ``on_socket_event_type`` after parsing every earlier frame. It carries
        no sequence number, so it never shifts the client's resume point.
        """
        session = self.session
        connection = session.connection if session is not None else None
        if connection is None:
            return None
        async with session.lock:
            frame = json.dumps({"op": 0, "t": SYNC_EVENT, "s": None, "d": {}})
            if not await connection.send_text(frame):
                return None
        return connection

    async def shutdown(self) -> None:
        self._hello.set()
        await self.close_connections(code=1001, message="stand-in shutting down")

    # -- the websocket handler --------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a websocket upgrade")
        await ws.prepare(request)
        self.connect_count += 1
        self.queries.append(dict(request.query))
        compress = self.zlib_stream and request.query.get("compress") == "zlib-stream"
        connection = Connection(ws, compress=compress)
        self.connections.add(connection)
        try:
            await self._hello.wait()
            hello = {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            await connection.send_text(json.dumps(hello))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    payload = json.loads(msg.data.decode())
                else:
                    break
                await self._handle_op(connection, payload)
        except Exception as exc:  # a stand-in bug: make the test fail loudly
            self._discord.report_failure(exc)
            raise
        finally:
            self.connections.discard(connection)
            for session in self.sessions.values():
                if session.connection is connection:
                    session.connection = None
            self._discord.notify()
        return ws

    async def _handle_op(self, connection: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            self.heartbeat_count += 1
            self.heartbeat_times.append(asyncio.get_running_loop().time())
            received = time.monotonic()
            for waiter in self._heartbeat_waiters:
                if not waiter.done():
                    waiter.set_result(received)
            self._heartbeat_waiters.clear()
            await connection.send_text('{"op":11}')
        elif op == 2:
            await self._identify(connection, data)
        elif op == 6:
            await self._resume(connection, data)
        elif op == 8:
            await self._request_members(connection, data)
        elif op in (3, 4):  # presence and voice state updates: accepted, nothing to do
            pass
        else:
            await connection.ws.close(code=4001, message=b"Unknown opcode")

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> None:
        discord = self._discord
        if any(s.connection is connection for s in self.sessions.values()):
            await connection.ws.close(code=4005, message=b"Already authenticated")
            return
        if data.get("token") != discord.token:
            await connection.ws.close(code=4004, message=b"Authentication failed")
            return
        intents = int(data.get("intents", 0))
        for name, bit in PRIVILEGED.items():
            if intents & bit and name not in discord.privileged_intents:
                await connection.ws.close(code=4014, message=b"Disallowed intent(s)")
                return
        self.identify_count += 1
        # A fresh IDENTIFY replaces every earlier session, as a new login does.
        for old in self.sessions.values():
            old.connection = None
        self.sessions.clear()
        session = Session(id=secrets.token_hex(16), intents=intents, identify=data)
        self.sessions[session.id] = session
        session.connection = connection
        discord.connection_changed()
        await session.send("READY", discord.ready_payload(session.id))
        for guild in discord.bot_guilds():
            if intents & GUILDS:
                await session.send("GUILD_CREATE", discord.guild_create_payload(guild))
        discord.notify()

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or data.get("token") != self._discord.token:
            await connection.send_text(json.dumps({"op": 9, "d": False}))
            return
        self.resume_count += 1
        last_seen = int(data.get("seq") or 0)
        async with session.lock:
            session.connection = connection
            self._discord.connection_changed()
            for seq, text in session.log:
                if seq > last_seen and not await connection.send_text(text):
                    session.connection = None
                    return
        await session.send("RESUMED", {})
        self._discord.notify()

    async def _request_members(self, connection: Connection, data: dict[str, Any]) -> None:
        discord = self._discord
        self.chunk_requests.append(data)
        guild = discord.guilds.get(int(data["guild_id"]))
        session = next((s for s in self.sessions.values() if s.connection is connection), None)
        if guild is None or session is None:
            return
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        else:
            query = (data.get("query") or "").lower()
            members = [m for m in members if m.user.name.lower().startswith(query)]
            limit = int(data.get("limit") or 0)
            if limit:
                members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [payloads.member(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await session.send("GUILD_MEMBERS_CHUNK", chunk)
