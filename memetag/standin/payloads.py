"""Every JSON shape the stand-in sends, built in one place so a discord.py upgrade is one file to fix.

The keys marked "required" in /work/shared/discord-standin.md (indexed with ``data[...]`` by
discord.py 2.7) are always present: a missing one raises inside the client's gateway parser and
kills ``bot.start()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from memetag.standin.model import (
    DM,
    Attachment,
    Channel,
    CustomEmoji,
    Guild,
    Interaction,
    Member,
    Message,
    ReactionEmoji,
    Role,
    User,
    channel_permissions,
    iso,
    snowflake_time,
)

ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


def user(u: User) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "username": u.name,
        "global_name": u.global_name,
        "discriminator": "0",
        "avatar": None,
        "bot": u.bot,
        "public_flags": 0,
        "flags": 0,
    }


def role(r: Role) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(r.id),
        "name": r.name,
        "permissions": str(r.permissions),
        "position": r.position,
        "color": r.color,
        "colors": {"primary_color": r.color, "secondary_color": None, "tertiary_color": None},
        "hoist": r.hoist,
        "managed": r.managed,
        "mentionable": r.mentionable,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if r.bot_id is not None:
        data["tags"] = {"bot_id": str(r.bot_id)}
    return data


def member(m: Member, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [str(r.id) for r in m.roles],
        "nick": m.nick,
        "avatar": None,
        "joined_at": iso(m.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user(m.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def emoji(e: CustomEmoji) -> dict[str, Any]:
    return {
        "id": str(e.id),
        "name": e.name,
        "roles": [],
        "require_colons": True,
        "managed": False,
        "animated": e.animated,
        "available": True,
    }


def reaction_emoji(e: ReactionEmoji) -> dict[str, Any]:
    if e.id is None:
        return {"id": None, "name": e.name}
    return {"id": str(e.id), "name": e.name, "animated": e.animated}


def overwrite_list(c: Channel) -> list[dict[str, Any]]:
    return [
        {"id": str(o.target_id), "type": o.kind, "allow": str(o.allow), "deny": str(o.deny)}
        for o in c.overwrites.values()
    ]


def channel(c: Channel, *, viewer_id: int | None = None) -> dict[str, Any]:
    """A channel or thread object. ``viewer_id`` adds the ``permissions`` field interactions carry."""
    last = max(c.messages, default=None)
    if c.type == DM:
        return {
            "id": str(c.id),
            "type": DM,
            "recipients": [user(u) for u in c.recipients],
            "last_message_id": str(last) if last else None,
            "flags": 0,
        }
    assert c.guild is not None
    data: dict[str, Any] = {
        "id": str(c.id),
        "type": c.type,
        "guild_id": str(c.guild.id),
        "name": c.name,
        "position": c.position,
        "permission_overwrites": overwrite_list(c),
        "parent_id": str(c.parent_id) if c.parent_id else None,
        "topic": c.topic,
        "nsfw": False,
        "last_message_id": str(last) if last else None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }
    if c.is_thread:
        data.pop("permission_overwrites")
        data.pop("position")
        data.update(
            {
                "owner_id": str(c.owner_id),
                "message_count": len(c.messages),
                "total_message_sent": len(c.messages),
                "member_count": len(c.thread_member_ids),
                "thread_metadata": {
                    "archived": c.archived,
                    "locked": c.locked,
                    "auto_archive_duration": c.auto_archive_duration,
                    "archive_timestamp": iso(c.created_at),
                    "create_timestamp": iso(c.created_at),
                    "invitable": True,
                },
            }
        )
    if viewer_id is not None:
        data["permissions"] = str(channel_permissions(c, viewer_id))
    return data


def guild(g: Guild) -> dict[str, Any]:
    """The REST guild object (no channels or members, as ``GET /guilds/{id}`` returns)."""
    return {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(g.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role(r) for r in g.roles.values()],
        "emojis": [emoji(e) for e in g.emojis.values()],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "max_members": 500000,
        "approximate_member_count": len(g.members),
    }


def guild_create(g: Guild, *, members: Iterable[Member], joined_at: str) -> dict[str, Any]:
    listed = list(members)
    data = guild(g)
    data.pop("approximate_member_count")
    data.update(
        {
            "unavailable": False,
            "joined_at": joined_at,
            "large": False,
            "lazy": True,
            "member_count": len(g.members),
            "members": [member(m) for m in listed],
            "channels": [channel(c) for c in g.channels.values() if not c.is_thread],
            "threads": [channel(c) for c in g.threads if not c.archived],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
    )
    return data


def attachment(a: Attachment, base_url: str) -> dict[str, Any]:
    # Real attachment URLs carry signed expiry parameters; a bot must not treat them as stable keys.
    query = f"?ex={a.id % 0xFFFFFFFF:08x}&is={(a.id >> 22) % 0xFFFFFFFF:08x}&hm={a.id:x}&"
    data: dict[str, Any] = {
        "id": str(a.id),
        "filename": a.filename,
        "size": len(a.data),
        "url": f"{base_url}/cdn{a.path}{query}",
        "proxy_url": f"{base_url}/media{a.path}{query}",
        "content_type": a.content_type,
        "width": a.width,
        "height": a.height,
        "flags": 0,
    }
    if a.description is not None:
        data["description"] = a.description
    return data


def reactions(m: Message, me_id: int) -> list[dict[str, Any]]:
    return [
        {
            "emoji": reaction_emoji(e),
            "count": len(users),
            "count_details": {"burst": 0, "normal": len(users)},
            "me": me_id in users,
            "me_burst": False,
            "burst_colors": [],
        }
        for e, users in m.reactions.items()
        if users
    ]


def message(
    m: Message,
    *,
    base_url: str,
    me_id: int,
    get_user: Callable[[int], User | None],
    nested: bool = False,
) -> dict[str, Any]:
    g = m.guild
    data: dict[str, Any] = {
        "id": str(m.id),
        "channel_id": str(m.channel.id),
        "type": m.type,
        "content": m.content,
        "author": user(m.author),
        "attachments": [attachment(a, base_url) for a in m.attachments],
        "embeds": [dict(e) for e in m.embeds],
        "components": [dict(c) for c in m.components],
        "mentions": [],
        "mention_roles": [str(r) for r in m.mention_role_ids],
        "mention_everyone": m.mention_everyone,
        "timestamp": iso(snowflake_time(m.id)),
        "edited_timestamp": iso(m.edited_at) if m.edited_at else None,
        "tts": m.tts,
        "pinned": m.pinned,
        "flags": m.flags,
        "reactions": reactions(m, me_id),
    }
    if g is not None:
        data["guild_id"] = str(g.id)
        author_member = g.members.get(m.author.id)
        if author_member is not None and m.webhook_id is None:
            data["member"] = member(author_member, with_user=False)
    for user_id in m.mention_user_ids:
        mentioned = get_user(user_id)
        if mentioned is None:
            continue
        entry = user(mentioned)
        mentioned_member = g.members.get(user_id) if g is not None else None
        if mentioned_member is not None:
            entry["member"] = member(mentioned_member, with_user=False)
        data["mentions"].append(entry)
    if m.webhook_id is not None:
        data["webhook_id"] = str(m.webhook_id)
    if m.application_id is not None:
        data["application_id"] = str(m.application_id)
    if m.reference_ids is not None:
        ref_id, ref_guild = m.reference_ids
        data["message_reference"] = {
            "type": 0,
            "message_id": str(ref_id),
            "channel_id": str(m.channel.id),
            "fail_if_not_exists": False,
        }
        if ref_guild is not None:
            data["message_reference"]["guild_id"] = str(ref_guild)
        if not nested:
            ref = m.reference
            data["referenced_message"] = (
                None
                if ref is None or ref.deleted
                else message(ref, base_url=base_url, me_id=me_id, get_user=get_user, nested=True)
            )
    if m.thread is not None:
        data["thread"] = channel(m.thread)
    if m.interaction is not None:
        data["interaction_metadata"] = interaction_metadata(m.interaction)
        i = m.interaction
        if i.type == 2:
            data["interaction"] = {
                "id": str(i.id),
                "type": i.type,
                "name": i.data.get("name", ""),
                "user": user(i.user),
            }
    return data


def interaction_metadata(i: Interaction) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(i.id),
        "type": i.type,
        "user": user(i.user),
        "authorizing_integration_owners": (
            {"0": str(i.guild.id)} if i.guild is not None else {"1": str(i.user.id)}
        ),
    }
    if i.original is not None:
        data["original_response_message_id"] = str(i.original.id)
    if i.message is not None:
        data["interacted_message_id"] = str(i.message.id)
    if i.data.get("target_id") and i.data.get("type") == 3:
        data["target_message_id"] = str(i.data["target_id"])
    return data


def application(app_id: int, name: str, owner: User) -> dict[str, Any]:
    return {
        "id": str(app_id),
        "name": name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": user(owner),
        "team": None,
        "flags": 0,
        "interactions_endpoint_url": None,
        "tags": [],
    }
