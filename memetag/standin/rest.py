"""The stand-in's REST API under ``/api/v10``, its CDN, and the middleware around both.

Responses follow what discord.py 2.7's HTTP client needs (discord-standin.md, §3): bodies are
JSON with a Content-Type of exactly ``application/json``; no rate-limit headers except on a
forced 429, which carries ``Via`` and ``retry_after``; errors are ``{"message", "code"}``.
Permission checks use the bot's resolved channel permissions, with Discord's error codes.
Interaction callbacks and webhook routes need no Authorization header, as on Discord.
"""

from __future__ import annotations

import contextvars
import fnmatch
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from memetag.standin import payloads
from memetag.standin.model import (
    ADD_REACTIONS,
    ATTACH_FILES,
    AUTOCOMPLETE,
    CREATE_PRIVATE_THREADS,
    CREATE_PUBLIC_THREADS,
    EMBED_LINKS,
    EPHEMERAL,
    LOADING,
    MANAGE_MESSAGES,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    NEWS,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    READ_HISTORY,
    SEND_IN_THREADS,
    SEND_MESSAGES,
    TEXT,
    VIEW_CHANNEL,
    Channel,
    Guild,
    Interaction,
    InteractionCallback,
    Message,
    ReactionEmoji,
    channel_permissions,
)
from memetag.standin.ratelimits import MAJOR_PARAMETERS, Verdict

if TYPE_CHECKING:
    from memetag.standin.server import StandinDiscord

API = "/api/v10"
# True while a REST handler runs: the events it dispatches echo the bot's own call, and making
# the handler wait for the client to read them would only delay the bot's response.
IN_REST: contextvars.ContextVar[bool] = contextvars.ContextVar("standin_in_rest", default=False)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_CONTENT = 2000
FOLLOWUP_LIFETIME_S = 15 * 60


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON body with the exact Content-Type discord.py checks for."""
    return web.Response(
        body=json.dumps(obj).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class ApiError(Exception):
    """An error answer in Discord's shape: HTTP status plus a JSON error code."""

    def __init__(self, status: int, code: int, message: str, errors: Any = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(body, self.status)


def form_error(message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", {"_errors": [{"message": message}]})


UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_GUILD = (404, 10004, "Unknown Guild")
MISSING_ACCESS = (403, 50001, "Missing Access")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")


@dataclass
class RecordedRequest:
    """One request the bot made, as the stand-in saw it."""

    method: str
    path: str  # relative to /api/v10 for API calls; the full path otherwise
    query: dict[str, str]
    body: Any = None
    files: list[str] = field(default_factory=list)
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


_RECORD = web.RequestKey("standin_record", RecordedRequest)
_VERDICT = web.RequestKey("standin_rate_limit", Verdict)


@dataclass
class FailureRule:
    """Answer the next ``times`` matching requests with an error instead of handling them."""

    method: str
    pattern: str
    status: int
    code: int = 0
    message: str = ""
    retry_after: float = 0.05
    is_global: bool = False
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and method == self.method and fnmatch.fnmatchcase(path, self.pattern)

    def response(self) -> web.Response:
        if self.status == 429:
            return rate_limited(
                self.retry_after, is_global=self.is_global, code=self.code, message=self.message
            )
        return ApiError(self.status, self.code, self.message or f"{self.status} forced").response()


def rate_limited(
    retry_after: float, *, is_global: bool = False, code: int = 0, message: str = ""
) -> web.Response:
    """Discord's 429: the JSON body with ``retry_after`` (seconds) and the ``Via`` header, without
    which discord.py takes it for a Cloudflare ban and does not retry."""
    body = {
        "message": message or "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
        "code": code,
    }
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    return json_response(body, 429, headers)


async def read_body(request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
    """JSON body, or multipart ``payload_json`` plus ``files[n]`` parts, as discord.py sends."""
    if request.content_type.startswith("multipart/"):
        body: Any = {}
        files: list[tuple[str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            name = part.name or ""
            if name == "payload_json":
                body = json.loads(await part.text())
            elif name.startswith("files["):
                files.append((part.filename or "file", bytes(await part.read())))
        return body, files
    if not request.can_read_body:
        return None, []
    text = await request.text()
    return (json.loads(text) if text else None), []


class RestApi:
    """Route handlers; all state lives on the :class:`StandinDiscord` they were built with."""

    def __init__(self, discord: StandinDiscord) -> None:
        self.d = discord

    # -- wiring -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        def api(method: str, path: str, handler: Handler) -> None:
            app.router.add_route(method, API + path, handler)

        msg = "/channels/{channel_id}/messages/{message_id}"
        api("GET", "/users/@me", self.get_me)
        api("POST", "/users/@me/channels", self.create_dm)
        api("GET", "/users/{user_id}", self.get_user)
        api("GET", "/oauth2/applications/@me", self.get_application)
        api("GET", "/applications/@me", self.get_application)
        api("GET", "/gateway", self.get_gateway)
        api("GET", "/gateway/bot", self.get_gateway_bot)
        api("GET", "/channels/{channel_id}", self.get_channel)
        api("GET", "/channels/{channel_id}/messages", self.list_messages)
        api("POST", "/channels/{channel_id}/messages", self.create_message)
        api("POST", "/channels/{channel_id}/messages/bulk-delete", self.bulk_delete)
        api("GET", msg, self.get_message)
        api("PATCH", msg, self.edit_message)
        api("DELETE", msg, self.delete_message)
        api("DELETE", msg + "/reactions", self.clear_reactions)
        api("GET", msg + "/reactions/{emoji}", self.list_reaction_users)
        api("DELETE", msg + "/reactions/{emoji}", self.clear_emoji)
        api("PUT", msg + "/reactions/{emoji}/{user}", self.add_reaction)
        api("DELETE", msg + "/reactions/{emoji}/{user}", self.remove_reaction)
        api("POST", msg + "/threads", self.thread_from_message)
        api("POST", "/channels/{channel_id}/threads", self.thread_without_message)
        api("PUT", "/channels/{channel_id}/thread-members/@me", self.join_thread)
        api("DELETE", "/channels/{channel_id}/thread-members/@me", self.leave_thread)
        api("POST", "/channels/{channel_id}/typing", self.typing)
        api("GET", "/guilds/{guild_id}", self.get_guild)
        api("GET", "/guilds/{guild_id}/channels", self.list_guild_channels)
        api("GET", "/guilds/{guild_id}/roles", self.list_roles)
        api("GET", "/guilds/{guild_id}/members", self.list_members)
        api("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member)
        api("GET", "/guilds/{guild_id}/threads/active", self.list_active_threads)
        for scope in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):
            api("GET", scope + "/commands", self.list_commands)
            api("PUT", scope + "/commands", self.overwrite_commands)
            api("POST", scope + "/commands", self.create_command)
            api("GET", scope + "/commands/{command_id}", self.get_command)
            api("PATCH", scope + "/commands/{command_id}", self.edit_command)
            api("DELETE", scope + "/commands/{command_id}", self.delete_command)
        api("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback)
        api("POST", "/webhooks/{app_id}/{token}", self.create_followup)
        api("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message)
        api("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.edit_webhook_message)
        api(
            "DELETE",
            "/webhooks/{app_id}/{token}/messages/{message_id}",
            self.delete_webhook_message,
        )
        for prefix in ("/cdn", "/media"):
            app.router.add_get(
                prefix + "/attachments/{channel_id}/{attachment_id}/{filename}", self.cdn
            )
        app.router.add_get("/external/{key}/{filename}", self.external)
        app.router.add_get("/cdn/external/{key}/{filename}", self.external)
        app.router.add_route("*", "/{tail:.*}", self.unhandled)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        relative = path[len(API) :] if path.startswith(API + "/") else path
        record = RecordedRequest(request.method, relative, dict(request.query))
        if request.method in ("POST", "PUT", "PATCH"):
            request[_RECORD] = record
        self.d.requests.append(record)
        in_rest = IN_REST.set(True)
        try:
            response = await self._handle(request, handler, record, relative)
        except ApiError as error:
            response = error.response()
        except web.HTTPException:
            raise
        except Exception as exc:  # a stand-in bug; answer 400 so discord.py does not retry
            self.d.report_failure(exc)
            response = ApiError(400, 0, f"stand-in error: {exc!r}").response()
        finally:
            IN_REST.reset(in_rest)
        verdict = request.get(_VERDICT)
        if verdict is not None and not response.prepared:
            response.headers.update(verdict.headers)
        record.status = response.status
        self.d.notify()
        return response

    async def _handle(
        self, request: web.Request, handler: Handler, record: RecordedRequest, relative: str
    ) -> web.StreamResponse:
        for rule in self.d.failure_rules:
            if rule.matches(request.method, relative):
                rule.times -= 1
                rule.hits += 1
                return rule.response()
        if request.path.startswith(API + "/"):
            exempt = relative.startswith(("/interactions/", "/webhooks/"))
            if not exempt and request.headers.get("Authorization") != f"Bot {self.d.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            route = request.match_info.route.resource
            template = route.canonical if route is not None else ""
            if template.startswith(API + "/"):
                info = request.match_info
                major = next((info[k] for k in MAJOR_PARAMETERS if k in info), "")
                verdict = self.d.rate_limits.take(request.method, template, major, relative)
                request[_VERDICT] = verdict
                if verdict.retry_after is not None:
                    return rate_limited(round(verdict.retry_after, 3))
        return await handler(request)

    async def body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        body, files = await read_body(request)
        record = request.get(_RECORD)
        if record is not None:
            record.body = body
            record.files = [name for name, _ in files]
        return body, files

    # -- lookups with Discord's errors ------------------------------------------------------

    def channel(self, request: web.Request, need: int = 0) -> tuple[Channel, int]:
        raw = request.match_info["channel_id"]
        found = self.d.channels.get(int(raw)) if raw.isdigit() else None
        if found is None:
            raise ApiError(*UNKNOWN_CHANNEL)
        if found.is_dm and self.d.bot_user not in found.recipients:
            raise ApiError(*MISSING_ACCESS)
        perms = channel_permissions(found, self.d.bot_user.id)
        if not perms & VIEW_CHANNEL:
            raise ApiError(*MISSING_ACCESS)
        if perms & need != need:
            raise ApiError(*MISSING_PERMISSIONS)
        return found, perms

    def message(self, channel: Channel, request: web.Request) -> Message:
        raw = request.match_info["message_id"]
        found = channel.messages.get(int(raw)) if raw.isdigit() else None
        if found is None:
            raise ApiError(*UNKNOWN_MESSAGE)
        return found

    def guild(self, request: web.Request) -> Guild:
        raw = request.match_info["guild_id"]
        found = self.d.guilds.get(int(raw)) if raw.isdigit() else None
        if found is None:
            raise ApiError(*UNKNOWN_GUILD)
        if self.d.bot_user.id not in found.members:
            raise ApiError(*MISSING_ACCESS)
        return found

    def emoji(self, request: web.Request) -> ReactionEmoji:
        try:
            parsed = ReactionEmoji.from_route(request.match_info["emoji"])
        except ValueError:
            raise ApiError(400, 10014, "Unknown Emoji") from None
        if parsed.id is not None and self.d.find_emoji(parsed.id) is None:
            raise ApiError(400, 10014, "Unknown Emoji")
        return parsed

    def message_json(self, message: Message) -> dict[str, Any]:
        return self.d.message_payload(message, for_rest=True)

    # -- users, application, gateway --------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        data = payloads.user(self.d.bot_user)
        data.update({"verified": True, "mfa_enabled": False, "locale": "en-US", "email": None})
        return json_response(data)

    async def get_user(self, request: web.Request) -> web.Response:
        raw = request.match_info["user_id"]
        found = self.d.users.get(int(raw)) if raw.isdigit() else None
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(payloads.user(found))

    async def create_dm(self, request: web.Request) -> web.Response:
        body, _ = await self.body(request)
        raw = str((body or {}).get("recipient_id", ""))
        recipient = self.d.users.get(int(raw)) if raw.isdigit() else None
        if recipient is None:
            raise form_error("recipient_id: unknown user")
        if recipient.bot:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return json_response(payloads.channel(self.d.dm_channel(recipient)))

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(
            payloads.application(self.d.application_id, self.d.bot_user.name, self.d.owner)
        )

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.d.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.d.gateway_url, "shards": 1, "session_start_limit": limit})

    # -- channels and messages --------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request)
        return json_response(payloads.channel(channel))

    async def list_messages(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        q = request.query
        limit = int(q.get("limit", 50))
        if not 1 <= limit <= 100:
            raise form_error("limit: must be between 1 and 100")
        if not perms & READ_HISTORY:
            return json_response([])
        ordered = sorted(channel.messages.values(), key=lambda m: m.id)
        if "around" in q:
            pivot = int(q["around"])
            older = [m for m in ordered if m.id < pivot]
            newer = [m for m in ordered if m.id >= pivot]
            half = limit // 2
            chosen = (older[-half:] if half else []) + newer[: limit - half]
        elif "before" in q:
            chosen = [m for m in ordered if m.id < int(q["before"])][-limit:]
        elif "after" in q:
            chosen = [m for m in ordered if m.id > int(q["after"])][:limit]
        else:
            chosen = ordered[-limit:]
        # Discord answers newest first for every strategy, `after` included.
        return json_response([self.message_json(m) for m in reversed(chosen)])

    async def get_message(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, READ_HISTORY)
        return json_response(self.message_json(self.message(channel, request)))

    async def create_message(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        if not perms & (SEND_IN_THREADS if channel.is_thread else SEND_MESSAGES):
            raise ApiError(*MISSING_PERMISSIONS)
        if channel.is_thread and (channel.archived or channel.locked):
            raise ApiError(400, 50083, "Thread is archived")
        body, files = await self.body(request)
        body = body or {}
        if files and not perms & ATTACH_FILES:
            raise ApiError(*MISSING_PERMISSIONS)
        reference = None
        ref = body.get("message_reference")
        if ref:
            reference = channel.messages.get(int(ref.get("message_id", 0)))
            if reference is None and ref.get("fail_if_not_exists", True):
                raise form_error("message_reference: Unknown message")
        fields = self.message_fields(body, files, channel, perms, existing=None)
        message = await self.d.create_bot_message(
            channel, fields, reference=reference, sent_payload=body
        )
        return json_response(self.message_json(message))

    def message_fields(
        self,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
        channel: Channel,
        perms: int,
        existing: Message | None,
    ) -> dict[str, Any]:
        """Validate the message part of a create/edit body; returns only the fields it sets."""
        fields: dict[str, Any] = {}
        if "content" in body or existing is None:
            content = body.get("content") or ""
            if len(content) > MAX_CONTENT:
                raise form_error(f"content: Must be {MAX_CONTENT} or fewer in length.")
            fields["content"] = content
        if "embeds" in body or existing is None:
            embeds = list(body.get("embeds") or [])
            if len(embeds) > 10:
                raise form_error("embeds: Must be 10 or fewer in length.")
            fields["embeds"] = embeds if perms & EMBED_LINKS else []
        if "components" in body or existing is None:
            fields["components"] = list(body.get("components") or [])
        if "attachments" in body or files or existing is None:
            listed = body.get("attachments")
            kept = []
            if existing is not None and listed is not None:
                keep_ids = {str(a.get("id")) for a in listed}
                kept = [a for a in existing.attachments if str(a.id) in keep_ids]
            elif existing is not None:
                kept = list(existing.attachments)
            new = []
            by_index = {str(a.get("id")): a for a in (listed or [])}
            for index, (filename, data) in enumerate(files):
                meta = by_index.get(str(index), {})
                new.append(
                    self.d.make_attachment(
                        channel,
                        meta.get("filename", filename),
                        data,
                        description=meta.get("description"),
                    )
                )
            fields["attachments"] = kept + new
        if "flags" in body and body["flags"] is not None:
            fields["flags"] = int(body["flags"])
        if "allowed_mentions" in body:
            fields["allowed_mentions"] = body["allowed_mentions"]
        if "tts" in body:
            fields["tts"] = bool(body["tts"])
        if body.get("poll"):
            raise ApiError(400, 0, "polls are not supported by the stand-in")
        sticker_ids = body.get("sticker_ids") or []
        probe = {
            "content": fields.get("content", existing.content if existing else ""),
            "embeds": fields.get("embeds", existing.embeds if existing else []),
            "attachments": fields.get("attachments", existing.attachments if existing else []),
            "components": fields.get("components", existing.components if existing else []),
        }
        if not any(probe.values()) and not sticker_ids:
            raise ApiError(400, 50006, "Cannot send an empty message")
        allowed = fields.get("allowed_mentions")
        if allowed:
            parse = set(allowed.get("parse", []))
            if "users" in parse and allowed.get("users"):
                raise form_error("allowed_mentions: parse:[users] and users: [ids] are exclusive")
            if "roles" in parse and allowed.get("roles"):
                raise form_error("allowed_mentions: parse:[roles] and roles: [ids] are exclusive")
        return fields

    async def edit_message(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        message = self.message(channel, request)
        body, files = await self.body(request)
        body = body or {}
        if message.author.id != self.d.bot_user.id:
            if set(body) - {"flags"} or files:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
            if not perms & MANAGE_MESSAGES:
                raise ApiError(*MISSING_PERMISSIONS)
        fields = self.message_fields(body, files, channel, perms, existing=message)
        await self.d.update_message(message, fields, sent_payload=body)
        return json_response(self.message_json(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        message = self.message(channel, request)
        if message.author.id != self.d.bot_user.id and (
            channel.is_dm or not perms & MANAGE_MESSAGES
        ):
            raise ApiError(*MISSING_PERMISSIONS)
        await self.d.remove_message(message)
        return web.Response(status=204)

    async def bulk_delete(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, MANAGE_MESSAGES)
        body, _ = await self.body(request)
        ids = [int(i) for i in (body or {}).get("messages", [])]
        if not 2 <= len(ids) <= 100:
            raise form_error("messages: must hold 2 to 100 ids")
        found = [channel.messages[i] for i in ids if i in channel.messages]
        await self.d.remove_messages(channel, found)
        return web.Response(status=204)

    # -- reactions --------------------------------------------------------------------------

    async def add_reaction(self, request: web.Request) -> web.Response:
        if request.match_info["user"] != "@me":
            raise ApiError(405, 0, "405: Method Not Allowed")
        channel, perms = self.channel(request, READ_HISTORY)
        message = self.message(channel, request)
        emoji = self.emoji(request)
        if not message.reactions.get(emoji):
            if not perms & ADD_REACTIONS:
                raise ApiError(*MISSING_PERMISSIONS)
            if sum(1 for users in message.reactions.values() if users) >= 20:
                raise ApiError(400, 30010, "Maximum number of reactions reached (20)")
        await self.d.apply_reaction(message, self.d.bot_user, emoji, add=True)
        return web.Response(status=204)

    async def remove_reaction(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request, READ_HISTORY)
        message = self.message(channel, request)
        emoji = self.emoji(request)
        who = request.match_info["user"]
        if who == "@me":
            target = self.d.bot_user
        else:
            if not perms & MANAGE_MESSAGES:
                raise ApiError(*MISSING_PERMISSIONS)
            found = self.d.users.get(int(who)) if who.isdigit() else None
            if found is None:
                raise ApiError(404, 10013, "Unknown User")
            target = found
        await self.d.apply_reaction(message, target, emoji, add=False)
        return web.Response(status=204)

    async def list_reaction_users(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, READ_HISTORY)
        message = self.message(channel, request)
        emoji = self.emoji(request)
        limit = int(request.query.get("limit", 25))
        if not 1 <= limit <= 100:
            raise form_error("limit: must be between 1 and 100")
        if request.query.get("type", "0") != "0":  # burst reactions: none exist here
            return json_response([])
        after = int(request.query.get("after", 0))
        ids = sorted(i for i in message.reactions.get(emoji, []) if i > after)[:limit]
        return json_response([payloads.user(self.d.users[i]) for i in ids])

    async def clear_reactions(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, MANAGE_MESSAGES)
        message = self.message(channel, request)
        await self.d.clear_reactions(message, None)
        return web.Response(status=204)

    async def clear_emoji(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, MANAGE_MESSAGES)
        message = self.message(channel, request)
        await self.d.clear_reactions(message, self.emoji(request))
        return web.Response(status=204)

    # -- threads and typing -----------------------------------------------------------------

    async def thread_from_message(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request, CREATE_PUBLIC_THREADS | READ_HISTORY)
        if channel.type not in (TEXT, NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        message = self.message(channel, request)
        if message.thread is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body, _ = await self.body(request)
        name = self.thread_name(body)
        thread = await self.d.open_thread(
            channel,
            name,
            owner=self.d.bot_user,
            kind=PUBLIC_THREAD,
            starter=message,
            auto_archive_duration=int((body or {}).get("auto_archive_duration") or 1440),
        )
        return json_response(payloads.channel(thread), 201)

    async def thread_without_message(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        if channel.type not in (TEXT, NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body, _ = await self.body(request)
        kind = int((body or {}).get("type") or PRIVATE_THREAD)
        if kind not in (PUBLIC_THREAD, PRIVATE_THREAD):
            raise form_error("type: must be 11 or 12")
        need = CREATE_PUBLIC_THREADS if kind == PUBLIC_THREAD else CREATE_PRIVATE_THREADS
        if not perms & need:
            raise ApiError(*MISSING_PERMISSIONS)
        thread = await self.d.open_thread(
            channel,
            self.thread_name(body),
            owner=self.d.bot_user,
            kind=kind,
            auto_archive_duration=int((body or {}).get("auto_archive_duration") or 1440),
        )
        return json_response(payloads.channel(thread), 201)

    @staticmethod
    def thread_name(body: Any) -> str:
        name = str((body or {}).get("name") or "")
        if not 1 <= len(name) <= 100:
            raise form_error("name: must be 1 to 100 characters")
        return name

    async def join_thread(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request)
        if not channel.is_thread:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        channel.thread_member_ids.add(self.d.bot_user.id)
        return web.Response(status=204)

    async def leave_thread(self, request: web.Request) -> web.Response:
        channel, _ = self.channel(request)
        channel.thread_member_ids.discard(self.d.bot_user.id)
        return web.Response(status=204)

    async def typing(self, request: web.Request) -> web.Response:
        channel, perms = self.channel(request)
        if not perms & (SEND_IN_THREADS if channel.is_thread else SEND_MESSAGES):
            raise ApiError(*MISSING_PERMISSIONS)
        self.d.typing[channel.id] += 1
        return web.Response(status=204)

    # -- guilds -----------------------------------------------------------------------------

    async def get_guild(self, request: web.Request) -> web.Response:
        return json_response(payloads.guild(self.guild(request)))

    async def list_guild_channels(self, request: web.Request) -> web.Response:
        g = self.guild(request)
        return json_response([payloads.channel(c) for c in g.channels.values() if not c.is_thread])

    async def list_roles(self, request: web.Request) -> web.Response:
        return json_response([payloads.role(r) for r in self.guild(request).roles.values()])

    async def list_members(self, request: web.Request) -> web.Response:
        g = self.guild(request)
        if "members" not in self.d.privileged_intents:
            raise ApiError(*MISSING_ACCESS)
        limit = int(request.query.get("limit", 1))
        if not 1 <= limit <= 1000:
            raise form_error("limit: must be between 1 and 1000")
        after = int(request.query.get("after", 0))
        chosen = sorted(
            (m for m in g.members.values() if m.user.id > after), key=lambda m: m.user.id
        )
        return json_response([payloads.member(m) for m in chosen[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        g = self.guild(request)
        raw = request.match_info["user_id"]
        found = g.members.get(int(raw)) if raw.isdigit() else None
        if found is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(payloads.member(found))

    async def list_active_threads(self, request: web.Request) -> web.Response:
        g = self.guild(request)
        threads = [t for t in g.threads if not t.archived]
        members = [
            {
                "id": str(t.id),
                "user_id": str(self.d.bot_user.id),
                "join_timestamp": None,
                "flags": 0,
            }
            for t in threads
            if self.d.bot_user.id in t.thread_member_ids
        ]
        return json_response(
            {"threads": [payloads.channel(t) for t in threads], "members": members}
        )

    # -- application commands ---------------------------------------------------------------

    def command_scope(self, request: web.Request) -> int | None:
        if request.match_info["app_id"] != str(self.d.application_id):
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" in request.match_info:
            return self.guild(request).id
        return None

    def find_command(self, request: web.Request) -> tuple[int | None, dict[str, Any]]:
        scope = self.command_scope(request)
        wanted = request.match_info["command_id"]
        for command in self.d.commands.get(scope, []):
            if command["id"] == wanted:
                return scope, command
        raise ApiError(404, 10063, "Unknown application command")

    async def list_commands(self, request: web.Request) -> web.Response:
        return json_response(self.d.commands.get(self.command_scope(request), []))

    async def overwrite_commands(self, request: web.Request) -> web.Response:
        scope = self.command_scope(request)
        body, _ = await self.body(request)
        if not isinstance(body, list):
            raise form_error("body: expected a list of commands")
        stored = self.d.store_commands(scope, body, replace=True)
        return json_response(stored)

    async def create_command(self, request: web.Request) -> web.Response:
        scope = self.command_scope(request)
        body, _ = await self.body(request)
        stored = self.d.store_commands(scope, [body], replace=False)
        return json_response(stored[0], 201)

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self.find_command(request)[1])

    async def edit_command(self, request: web.Request) -> web.Response:
        scope, command = self.find_command(request)
        body, _ = await self.body(request)
        merged = {**command, **(body or {})}
        stored = self.d.store_commands(scope, [merged], replace=False)
        return json_response(stored[0])

    async def delete_command(self, request: web.Request) -> web.Response:
        scope, command = self.find_command(request)
        self.d.commands[scope] = [c for c in self.d.commands[scope] if c is not command]
        return web.Response(status=204)

    # -- interactions -----------------------------------------------------------------------

    def interaction_for(self, request: web.Request, *, key: str) -> Interaction:
        raw = request.match_info[key]
        if key == "interaction_id":
            found = self.d.interactions.get(int(raw)) if raw.isdigit() else None
        else:
            found = self.d.interaction_by_token(request.match_info["token"])
            if found is not None and raw != str(self.d.application_id):
                found = None
        if found is None or found.token != request.match_info["token"]:
            if key == "interaction_id":
                raise ApiError(404, 10062, "Unknown interaction")
            raise ApiError(404, 10015, "Unknown Webhook")
        return found

    async def interaction_callback(self, request: web.Request) -> web.StreamResponse:
        interaction = self.interaction_for(request, key="interaction_id")
        deadline = self.d.interaction_deadline
        if deadline is not None and time.monotonic() - interaction.created > deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        if interaction.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body, files = await self.body(request)
        body = body or {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        channel = interaction.channel
        perms = channel_permissions(channel, self.d.bot_user.id) | EMBED_LINKS | ATTACH_FILES
        message: Message | None = None
        loading = False
        if kind in (4, 5):
            if kind == 4:
                fields = self.message_fields(data, files, channel, perms, existing=None)
            else:
                fields = {"content": "", "flags": LOADING}
                loading = True
            fields["flags"] = fields.get("flags", 0) | (data.get("flags", 0) & EPHEMERAL)
            message = await self.d.create_interaction_message(
                interaction, fields, sent_payload=data
            )
            interaction.original = message
        elif kind in (6, 7):
            if (
                interaction.type not in (MESSAGE_COMPONENT, MODAL_SUBMIT)
                or interaction.message is None
            ):
                raise ApiError(400, 40004, f"Interaction response type {kind} needs a message")
            if kind == 7:
                target = interaction.message
                fields = self.message_fields(data, files, channel, perms, existing=target)
                await self.d.update_message(target, fields, sent_payload=data)
                message = target
            interaction.original = interaction.message
        elif kind == 8:
            if interaction.type != AUTOCOMPLETE:
                raise ApiError(400, 40004, "Autocomplete results answer autocomplete only")
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise form_error("choices: Must be 25 or fewer in length.")
            interaction.choices = choices
        elif kind == 9:
            if interaction.type in (MODAL_SUBMIT, AUTOCOMPLETE):
                raise ApiError(400, 40004, "A modal cannot answer this interaction")
            if not data.get("custom_id") or not data.get("title") or not data.get("components"):
                raise form_error("modal: custom_id, title and components are required")
            interaction.modal = data
        else:
            raise form_error(f"type: unsupported interaction callback type {kind}")
        interaction.callbacks.append(InteractionCallback(interaction, kind, data, message))
        self.d.interaction_responses.append(interaction.callbacks[-1])
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": loading,
                "response_message_ephemeral": bool(message and message.ephemeral),
            },
            "resource": {"type": kind},
        }
        if message is not None:
            result["interaction"]["response_message_id"] = str(message.id)
            result["resource"]["message"] = self.message_json(message)
        return json_response(result)

    def webhook_interaction(self, request: web.Request) -> Interaction:
        interaction = self.interaction_for(request, key="app_id")
        if time.monotonic() - interaction.created > FOLLOWUP_LIFETIME_S:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if not interaction.callbacks:
            raise ApiError(404, 10015, "Unknown Webhook")
        return interaction

    def webhook_message(self, request: web.Request, interaction: Interaction) -> Message:
        wanted = request.match_info["message_id"]
        if wanted == "@original":
            if interaction.original is None:
                raise ApiError(*UNKNOWN_MESSAGE)
            return interaction.original
        for message in [interaction.original, *interaction.followups]:
            if message is not None and str(message.id) == wanted:
                return message
        raise ApiError(*UNKNOWN_MESSAGE)

    async def create_followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self.webhook_interaction(request)
        body, files = await self.body(request)
        body = body or {}
        channel = interaction.channel
        perms = channel_permissions(channel, self.d.bot_user.id) | EMBED_LINKS | ATTACH_FILES
        original = interaction.original
        if original is not None and original.loading:
            # After a defer, the first followup replaces the "thinking..." message.
            fields = self.message_fields(body, files, channel, perms, existing=original)
            fields["flags"] = original.flags & EPHEMERAL
            await self.d.update_message(original, fields, sent_payload=body)
            message = original
        else:
            fields = self.message_fields(body, files, channel, perms, existing=None)
            fields["flags"] = int(body.get("flags") or 0) & EPHEMERAL
            message = await self.d.create_interaction_message(
                interaction, fields, sent_payload=body
            )
            interaction.followups.append(message)
        if request.query.get("wait") not in ("1", "true", "True"):
            return web.Response(status=204)
        return json_response(self.message_json(message))

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self.webhook_interaction(request)
        return json_response(self.message_json(self.webhook_message(request, interaction)))

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self.webhook_interaction(request)
        message = self.webhook_message(request, interaction)
        body, files = await self.body(request)
        body = body or {}
        channel = interaction.channel
        perms = channel_permissions(channel, self.d.bot_user.id) | EMBED_LINKS | ATTACH_FILES
        fields = self.message_fields(body, files, channel, perms, existing=message)
        fields["flags"] = (message.flags & ~LOADING) | (fields.get("flags", 0) & EPHEMERAL)
        await self.d.update_message(message, fields, sent_payload=body)
        return json_response(self.message_json(message))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        interaction = self.webhook_interaction(request)
        message = self.webhook_message(request, interaction)
        await self.d.remove_message(message)
        return web.Response(status=204)

    # -- CDN and the catch-all --------------------------------------------------------------

    async def _held(self) -> None:
        if not self.d.downloads_open.is_set():
            self.d.downloads_waiting += 1
            self.d.notify()
            try:
                await self.d.downloads_open.wait()
            finally:
                self.d.downloads_waiting -= 1

    async def cdn(self, request: web.Request) -> web.Response:
        await self._held()
        raw = request.match_info["attachment_id"]
        found = self.d.attachments.get(int(raw)) if raw.isdigit() else None
        if found is None or found.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        self.d.cdn_hits[found.id] += 1
        return web.Response(
            body=found.data, content_type=found.content_type or "application/octet-stream"
        )

    async def external(self, request: web.Request) -> web.Response:
        await self._held()
        hosted = self.d.hosted.get(request.match_info["key"])
        if hosted is None or hosted[0] != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        self.d.cdn_hits[request.match_info["key"]] += 1
        return web.Response(body=hosted[1], content_type=hosted[2])

    async def unhandled(self, request: web.Request) -> web.Response:
        self.d.unhandled.append(f"{request.method} {request.path}")
        return json_response({"message": "404: Not Found", "code": 0}, 404)
