"""StandinDiscord: a stateful local Discord (REST + gateway + CDN) and the driver API tests use.

The real discord.py client talks to it over 127.0.0.1 after :meth:`StandinDiscord.patch_client`
swaps two URL constants. Test code plays the humans: ``post_message``, ``add_reaction``,
``invoke_slash``, ``click_button``... each stores what Discord would store and dispatches the
gateway event Discord would send. What the bot did is read back from the same records
(``messages_in``, ``reactions_on``, ``interaction_responses``, ``requests``) and awaited with
``wait_for``, which wakes on every change instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import io
import mimetypes
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import discord
import yarl
from aiohttp import web

from memetag.standin import payloads
from memetag.standin.gateway import MESSAGE_CONTENT, Gateway, Session
from memetag.standin.model import (
    ADD_REACTIONS,
    ALL_PERMISSIONS,
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DM,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    SEND_IN_THREADS,
    SEND_MESSAGES,
    TEXT,
    VIEW_CHANNEL,
    Attachment,
    Channel,
    CustomEmoji,
    Guild,
    Interaction,
    InteractionCallback,
    Member,
    Message,
    Overwrite,
    ReactionEmoji,
    Role,
    Snowflakes,
    User,
    as_permissions,
    channel_permissions,
    find_component,
    iso,
    iter_components,
)
from memetag.standin.ratelimits import RateLimits
from memetag.standin.rest import IN_REST, FailureRule, RecordedRequest, RestApi, form_error

T = TypeVar("T")
AttachmentSpec = tuple[str, bytes] | tuple[str, bytes, bool]
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
# Application command option types.
_SUB_COMMAND, _SUB_GROUP = 1, 2
_STRING, _INTEGER, _BOOLEAN, _USER, _CHANNEL, _ROLE, _MENTIONABLE, _NUMBER, _ATTACHMENT = range(
    3, 12
)


class StandinError(Exception):
    """A driver call asked for something a Discord user could not do (the test is wrong)."""


class StandinFailure(AssertionError):
    """The bot or the stand-in failed while a test waited (see ``StandinDiscord.failures``)."""


@contextlib.contextmanager
def patched_client(base_url: str) -> Iterator[None]:
    """Point discord.py (REST, webhooks, interactions, gateway, assets) at the stand-in serving
    ``base_url`` (``http://127.0.0.1:<port>``), for the duration of the block."""
    saved = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    discord.http.Route.BASE = f"{base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base_url.replace("http://", "ws://", 1) + "/"
    )
    discord.asset.Asset.BASE = f"{base_url}/cdn"
    try:
        yield
    finally:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = saved


class StandinDiscord:
    """A local Discord for one bot application. Build with :meth:`start` (an async context manager).

    Args:
        token: the bot token the client must log in with.
        bot_name: the bot user's name (its id doubles as the application id, as on Discord).
        guild_name, channel_name: the default guild and its first text channel.
        member_list: ``"all"`` lists every member in GUILD_CREATE (``member_count`` equals the
            list, so discord.py never requests chunks); ``"bot"`` lists only the bot, as real
            Discord does, and answers op 8 member requests.
        privileged_intents: privileged intents enabled for the application; asking for others
            closes the gateway with 4014, as Discord does.
        zlib_stream: answer with zlib-stream binary frames when the client asks (it always does).
        heartbeat_interval_ms: the interval HELLO asks for (Discord: about 41 s); a short one
            lets a test watch the client's heartbeats while it works.
        interaction_deadline: seconds within which an interaction must be answered (Discord: 3),
            or None for no deadline.
        everyone_permissions, bot_permissions: @everyone's and the bot role's permissions.
    """

    def __init__(
        self,
        *,
        token: str = "standin-token",
        bot_name: str = "memetag",
        guild_name: str = "Stand-in Guild",
        channel_name: str = "general",
        member_list: str = "all",
        privileged_intents: Iterable[str] = ("members", "presences", "message_content"),
        zlib_stream: bool = True,
        heartbeat_interval_ms: int = 41_250,
        interaction_deadline: float | None = 3.0,
        everyone_permissions: int | discord.Permissions = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int | discord.Permissions = DEFAULT_BOT_PERMISSIONS,
    ) -> None:
        if member_list not in ("all", "bot"):
            raise ValueError(f"member_list must be 'all' or 'bot', not {member_list!r}")
        self.token = token
        self.member_list = member_list
        self.privileged_intents = set(privileged_intents)
        self.interaction_deadline = interaction_deadline
        self._ids = Snowflakes()
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}  # every message, ephemeral and deleted included
        self.attachments: dict[int, Attachment] = {}
        self.hosted: dict[str, tuple[str, bytes, str]] = {}  # key -> (filename, bytes, type)
        self.interactions: dict[int, Interaction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        # Records for assertions.
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self.interaction_responses: list[InteractionCallback] = []
        self.deleted: list[Message] = []
        self.typing: Counter[int] = Counter()
        self.cdn_hits: Counter[int | str] = Counter()
        self.failures: list[BaseException] = []
        self.failure_rules: list[FailureRule] = []
        # Discord's per-route buckets: X-RateLimit-* headers on every API answer, 429 when empty
        self.rate_limits = RateLimits()
        self.dispatched: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self.client_listening = False  # set by running_bot: the client acknowledges syncs
        self._sync_sent = self._sync_acked = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._bot_joined_at = iso(datetime.now(UTC))
        self.gateway = Gateway(
            self, zlib_stream=zlib_stream, heartbeat_interval_ms=heartbeat_interval_ms
        )
        # While set, CDN and external-file downloads wait for it (see hold_downloads).
        self.downloads_open = asyncio.Event()
        self.downloads_open.set()
        self.downloads_waiting = 0
        self.rest = RestApi(self)

        self.bot_user = self._new_user(bot_name, bot=True)
        self.application_id = self.bot_user.id
        self.owner = self._new_user("owner")
        self.guild = self._build_guild(guild_name, self.owner, as_permissions(everyone_permissions))
        self.bot_role = self._build_role(
            self.guild, bot_name, as_permissions(bot_permissions), managed=True
        )
        self.bot_role.bot_id = self.bot_user.id
        self._build_member(self.guild, self.bot_user, [self.bot_role])
        self.channel = self._build_channel(self.guild, channel_name, TEXT)

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, **options: Any) -> AsyncIterator[StandinDiscord]:
        """Serve a new stand-in on 127.0.0.1 (random port) for the duration of the block."""
        standin = cls(**options)
        await standin._serve()
        try:
            yield standin
        finally:
            await standin.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=64 * 1024**2)
        app.router.add_get("/", self.gateway.handle)
        self.rest.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self.gateway.shutdown()
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @contextlib.contextmanager
    def patch_client(self) -> Iterator[None]:
        """Point discord.py (REST, webhooks, interactions, gateway, assets) at this stand-in.

        The constants are class attributes, so this affects the whole process until the block
        ends; only one stand-in can be patched in at a time.
        """
        with patched_client(self.base_url):
            yield

    # -- change notification and failures --------------------------------------------------

    def notify(self) -> None:
        """Wake every ``wait_for``. The stand-in calls it on each change; tests may too."""
        self._changed.set()
        self._changed = asyncio.Event()

    def report_failure(self, exc: BaseException) -> None:
        """Record an error (a stand-in bug, a crashed client, an exception the bot logged)."""
        self.failures.append(exc)
        self.notify()

    def take_failures(self) -> list[BaseException]:
        """Return and clear the recorded failures, for tests that provoke one on purpose."""
        taken, self.failures = self.failures, []
        return taken

    def check(self) -> None:
        """Raise if anything failed or the bot called a route the stand-in does not serve."""
        if self.failures:
            first = self.failures[0]
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise StandinFailure(f"{first!r}{more}") from first
        if self.unhandled:
            raise StandinFailure(
                f"the bot called routes the stand-in does not serve: {self.unhandled}"
            )

    async def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, *, what: str | None = None
    ) -> T:
        """Wait until ``predicate()`` is truthy and return its value.

        Re-evaluated after every change the stand-in sees (requests, gateway traffic, driver
        calls) and after :meth:`notify`. Raises :class:`StandinFailure` as soon as a failure is
        reported, and AssertionError with the recent requests on timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            self.check()
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(what or _describe(predicate), timeout))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _timeout_report(self, what: str, timeout: float) -> str:
        recent = "\n  ".join(str(r) for r in self.requests[-15:]) or "(none)"
        events = ", ".join(t for t, _ in self.dispatched[-10:]) or "(none)"
        return (
            f"timed out after {timeout}s waiting for {what}\n"
            f"gateway connected: {self.gateway.connected}; last events sent: {events}\n"
            f"last requests:\n  {recent}"
        )

    # -- world building ---------------------------------------------------------------------

    def _new_user(self, name: str, *, bot: bool = False) -> User:
        user = User(self._ids.new(), name, bot=bot)
        self.users[user.id] = user
        return user

    def _build_guild(self, name: str, owner: User, everyone_permissions: int) -> Guild:
        guild = Guild(self._ids.new(), name, owner.id)
        guild.roles[guild.id] = Role(guild.id, guild.id, "@everyone", everyone_permissions)
        self.guilds[guild.id] = guild
        self._build_member(guild, owner, [])
        return guild

    def _build_role(
        self, guild: Guild, name: str, permissions: int, *, managed: bool = False
    ) -> Role:
        role = Role(self._ids.new(), guild.id, name, permissions, len(guild.roles), managed=managed)
        guild.roles[role.id] = role
        return role

    def _build_member(self, guild: Guild, user: User, roles: Sequence[Role]) -> Member:
        member = Member(user, guild, list(roles))
        guild.members[user.id] = member
        return member

    def _build_channel(
        self, guild: Guild | None, name: str, kind: int, *, parent: Channel | None = None
    ) -> Channel:
        channel = Channel(self._ids.new(), kind, name, guild)
        if parent is not None:
            channel.parent_id = parent.id
        if guild is not None:
            channel.position = len(guild.channels)
            guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def bot_guilds(self) -> list[Guild]:
        return [g for g in self.guilds.values() if self.bot_user.id in g.members]

    def find_emoji(self, emoji_id: int) -> CustomEmoji | None:
        for guild in self.bot_guilds():
            if emoji_id in guild.emojis:
                return guild.emojis[emoji_id]
        return None

    async def add_user(self, name: str, *, bot: bool = False) -> User:
        """A Discord account that is in no guild (yet)."""
        return self._new_user(name, bot=bot)

    async def add_member(
        self,
        user: str | User,
        *,
        guild: Guild | None = None,
        roles: Sequence[Role] = (),
        nick: str | None = None,
    ) -> User:
        """Add a user (created by name if a string) to a guild; dispatches GUILD_MEMBER_ADD."""
        guild = guild or self.guild
        if isinstance(user, str):
            user = self._new_user(user)
        if user.id in guild.members:
            raise StandinError(f"{user.name} is already a member of {guild.name}")
        member = self._build_member(guild, user, roles)
        member.nick = nick
        data = payloads.member(member)
        data["guild_id"] = str(guild.id)
        await self._dispatch("GUILD_MEMBER_ADD", data)
        return user

    async def add_role(
        self,
        name: str,
        permissions: int | discord.Permissions = 0,
        *,
        guild: Guild | None = None,
        members: Sequence[User] = (),
    ) -> Role:
        """Create a role and give it to ``members``; dispatches the role and member updates."""
        guild = guild or self.guild
        role = self._build_role(guild, name, as_permissions(permissions))
        await self._dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": payloads.role(role)}
        )
        for user in members:
            await self.give_role(user, role)
        return role

    async def give_role(self, user: User, role: Role) -> None:
        guild = self.guilds[role.guild_id]
        member = guild.members.get(user.id)
        if member is None:
            raise StandinError(f"{user.name} is not a member of {guild.name}")
        if role not in member.roles:
            member.roles.append(role)
            data = payloads.member(member)
            data["guild_id"] = str(guild.id)
            await self._dispatch("GUILD_MEMBER_UPDATE", data)

    async def set_role_permissions(
        self, role: Role, permissions: int | discord.Permissions
    ) -> None:
        role.permissions = as_permissions(permissions)
        await self._dispatch(
            "GUILD_ROLE_UPDATE", {"guild_id": str(role.guild_id), "role": payloads.role(role)}
        )

    async def add_text_channel(self, name: str, *, guild: Guild | None = None) -> Channel:
        guild = guild or self.guild
        channel = self._build_channel(guild, name, TEXT)
        await self._dispatch("CHANNEL_CREATE", payloads.channel(channel))
        return channel

    async def set_overwrite(
        self,
        channel: Channel,
        target: Role | User,
        *,
        allow: int | discord.Permissions = 0,
        deny: int | discord.Permissions = 0,
    ) -> None:
        """Set a channel permission overwrite for a role or a member."""
        kind = 0 if isinstance(target, Role) else 1
        channel.overwrites[target.id] = Overwrite(
            target.id, kind, as_permissions(allow), as_permissions(deny)
        )
        await self._dispatch("CHANNEL_UPDATE", payloads.channel(channel))

    async def add_guild(
        self, name: str, *, owner: User | None = None, with_bot: bool = True
    ) -> Guild:
        """A second guild with a #general channel; the bot joins it unless ``with_bot`` is False."""
        guild = self._build_guild(name, owner or self.owner, DEFAULT_EVERYONE_PERMISSIONS)
        self._build_channel(guild, "general", TEXT)
        if with_bot:
            role = self._build_role(
                guild, self.bot_user.name, DEFAULT_BOT_PERMISSIONS, managed=True
            )
            role.bot_id = self.bot_user.id
            self._build_member(guild, self.bot_user, [role])
            joined = self.guild_create_payload(guild)
            # A join, not an outage ending: without the key discord.py fires on_guild_join.
            del joined["unavailable"]
            await self._dispatch("GUILD_CREATE", joined)
        return guild

    async def add_emoji(
        self, name: str, *, guild: Guild | None = None, animated: bool = False
    ) -> CustomEmoji:
        guild = guild or self.guild
        emoji = CustomEmoji(self._ids.new(), name, guild.id, animated)
        guild.emojis[emoji.id] = emoji
        await self._dispatch(
            "GUILD_EMOJIS_UPDATE",
            {
                "guild_id": str(guild.id),
                "emojis": [payloads.emoji(e) for e in guild.emojis.values()],
            },
        )
        return emoji

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        for channel in self.channels.values():
            if channel.is_dm and user in channel.recipients:
                return channel
        channel = self._build_channel(None, "", DM)
        channel.recipients = [user, self.bot_user]
        return channel

    async def create_thread(
        self,
        channel: Channel,
        name: str,
        *,
        by: User,
        message: Message | None = None,
        private: bool = False,
    ) -> Channel:
        """A member opens a thread (from ``message`` if given); dispatches THREAD_CREATE."""
        self._require_can_post(by, channel)
        kind = PRIVATE_THREAD if private else PUBLIC_THREAD
        return await self.open_thread(channel, name, owner=by, kind=kind, starter=message)

    async def open_thread(
        self,
        parent: Channel,
        name: str,
        *,
        owner: User,
        kind: int,
        starter: Message | None = None,
        auto_archive_duration: int = 1440,
    ) -> Channel:
        assert parent.guild is not None
        thread = Channel(
            starter.id if starter is not None else self._ids.new(), kind, name, parent.guild
        )
        thread.parent_id = parent.id
        thread.owner_id = owner.id
        thread.auto_archive_duration = auto_archive_duration
        thread.thread_member_ids = {owner.id}
        parent.guild.channels[thread.id] = thread
        self.channels[thread.id] = thread
        if starter is not None:
            starter.thread = thread
        data = payloads.channel(thread)
        data["newly_created"] = True
        await self._dispatch("THREAD_CREATE", data)
        return thread

    # -- payloads shared with the gateway and REST ------------------------------------------

    def ready_payload(self, session_id: str) -> dict[str, Any]:
        user = payloads.user(self.bot_user)
        user.update({"verified": True, "mfa_enabled": False, "flags": 0})
        return {
            "v": 10,
            "user": user,
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "session_type": "normal",
            "shard": [0, 1],
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.bot_guilds()],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["standin"],
        }

    def guild_create_payload(self, guild: Guild) -> dict[str, Any]:
        if self.member_list == "all":
            members = list(guild.members.values())
        else:
            members = [guild.members[self.bot_user.id]]
        return payloads.guild_create(guild, members=members, joined_at=self._bot_joined_at)

    def message_payload(self, message: Message, *, for_rest: bool = False) -> dict[str, Any]:
        data = payloads.message(
            message, base_url=self.base_url, me_id=self.bot_user.id, get_user=self.users.get
        )
        if for_rest and "message_content" not in self.privileged_intents:
            if not self._content_always_visible(message):
                self.gateway.strip_content(data)
        return data

    def _content_always_visible(self, message: Message) -> bool:
        """Discord sends content without the intent for DMs, own messages and mentions of the bot."""
        return (
            message.channel.is_dm
            or message.author.id == self.bot_user.id
            or self.bot_user.id in message.mention_user_ids
        )

    async def _dispatch(
        self, event: str, data: dict[str, Any], *, dm: bool = False, shape=None
    ) -> None:
        self.dispatched.append((event, data))
        await self.gateway.dispatch(event, data, dm=dm, shape=shape)
        self.notify()
        if not IN_REST.get():
            await self.sync()

    async def sync(self, timeout: float = 10.0) -> None:
        """Return once the client has parsed every gateway event sent so far.

        Driver calls do this themselves, so after ``await standin.add_text_channel(...)`` the
        bot's caches already hold the channel (its listeners may still be running: wait for
        their effects with :meth:`wait_for`). Needs a bot started with :func:`running_bot`,
        which acknowledges the sentinel; otherwise, or while disconnected, returns at once.
        """
        if not self.client_listening:
            return
        connection = await self.gateway.send_sync()
        if connection is None:
            return
        # Counted once sent: a sync while disconnected sends nothing and awaits no answer.
        self._sync_sent += 1
        target = self._sync_sent

        def done() -> bool:
            session = self.gateway.session
            moved = session is None or session.connection is not connection
            return self._sync_acked >= target or moved

        try:
            await self.wait_for(done, timeout, what="the client to parse the events sent so far")
        except AssertionError as exc:
            if isinstance(exc, StandinFailure):
                raise
            raise StandinFailure(
                f"the client did not read gateway events for {timeout}s (is its loop blocked?)"
            ) from None

    def connection_changed(self) -> None:
        """A new connection took over the session: sentinels sent on the old one are lost."""
        self._sync_acked = self._sync_sent
        self.notify()

    def client_synced(self) -> None:
        """Called (through ``on_socket_event_type``) when the client reads a sync sentinel."""
        self._sync_acked += 1
        self.notify()

    async def _dispatch_message_event(self, event: str, message: Message) -> None:
        visible = self._content_always_visible(message)

        def shape(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
            if session.intents & MESSAGE_CONTENT or visible:
                return payload
            return self.gateway.strip_content(payload)

        await self._dispatch(
            event, self.message_payload(message), dm=message.channel.is_dm, shape=shape
        )

    # -- messages: storing, editing, deleting (used by REST and the driver) -----------------

    def make_attachment(
        self,
        channel: Channel,
        filename: str,
        data: bytes,
        *,
        spoiler: bool = False,
        description: str | None = None,
    ) -> Attachment:
        if spoiler and not filename.startswith("SPOILER_"):
            filename = "SPOILER_" + filename
        content_type = mimetypes.guess_type(filename)[0]
        width, height = _image_size(data)
        attachment = Attachment(
            self._ids.new(), channel.id, filename, data, content_type, width, height, description
        )
        self.attachments[attachment.id] = attachment
        return attachment

    def host_bytes(
        self, data: bytes, filename: str, content_type: str | None = None
    ) -> tuple[str, str]:
        """Serve ``data`` as an external file; returns (original url, media-proxy url)."""
        key = secrets.token_hex(6)
        kind = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.hosted[key] = (filename, data, kind)
        return (
            f"{self.base_url}/external/{key}/{filename}",
            f"{self.base_url}/cdn/external/{key}/{filename}",
        )

    def image_embed(self, data: bytes, filename: str = "image.png") -> dict[str, Any]:
        """The embed Discord attaches to a message that links an image."""
        url, proxy = self.host_bytes(data, filename)
        width, height = _image_size(data)
        return {
            "type": "image",
            "url": url,
            "thumbnail": {"url": url, "proxy_url": proxy, "width": width, "height": height},
        }

    def gifv_embed(
        self, video: bytes, thumbnail: bytes, *, page_url: str = "https://tenor.com/view/standin"
    ) -> dict[str, Any]:
        """The embed Discord attaches to a Tenor/Giphy link: an mp4 ``video`` plus a still."""
        video_url, video_proxy = self.host_bytes(video, "video.mp4", "video/mp4")
        thumb_url, thumb_proxy = self.host_bytes(thumbnail, "thumbnail.png")
        width, height = _image_size(thumbnail)
        return {
            "type": "gifv",
            "url": page_url,
            "provider": {"name": "Tenor", "url": "https://tenor.co"},
            "thumbnail": {
                "url": thumb_url,
                "proxy_url": thumb_proxy,
                "width": width,
                "height": height,
            },
            "video": {"url": video_url, "proxy_url": video_proxy, "width": width, "height": height},
        }

    def _store(self, message: Message) -> Message:
        self.messages[message.id] = message
        if not message.ephemeral:
            message.channel.messages[message.id] = message
        return message

    def _apply_mentions(
        self,
        message: Message,
        allowed: dict[str, Any] | None,
        *,
        mention_author: bool = True,
    ) -> None:
        """Work out who a message pings, honouring ``allowed_mentions`` as Discord does."""
        content = message.content
        guild = message.guild
        users = [int(u) for u in _USER_MENTION.findall(content) if int(u) in self.users]
        roles = [
            int(r)
            for r in _ROLE_MENTION.findall(content)
            if guild is not None and int(r) in guild.roles
        ]
        everyone = "@everyone" in content or "@here" in content
        replied = message.reference.author.id if message.reference is not None else None
        if allowed is None:
            pinged_users, pinged_roles, ping_everyone = users, roles, everyone
            ping_reply = mention_author
        else:
            parse = set(allowed.get("parse", []))
            listed_users = {int(u) for u in allowed.get("users", [])}
            listed_roles = {int(r) for r in allowed.get("roles", [])}
            pinged_users = [u for u in users if "users" in parse or u in listed_users]
            pinged_roles = [r for r in roles if "roles" in parse or r in listed_roles]
            ping_everyone = everyone and "everyone" in parse
            ping_reply = bool(allowed.get("replied_user", False))
        if replied is not None and ping_reply and replied not in pinged_users:
            pinged_users.append(replied)
        message.mention_user_ids = list(dict.fromkeys(pinged_users))
        message.mention_role_ids = list(dict.fromkeys(pinged_roles))
        message.mention_everyone = ping_everyone

    async def create_bot_message(
        self,
        channel: Channel,
        fields: dict[str, Any],
        *,
        reference: Message | None,
        sent_payload: dict[str, Any],
    ) -> Message:
        message = Message(
            self._ids.new(),
            channel,
            self.bot_user,
            content=fields["content"],
            attachments=fields["attachments"],
            embeds=fields["embeds"],
            components=fields["components"],
            type=19 if reference is not None else 0,
            flags=fields.get("flags", 0) & 4,  # only SUPPRESS_EMBEDS may be set on create
            tts=fields.get("tts", False),
            sent_payload=sent_payload,
        )
        if reference is not None:
            message.reference = reference
            message.reference_ids = (reference.id, channel.guild.id if channel.guild else None)
        self._apply_mentions(message, fields.get("allowed_mentions"))
        self._store(message)
        await self._dispatch_message_event("MESSAGE_CREATE", message)
        return message

    async def create_interaction_message(
        self, interaction: Interaction, fields: dict[str, Any], *, sent_payload: dict[str, Any]
    ) -> Message:
        kind = {APPLICATION_COMMAND: 20}.get(interaction.type, 0)
        if interaction.type == APPLICATION_COMMAND and interaction.data.get("type", 1) != 1:
            kind = 23
        message = Message(
            self._ids.new(),
            interaction.channel,
            self.bot_user,
            content=fields.get("content", ""),
            attachments=fields.get("attachments", []),
            embeds=fields.get("embeds", []),
            components=fields.get("components", []),
            type=kind,
            flags=fields.get("flags", 0),
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction=interaction,
            sent_payload=sent_payload,
        )
        self._apply_mentions(message, fields.get("allowed_mentions"))
        self._store(message)
        if not message.ephemeral:
            await self._dispatch_message_event("MESSAGE_CREATE", message)
        else:
            self.notify()
        return message

    async def update_message(
        self, message: Message, fields: dict[str, Any], *, sent_payload: dict[str, Any] | None
    ) -> None:
        for key in ("content", "embeds", "components", "attachments", "tts"):
            if key in fields:
                setattr(message, key, fields[key])
        if "flags" in fields:
            message.flags = fields["flags"]
        if "content" in fields or "allowed_mentions" in fields:
            allowed = fields.get("allowed_mentions")
            if allowed is None and message.sent_payload:
                allowed = message.sent_payload.get("allowed_mentions")
            self._apply_mentions(message, allowed)
        if sent_payload is not None:
            message.sent_payload = sent_payload
        message.edited_at = datetime.now(UTC)
        if message.ephemeral:
            self.notify()
            return
        await self._dispatch_message_event("MESSAGE_UPDATE", message)

    async def remove_message(self, message: Message) -> None:
        message.deleted = True
        message.channel.messages.pop(message.id, None)
        self.deleted.append(message)
        if message.ephemeral:
            self.notify()
            return
        data: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel.id)}
        if message.guild is not None:
            data["guild_id"] = str(message.guild.id)
        await self._dispatch("MESSAGE_DELETE", data, dm=message.channel.is_dm)

    async def remove_messages(self, channel: Channel, messages: Sequence[Message]) -> None:
        for message in messages:
            message.deleted = True
            channel.messages.pop(message.id, None)
            self.deleted.append(message)
        data: dict[str, Any] = {"ids": [str(m.id) for m in messages], "channel_id": str(channel.id)}
        if channel.guild is not None:
            data["guild_id"] = str(channel.guild.id)
        await self._dispatch("MESSAGE_DELETE_BULK", data)

    async def apply_reaction(
        self, message: Message, user: User, emoji: ReactionEmoji, *, add: bool
    ) -> None:
        """Add or remove one user's reaction and dispatch the event; no-op if nothing changes."""
        reactors = message.reactions.setdefault(emoji, [])
        if add == (user.id in reactors):
            if not reactors:
                del message.reactions[emoji]
            return
        if add:
            reactors.append(user.id)
        else:
            reactors.remove(user.id)
            if not reactors:
                del message.reactions[emoji]
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(message.channel.id),
            "message_id": str(message.id),
            "emoji": payloads.reaction_emoji(emoji),
            "burst": False,
            "type": 0,
        }
        guild = message.guild
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if add:
            data["message_author_id"] = str(message.author.id)
            data["burst_colors"] = []
            member = guild.members.get(user.id) if guild is not None else None
            if member is not None:
                data["member"] = payloads.member(member)
        event = "MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE"
        await self._dispatch(event, data, dm=message.channel.is_dm)

    async def clear_reactions(self, message: Message, emoji: ReactionEmoji | None) -> None:
        data: dict[str, Any] = {
            "channel_id": str(message.channel.id),
            "message_id": str(message.id),
        }
        if message.guild is not None:
            data["guild_id"] = str(message.guild.id)
        if emoji is None:
            message.reactions.clear()
            await self._dispatch("MESSAGE_REACTION_REMOVE_ALL", data)
        else:
            message.reactions.pop(emoji, None)
            data["emoji"] = payloads.reaction_emoji(emoji)
            await self._dispatch("MESSAGE_REACTION_REMOVE_EMOJI", data)

    # -- application commands ---------------------------------------------------------------

    def store_commands(
        self, scope: int | None, posted: list[dict[str, Any]], *, replace: bool
    ) -> list[dict[str, Any]]:
        """Validate and store commands as Discord does, keeping ids of unchanged names."""
        existing = {(c["name"], c.get("type", 1)): c for c in self.commands.get(scope, [])}
        stored: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        for raw in posted:
            problem = _command_problem(raw)
            if problem:
                raise form_error(problem)
            key = (raw["name"], int(raw.get("type", 1)))
            if key in seen:
                raise form_error(f"{raw['name']}: application command names must be unique")
            seen.add(key)
            old = existing.get(key)
            command = {
                "options": [],
                "description": "",
                "name_localizations": None,
                "description_localizations": None,
                "dm_permission": True,
                "nsfw": False,
                **raw,
            }
            command["type"] = key[1]
            command["id"] = old["id"] if old else str(self._ids.new())
            command["application_id"] = str(self.application_id)
            command["version"] = str(self._ids.new())
            perms = command.get("default_member_permissions")
            command["default_member_permissions"] = None if perms is None else str(perms)
            if scope is not None:
                command["guild_id"] = str(scope)
            stored.append(command)
        if replace:
            self.commands[scope] = stored
        else:
            keep = [c for c in self.commands.get(scope, []) if (c["name"], c["type"]) not in seen]
            self.commands[scope] = keep + stored
        counts = Counter(c["type"] for c in self.commands[scope])
        if counts[1] > 100 or counts[2] > 15 or counts[3] > 15:
            raise form_error("too many application commands of one type")
        self.notify()
        return stored

    def registered_commands(self, guild: Guild | None = None) -> list[dict[str, Any]]:
        """The commands the bot registered globally (``guild=None``) or in ``guild``."""
        return list(self.commands.get(guild.id if guild else None, []))

    def _find_command(self, name: str, kind: int, channel: Channel) -> dict[str, Any]:
        scopes: list[int | None] = [channel.guild.id] if channel.guild else []
        scopes.append(None)
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == kind:
                    return command
        where = f"guild {channel.guild.name!r} or globally" if channel.guild else "globally"
        raise StandinError(
            f"no command {name!r} of type {kind} is registered {where}; sync the tree first"
        )

    # -- the driver: what members do --------------------------------------------------------

    def _require_member(self, user: User, channel: Channel) -> None:
        if channel.guild is not None and user.id not in channel.guild.members:
            raise StandinError(f"{user.name} is not a member of {channel.guild.name}")
        if channel.is_dm and user not in channel.recipients:
            raise StandinError(f"{user.name} is not in this DM")

    def _require_can_post(self, user: User, channel: Channel) -> None:
        self._require_member(user, channel)
        need = VIEW_CHANNEL | (SEND_IN_THREADS if channel.is_thread else SEND_MESSAGES)
        if channel_permissions(channel, user.id) & need != need:
            raise StandinError(f"{user.name} may not post in #{channel.name}")

    async def post_message(
        self,
        channel: Channel,
        author: User,
        content: str = "",
        *,
        attachments: Sequence[AttachmentSpec] = (),
        embeds: Sequence[dict[str, Any]] = (),
        reply_to: Message | None = None,
        mention_author: bool = True,
        created_at: datetime | None = None,
        dispatch: bool = True,
    ) -> Message:
        """A member posts a message; stores it and dispatches MESSAGE_CREATE.

        Args:
            attachments: ``(filename, bytes)`` or ``(filename, bytes, spoiler)`` tuples; served
                from the stand-in's CDN at the attachment's ``url`` and ``proxy_url``.
            embeds: raw embed dicts, e.g. from :meth:`image_embed` or :meth:`gifv_embed`.
            created_at: backdate the message (its snowflake carries this time), for history.
            dispatch: False seeds history silently (messages posted while the bot was away).
        """
        self._require_can_post(author, channel)
        if author.bot and author.id == self.bot_user.id:
            raise StandinError("post as a member; the bot posts through REST")
        message = Message(self._ids.new(created_at), channel, author, content=content)
        message.attachments = [
            self.make_attachment(channel, spec[0], spec[1], spoiler=bool(spec[2:] and spec[2]))
            for spec in attachments
        ]
        message.embeds = [dict(e) for e in embeds]
        if reply_to is not None:
            message.type = 19
            message.reference = reply_to
            message.reference_ids = (reply_to.id, channel.guild.id if channel.guild else None)
        self._apply_mentions(message, None, mention_author=mention_author)
        self._store(message)
        if dispatch:
            await self._dispatch_message_event("MESSAGE_CREATE", message)
        else:
            self.notify()
        return message

    async def edit_message(
        self,
        message: Message,
        content: str | None = None,
        *,
        embeds: Sequence[dict[str, Any]] | None = None,
    ) -> Message:
        """A member edits their message (or Discord unfurls a link: pass ``embeds``)."""
        fields: dict[str, Any] = {}
        if content is not None:
            fields["content"] = content
        if embeds is not None:
            fields["embeds"] = [dict(e) for e in embeds]
        await self.update_message(message, fields, sent_payload=None)
        if content is None:
            message.edited_at = None  # an unfurl is not an edit
        return message

    async def redeliver(self, message: Message) -> None:
        """Send MESSAGE_CREATE for ``message`` again: gateway delivery is at least once."""
        await self._dispatch_message_event("MESSAGE_CREATE", message)

    async def delete_message(self, message: Message) -> None:
        """A member (or a moderator) deletes a message; dispatches MESSAGE_DELETE."""
        await self.remove_message(message)

    async def add_reaction(self, user: User, message: Message, emoji: str | CustomEmoji) -> None:
        """``user`` reacts; dispatches MESSAGE_REACTION_ADD (also for messages the bot never saw)."""
        self._require_member(user, message.channel)
        parsed = ReactionEmoji.parse(emoji)
        if not message.reactions.get(parsed):
            if not channel_permissions(message.channel, user.id) & ADD_REACTIONS:
                raise StandinError(
                    f"{user.name} may not add new reactions in #{message.channel.name}"
                )
        await self.apply_reaction(message, user, parsed, add=True)

    async def remove_reaction(self, user: User, message: Message, emoji: str | CustomEmoji) -> None:
        await self.apply_reaction(message, user, ReactionEmoji.parse(emoji), add=False)

    def _interaction_payload(self, interaction: Interaction) -> dict[str, Any]:
        channel = interaction.channel
        guild = channel.guild
        data: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": interaction.type,
            "data": interaction.data,
            "channel": payloads.channel(channel, viewer_id=interaction.user.id),
            "channel_id": str(channel.id),
            "token": interaction.token,
            "version": 1,
            "app_permissions": str(channel_permissions(channel, self.bot_user.id)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": payloads.ATTACHMENT_SIZE_LIMIT,
        }
        if guild is not None:
            member = guild.members[interaction.user.id]
            data["guild_id"] = str(guild.id)
            data["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            data["guild_locale"] = "en-US"
            data["member"] = payloads.member(
                member, permissions=channel_permissions(channel, interaction.user.id)
            )
            data["authorizing_integration_owners"] = {"0": str(guild.id)}
            data["context"] = 0
        else:
            data["user"] = payloads.user(interaction.user)
            data["authorizing_integration_owners"] = {"0": "0"}
            data["context"] = 1
        if interaction.message is not None:
            data["message"] = self.message_payload(interaction.message)
        return data

    async def _interact(
        self,
        kind: int,
        user: User,
        channel: Channel,
        data: dict[str, Any],
        *,
        message: Message | None = None,
    ) -> Interaction:
        self._require_member(user, channel)
        interaction = Interaction(
            self._ids.new(), secrets.token_urlsafe(24), kind, user, channel, data, message
        )
        self.interactions[interaction.id] = interaction
        await self._dispatch("INTERACTION_CREATE", self._interaction_payload(interaction))
        return interaction

    def interaction_by_token(self, token: str) -> Interaction | None:
        for interaction in self.interactions.values():
            if interaction.token == token:
                return interaction
        return None

    def _check_visible(
        self, command: dict[str, Any], user: User, channel: Channel, bypass: bool
    ) -> None:
        if channel.guild is None:
            contexts = command.get("contexts")
            if (
                command.get("guild_id")
                or command.get("dm_permission") is False
                or (contexts is not None and 1 not in contexts)
            ):
                raise StandinError(f"{command['name']!r} cannot be used in DMs")
            return
        needed = command.get("default_member_permissions")
        if needed is None or bypass:
            return
        have = channel_permissions(channel, user.id)
        if int(needed) & have != int(needed) and have != ALL_PERMISSIONS:
            raise StandinError(
                f"{user.name} cannot see {command['name']!r}: it needs permissions {needed} "
                "(pass bypass_permissions=True to act as if an admin had granted it)"
            )

    async def invoke_slash(
        self,
        user: User,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        channel: Channel | None = None,
        bypass_permissions: bool = False,
    ) -> Interaction:
        """``user`` runs ``/name`` (``"group sub"`` for subcommands) with typed ``options``.

        Option values: str/int/float/bool as declared; a :class:`User` for user options; a
        :class:`Channel` or :class:`Role`; ``(filename, bytes)`` for attachments. The command
        must have been registered (``tree.sync``) in the channel's guild or globally.
        """
        channel = channel or self.channel
        root, *path = name.split()
        command = self._find_command(root, 1, channel)
        self._check_visible(command, user, channel, bypass_permissions)
        resolved: dict[str, dict[str, Any]] = {}
        declared = command.get("options", [])
        nesting: list[tuple[str, int]] = []
        for part in path:
            sub = next((o for o in declared if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise StandinError(f"/{root} has no subcommand {part!r}")
            nesting.append((part, sub["type"]))
            declared = sub.get("options", [])
        built = self._build_options(root, declared, options or {}, channel, resolved)
        for part, kind in reversed(nesting):
            built = [{"name": part, "type": kind, "options": built}]
        data: dict[str, Any] = {
            "id": command["id"],
            "name": root,
            "type": 1,
            "options": built,
        }
        if resolved:
            data["resolved"] = resolved
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(APPLICATION_COMMAND, user, channel, data)

    async def autocomplete(
        self,
        user: User,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        channel: Channel | None = None,
    ) -> Interaction:
        """``user`` is typing option ``focused`` of ``/name``; the bot's choices land in ``.choices``."""
        channel = channel or self.channel
        command = self._find_command(name, 1, channel)
        declared = command.get("options", [])
        built = []
        for key, value in options.items():
            spec = next((o for o in declared if o["name"] == key), None)
            if spec is None:
                raise StandinError(f"/{name} has no option {key!r}")
            entry = {"name": key, "type": spec["type"], "value": value}
            if key == focused:
                entry["focused"] = True
            built.append(entry)
        data = {"id": command["id"], "name": name, "type": 1, "options": built}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(AUTOCOMPLETE, user, channel, data)

    def _build_options(
        self,
        command_name: str,
        declared: list[dict[str, Any]],
        given: dict[str, Any],
        channel: Channel,
        resolved: dict[str, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in declared}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise StandinError(
                f"/{command_name} has no option {unknown[0]!r} (has {sorted(by_name)})"
            )
        for spec in declared:
            if spec.get("required") and spec["name"] not in given:
                raise StandinError(f"/{command_name} needs option {spec['name']!r}")
        built = []
        guild = channel.guild
        for key, value in given.items():
            spec = by_name.get(key)
            if spec is None:
                raise StandinError(f"/{command_name} has no option {key!r} (has {sorted(by_name)})")
            kind = spec["type"]
            choices = spec.get("choices")
            if choices and value not in [c["value"] for c in choices]:
                raise StandinError(f"/{command_name} {key}: {value!r} is not one of the choices")
            if kind in (_STRING, _INTEGER, _NUMBER, _BOOLEAN):
                expected = {_STRING: str, _INTEGER: int, _NUMBER: (int, float), _BOOLEAN: bool}[
                    kind
                ]
                if not isinstance(value, expected) or (
                    kind == _INTEGER and isinstance(value, bool)
                ):
                    raise StandinError(f"/{command_name} {key}: expected {expected}, got {value!r}")
                wire: Any = value
            elif kind in (_USER, _MENTIONABLE) and isinstance(value, User):
                resolved.setdefault("users", {})[str(value.id)] = payloads.user(value)
                member = guild.members.get(value.id) if guild else None
                if member is not None:
                    resolved.setdefault("members", {})[str(value.id)] = payloads.member(
                        member, with_user=False, permissions=channel_permissions(channel, value.id)
                    )
                wire = str(value.id)
            elif kind in (_ROLE, _MENTIONABLE) and isinstance(value, Role):
                resolved.setdefault("roles", {})[str(value.id)] = payloads.role(value)
                wire = str(value.id)
            elif kind == _CHANNEL and isinstance(value, Channel):
                resolved.setdefault("channels", {})[str(value.id)] = payloads.channel(
                    value, viewer_id=self.bot_user.id
                )
                wire = str(value.id)
            elif kind == _ATTACHMENT and isinstance(value, tuple):
                attachment = self.make_attachment(channel, value[0], value[1])
                attachment_payload = payloads.attachment(attachment, self.base_url)
                attachment_payload["ephemeral"] = True
                resolved.setdefault("attachments", {})[str(attachment.id)] = attachment_payload
                wire = str(attachment.id)
            else:
                raise StandinError(
                    f"/{command_name} {key}: cannot pass {value!r} as option type {kind}"
                )
            built.append({"name": key, "type": kind, "value": wire})
        return built

    async def invoke_message_context_menu(
        self, user: User, name: str, message: Message, *, bypass_permissions: bool = False
    ) -> Interaction:
        """``user`` picks Apps → ``name`` on ``message``."""
        command = self._find_command(name, 3, message.channel)
        self._check_visible(command, user, message.channel, bypass_permissions)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): self.message_payload(message)}},
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(APPLICATION_COMMAND, user, message.channel, data)

    async def invoke_user_context_menu(
        self,
        user: User,
        name: str,
        target: User,
        *,
        channel: Channel | None = None,
        bypass_permissions: bool = False,
    ) -> Interaction:
        """``user`` picks Apps → ``name`` on ``target``'s profile."""
        channel = channel or self.channel
        command = self._find_command(name, 2, channel)
        self._check_visible(command, user, channel, bypass_permissions)
        resolved: dict[str, Any] = {"users": {str(target.id): payloads.user(target)}}
        member = channel.guild.members.get(target.id) if channel.guild else None
        if member is not None:
            resolved["members"] = {str(target.id): payloads.member(member, with_user=False)}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 2,
            "target_id": str(target.id),
            "resolved": resolved,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(APPLICATION_COMMAND, user, channel, data)

    def _component(
        self, message: Message, custom_id: str, kinds: tuple[int, ...]
    ) -> dict[str, Any]:
        component = find_component(message.components, custom_id)
        if component is None:
            ids = [c.get("custom_id") for c in _walk(message.components) if c.get("custom_id")]
            raise StandinError(f"message {message.id} has no component {custom_id!r} (has {ids})")
        if component.get("type") not in kinds:
            raise StandinError(
                f"component {custom_id!r} is type {component.get('type')}, not {kinds}"
            )
        if component.get("disabled"):
            raise StandinError(f"component {custom_id!r} is disabled; nobody can use it")
        return component

    async def click_button(self, user: User, message: Message, custom_id: str) -> Interaction:
        """``user`` clicks the button ``custom_id`` on ``message`` (ephemeral messages too)."""
        if message.deleted:
            raise StandinError(f"message {message.id} was deleted")
        self._component(message, custom_id, (2,))
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(MESSAGE_COMPONENT, user, message.channel, data, message=message)

    async def select(
        self,
        user: User,
        message: Message,
        custom_id: str,
        values: Sequence[str | User | Role | Channel],
    ) -> Interaction:
        """``user`` picks ``values`` in a select menu (string, user, role or channel select)."""
        component = self._component(message, custom_id, (3, 5, 6, 7, 8))
        kind = component["type"]
        resolved: dict[str, dict[str, Any]] = {}
        wire: list[str] = []
        for value in values:
            if isinstance(value, str):
                if kind == 3:
                    allowed = [o["value"] for o in component.get("options", [])]
                    if value not in allowed:
                        raise StandinError(
                            f"{value!r} is not an option of {custom_id!r}: {allowed}"
                        )
                wire.append(value)
            else:
                option_kind = {User: _USER, Role: _ROLE, Channel: _CHANNEL}[type(value)]
                self._build_options(
                    "select",
                    [{"name": "v", "type": option_kind}],
                    {"v": value},
                    message.channel,
                    resolved,
                )
                wire.append(str(value.id))
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": kind, "values": wire}
        if resolved:
            data["resolved"] = resolved
        return await self._interact(MESSAGE_COMPONENT, user, message.channel, data, message=message)

    async def submit_modal(
        self, user: User, shown_by: Interaction, values: dict[str, str | Sequence[str]]
    ) -> Interaction:
        """``user`` fills in and submits the modal the bot showed in answer to ``shown_by``.

        ``values`` maps each input's custom_id to its text (or a list of values for a select).
        """
        modal = shown_by.modal
        if modal is None:
            raise StandinError(f"interaction {shown_by.id} was not answered with a modal")
        known = {c.get("custom_id") for c in _walk(modal["components"]) if c.get("type") in (3, 4)}
        unknown = set(values) - known
        if unknown:
            raise StandinError(f"the modal has no inputs {sorted(unknown)} (has {sorted(known)})")

        def fill(component: dict[str, Any]) -> dict[str, Any]:
            kind = component.get("type")
            if kind == 1:
                return {"type": 1, "components": [fill(c) for c in component.get("components", [])]}
            if kind == 18:
                return {"type": 18, "component": fill(component["component"])}
            custom_id = component.get("custom_id")
            if kind == 4:
                text = str(values.get(custom_id, component.get("value") or ""))
                if component.get("required", True) and not text:
                    raise StandinError(f"the modal's input {custom_id!r} is required")
                low, high = component.get("min_length", 0), component.get("max_length", 4000)
                if text and not low <= len(text) <= high:
                    raise StandinError(f"{custom_id!r} must be {low}..{high} characters")
                return {"type": 4, "custom_id": custom_id, "value": text}
            if kind == 3:
                picked = values.get(custom_id, [])
                return {"type": 3, "custom_id": custom_id, "values": list(picked)}
            return {"type": kind}

        data = {
            "custom_id": modal["custom_id"],
            "components": [fill(c) for c in modal["components"]],
        }
        return await self._interact(
            MODAL_SUBMIT, user, shown_by.channel, data, message=shown_by.message
        )

    # -- gateway controls -------------------------------------------------------------------

    async def disconnect(self, code: int = 4000) -> None:
        """Close the bot's gateway connection; with 4000 discord.py reconnects and RESUMEs."""
        await self.gateway.close_connections(code)

    @contextlib.asynccontextmanager
    async def gateway_paused(self) -> AsyncIterator[None]:
        """Drop the connection and hold back HELLO until the block ends.

        Events dispatched inside the block are what the bot "missed"; the RESUME after the block
        replays them, as Discord does.
        """
        self.gateway.hold_hello()
        await self.gateway.close_connections(4000)
        try:
            yield
        finally:
            self.gateway.release_hello()

    async def send_reconnect(self) -> None:
        """Gateway op 7: ask the client to reconnect and resume."""
        await self.gateway.send_op(7)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Gateway op 9: the client re-identifies (or resumes if ``resumable``).

        discord.py sleeps 5 s in ``before_identify_hook`` before any IDENTIFY but the first.
        """
        await self.gateway.send_op(9, resumable)

    # -- failure injection ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold_downloads(self) -> AsyncIterator[None]:
        """Attachment and external-file downloads wait until the block ends (a slow CDN).

        ``downloads_waiting`` counts the requests held, so a test can wait until the bot is
        mid-download before deleting or editing the message.
        """
        self.downloads_open.clear()
        try:
            yield
        finally:
            self.downloads_open.set()
            self.notify()

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        code: int = 0,
        message: str = "",
        times: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> FailureRule:
        """Answer the next ``times`` requests matching ``method`` and ``path`` with an error.

        ``path`` is relative to ``/api/v10`` and may use shell wildcards
        (``"/channels/*/messages"``). ``status=429`` sends a rate limit discord.py retries.
        """
        rule = FailureRule(
            method.upper(), path, status, code, message, retry_after, is_global, times
        )
        self.failure_rules.append(rule)
        return rule

    def rate_limit(
        self, method: str, path: str, *, retry_after: float = 0.05, times: int = 1
    ) -> FailureRule:
        return self.fail_next(method, path, status=429, retry_after=retry_after, times=times)

    # -- inspection -------------------------------------------------------------------------

    def messages_in(self, channel: Channel) -> list[Message]:
        """Visible messages in ``channel``, oldest first (ephemeral and deleted ones excluded)."""
        return sorted(channel.messages.values(), key=lambda m: m.id)

    def bot_messages(self, channel: Channel | None = None) -> list[Message]:
        """Messages the bot posted (ephemeral ones included), oldest first."""
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.author.id == self.bot_user.id
                and not m.deleted
                and (channel is None or m.channel is channel)
            ),
            key=lambda m: m.id,
        )

    def reactions_on(self, message: Message) -> dict[str, list[User]]:
        """``{"👍": [user, ...]}`` in the order people reacted; custom emoji as ``<:name:id>``."""
        return {
            str(emoji): [self.users[i] for i in reactors]
            for emoji, reactors in message.reactions.items()
            if reactors
        }

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Recorded requests matching ``method`` and a wildcard ``pattern`` (relative to /api/v10)."""
        return [
            r
            for r in self.requests
            if r.method == method.upper() and fnmatch.fnmatchcase(r.path, pattern)
        ]


def _walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return iter_components(components)


def _describe(predicate: Callable[..., Any]) -> str:
    name = getattr(predicate, "__name__", repr(predicate))
    code = getattr(predicate, "__code__", None)
    if name == "<lambda>" and code is not None:
        return f"a lambda at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
    return name


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # not an image, or one Pillow cannot read: Discord sends no size either
        return None, None


def _command_problem(command: dict[str, Any]) -> str | None:
    """Why Discord would reject this command definition (400 50035), or None."""
    name = command.get("name")
    kind = int(command.get("type", 1))
    if not isinstance(name, str) or not name:
        return "name: required"
    if kind == 1:
        if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
            return f"{name}: chat command names are 1-32 lowercase letters, digits, - or _"
        description = command.get("description") or ""
        if not 1 <= len(description) <= 100:
            return f"{name}: description must be 1-100 characters"
        return _options_problem(name, command.get("options") or [])
    if not 1 <= len(name) <= 32:
        return f"{name}: context menu names are 1-32 characters"
    if command.get("options") or command.get("description"):
        return f"{name}: context menus take no description or options"
    return None


def _options_problem(owner: str, options: list[dict[str, Any]]) -> str | None:
    if len(options) > 25:
        return f"{owner}: at most 25 options"
    names = [o.get("name") for o in options]
    if len(set(names)) != len(names):
        return f"{owner}: option names must be unique"
    seen_optional = False
    for option in options:
        name = option.get("name") or ""
        if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
            return f"{owner} {name!r}: option names are 1-32 lowercase letters, digits, - or _"
        if not 1 <= len(option.get("description") or "") <= 100:
            return f"{owner} {name}: option description must be 1-100 characters"
        if len(option.get("choices") or []) > 25:
            return f"{owner} {name}: at most 25 choices"
        if option.get("type") in (_SUB_COMMAND, _SUB_GROUP):
            problem = _options_problem(f"{owner} {name}", option.get("options") or [])
            if problem:
                return problem
            continue
        if option.get("required"):
            if seen_optional:
                return f"{owner} {name}: required options must come before optional ones"
        else:
            seen_optional = True
    return None
