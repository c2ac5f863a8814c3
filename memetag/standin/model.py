"""The stand-in Discord's world: users, guilds, channels, messages, reactions and interactions.

Plain mutable records plus Discord's rules that depend only on them: time-derived snowflakes,
permission resolution (roles, administrator, owner, channel overwrites) and emoji parsing.
Nothing here knows about HTTP or the gateway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

DISCORD_EPOCH_MS = 1_420_070_400_000

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types).
TEXT, DM, CATEGORY, NEWS, PUBLIC_THREAD, PRIVATE_THREAD = 0, 1, 4, 5, 11, 12
THREAD_TYPES = (PUBLIC_THREAD, PRIVATE_THREAD)

# Message flags.
EPHEMERAL, LOADING = 1 << 6, 1 << 7

_FLAGS = discord.Permissions.VALID_FLAGS
ALL_PERMISSIONS = discord.Permissions.all().value
VIEW_CHANNEL = _FLAGS["view_channel"]
SEND_MESSAGES = _FLAGS["send_messages"]
SEND_IN_THREADS = _FLAGS["send_messages_in_threads"]
READ_HISTORY = _FLAGS["read_message_history"]
ADD_REACTIONS = _FLAGS["add_reactions"]
MANAGE_MESSAGES = _FLAGS["manage_messages"]
MANAGE_THREADS = _FLAGS["manage_threads"]
ATTACH_FILES = _FLAGS["attach_files"]
EMBED_LINKS = _FLAGS["embed_links"]
CREATE_PUBLIC_THREADS = _FLAGS["create_public_threads"]
CREATE_PRIVATE_THREADS = _FLAGS["create_private_threads"]
MENTION_EVERYONE = _FLAGS["mention_everyone"]
ADMINISTRATOR = _FLAGS["administrator"]

# What @everyone gets in a new server, and what a typical invite link grants a bot.
DEFAULT_EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    read_message_history=True,
    use_application_commands=True,
    use_external_emojis=True,
    change_nickname=True,
    create_instant_invite=True,
).value
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | MANAGE_MESSAGES


def as_permissions(value: int | discord.Permissions) -> int:
    """Accept a raw bit field or a ``discord.Permissions``."""
    return value.value if isinstance(value, discord.Permissions) else int(value)


class Snowflakes:
    """Issues unique ids whose top 42 bits are their creation time, as Discord's are.

    Ids issued for "now" strictly increase. Ids for a given past time (seeded history) carry that
    time, so ``discord.utils.snowflake_time`` returns it and ordering by id is ordering by time.
    """

    def __init__(self) -> None:
        self._issued: set[int] = set()
        self._last_now = 0

    def new(self, at: datetime | None = None) -> int:
        if at is None:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            value = max(ms << 22, self._last_now + 1)
        else:
            if at.tzinfo is None:
                raise ValueError(f"created_at must be timezone-aware, got {at!r}")
            value = (int(at.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22
        while value in self._issued:
            value += 1
        if at is None:
            self._last_now = value
        self._issued.add(value)
        return value


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class User:
    """A Discord account. Equal by value, so tests can compare lists of reactors directly."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class Role:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None
    mentionable: bool = False
    hoist: bool = False
    color: int = 0

    @property
    def is_everyone(self) -> bool:
        return self.id == self.guild_id

    @property
    def mention(self) -> str:
        return "@everyone" if self.is_everyone else f"<@&{self.id}>"


@dataclass(eq=False)
class Member:
    user: User
    guild: Guild
    roles: list[Role] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Overwrite:
    """A channel permission overwrite for a role (kind 0) or a member (kind 1)."""

    target_id: int
    kind: int
    allow: int = 0
    deny: int = 0


@dataclass(frozen=True)
class CustomEmoji:
    id: int
    name: str
    guild_id: int
    animated: bool = False

    def __str__(self) -> str:
        return f"<{'a' if self.animated else ''}:{self.name}:{self.id}>"


@dataclass(frozen=True)
class ReactionEmoji:
    """The emoji of a reaction: a unicode string, or a custom emoji's name and id."""

    name: str
    id: int | None = None
    animated: bool = False

    def __str__(self) -> str:
        if self.id is None:
            return self.name
        return f"<{'a' if self.animated else ''}:{self.name}:{self.id}>"

    @classmethod
    def parse(cls, value: str | CustomEmoji | ReactionEmoji) -> ReactionEmoji:
        """Accept ``"👍"``, ``"<:blob:123>"``, ``"<a:dance:456>"`` or a custom emoji record."""
        if isinstance(value, ReactionEmoji):
            return value
        if isinstance(value, CustomEmoji):
            return cls(value.name, value.id, value.animated)
        if value.startswith("<") and value.endswith(">") and value.count(":") == 2:
            animated, name, emoji_id = value[1:-1].split(":")
            return cls(name, int(emoji_id), animated == "a")
        if not value:
            raise ValueError("an emoji cannot be empty")
        return cls(value)

    @classmethod
    def from_route(cls, raw: str) -> ReactionEmoji:
        """Parse the ``{emoji}`` path segment discord.py builds (see discord-standin.md, §3).

        ``"👍"``; ``"blob:123"`` from a PartialEmoji; ``":blob:123"`` from ``"<:blob:123>"``;
        ``"a:dance:456"`` from ``"<a:dance:456>"``.
        """
        text = raw.lstrip(":")
        animated = False
        if text.startswith("a:") and text.count(":") == 2:
            animated, text = True, text[2:]
        if ":" in text:
            name, _, emoji_id = text.partition(":")
            if not emoji_id.isdigit():
                raise ValueError(raw)
            return cls(name, int(emoji_id), animated)
        if not text:
            raise ValueError(raw)
        return cls(text)


@dataclass(eq=False)
class Channel:
    id: int
    type: int
    name: str
    guild: Guild | None = None
    position: int = 0
    topic: str | None = None
    parent_id: int | None = None
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    recipients: list[User] = field(default_factory=list)
    # Threads only.
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    thread_member_ids: set[int] = field(default_factory=set)
    messages: dict[int, Message] = field(default_factory=dict, repr=False)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def is_dm(self) -> bool:
        return self.type == DM

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def parent(self) -> Channel | None:
        if self.guild is None or self.parent_id is None:
            return None
        return self.guild.channels.get(self.parent_id)

    @property
    def created_at(self) -> datetime:
        return snowflake_time(self.id)


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    emojis: dict[int, CustomEmoji] = field(default_factory=dict)

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]

    @property
    def text_channels(self) -> list[Channel]:
        return [c for c in self.channels.values() if c.type in (TEXT, NEWS)]

    @property
    def threads(self) -> list[Channel]:
        return [c for c in self.channels.values() if c.is_thread]

    def member(self, user: User | int) -> Member | None:
        return self.members.get(user if isinstance(user, int) else user.id)


@dataclass(eq=False)
class Attachment:
    id: int
    channel_id: int
    filename: str
    data: bytes = field(repr=False)
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    description: str | None = None

    @property
    def path(self) -> str:
        """Path on the stand-in's CDN; the payload prefixes the server's base URL."""
        return f"/attachments/{self.channel_id}/{self.id}/{self.filename}"

    @property
    def is_spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")


@dataclass(eq=False)
class Message:
    id: int
    channel: Channel
    author: User
    content: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    type: int = 0
    flags: int = 0
    tts: bool = False
    pinned: bool = False
    reference: Message | None = field(default=None, repr=False)
    reference_ids: tuple[int, int | None] | None = None  # (message id, guild id) when replying
    edited_at: datetime | None = None
    reactions: dict[ReactionEmoji, list[int]] = field(default_factory=dict, repr=False)
    mention_user_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction: Interaction | None = field(default=None, repr=False)
    sent_payload: dict[str, Any] | None = field(default=None, repr=False)
    thread: Channel | None = field(default=None, repr=False)
    deleted: bool = False

    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def created_at(self) -> datetime:
        return snowflake_time(self.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        """The ``allowed_mentions`` the bot sent with this message, if it sent it."""
        return None if self.sent_payload is None else self.sent_payload.get("allowed_mentions")

    def component(self, custom_id: str) -> dict[str, Any] | None:
        """The component (button, select...) with this custom_id, searched through rows."""
        return find_component(self.components, custom_id)


def iter_components(components: list[dict[str, Any]]):
    """Yield every component, descending into rows, sections, containers and labels."""
    for component in components:
        yield component
        children = list(component.get("components", []))
        if "component" in component:
            children.append(component["component"])
        if "accessory" in component:
            children.append(component["accessory"])
        yield from iter_components(children)


def find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for component in iter_components(components):
        if component.get("custom_id") == custom_id:
            return component
    return None


# Interaction types and callback types.
APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5


@dataclass(eq=False)
class InteractionCallback:
    """One ``POST /interactions/{id}/{token}/callback`` the bot made."""

    interaction: Interaction
    type: int
    data: dict[str, Any]
    message: Message | None = None

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def ephemeral(self) -> bool:
        return bool(self.data.get("flags", 0) & EPHEMERAL)


@dataclass(eq=False)
class Interaction:
    """A user action delivered to the bot as INTERACTION_CREATE, and everything the bot answered."""

    id: int
    token: str
    type: int
    user: User
    channel: Channel
    data: dict[str, Any]
    message: Message | None = None  # the message a component or modal belongs to
    created: float = field(default_factory=time.monotonic)
    callbacks: list[InteractionCallback] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None

    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def response(self) -> InteractionCallback | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)


def base_permissions(guild: Guild, user_id: int) -> int:
    """Guild-wide permissions: owner and administrator get everything."""
    if user_id == guild.owner_id:
        return ALL_PERMISSIONS
    member = guild.members.get(user_id)
    if member is None:
        return 0
    value = guild.everyone.permissions
    for role in member.roles:
        value |= role.permissions
    return ALL_PERMISSIONS if value & ADMINISTRATOR else value


def channel_permissions(channel: Channel, user_id: int) -> int:
    """Permissions in a channel after overwrites, computed the way Discord documents it."""
    if channel.guild is None:  # DMs: everything a DM allows
        return (
            VIEW_CHANNEL | SEND_MESSAGES | READ_HISTORY | ADD_REACTIONS | ATTACH_FILES | EMBED_LINKS
        )
    guild = channel.guild
    value = base_permissions(guild, user_id)
    if value & ADMINISTRATOR or user_id == guild.owner_id:
        return ALL_PERMISSIONS
    source = channel.parent if channel.is_thread and channel.parent is not None else channel
    overwrites = source.overwrites
    everyone = overwrites.get(guild.id)
    if everyone is not None:
        value = (value & ~everyone.deny) | everyone.allow
    member = guild.members.get(user_id)
    role_ids = {role.id for role in member.roles} if member else set()
    allow = deny = 0
    for overwrite in overwrites.values():
        if overwrite.kind == 0 and overwrite.target_id in role_ids:
            allow |= overwrite.allow
            deny |= overwrite.deny
    value = (value & ~deny) | allow
    own = overwrites.get(user_id)
    if own is not None and own.kind == 1:
        value = (value & ~own.deny) | own.allow
    if not value & VIEW_CHANNEL:
        return 0
    if channel.type == PRIVATE_THREAD and user_id not in channel.thread_member_ids:
        if not value & MANAGE_THREADS:
            return 0
    return value
