"""The demo's live part: the real bot against the local stand-in Discord, with scripted members.

The bot is started by :func:`bot.app.run_bot`, the function `memetag bot` runs, with the demo's
config (its channel in "reply" mode, the members' Discord ids in ``[people]``) and the
downloader's private-address guard loosened, because the stand-in's CDN is on 127.0.0.1. Members
then act through the stand-in as people would in Discord: post the later batch, react with a
label emoji, answer "Fix tags", and an admin runs ``/tagger review`` and ``/tagger retrain``.
Everything the bot answers is read back from what it sent to the stand-in and recorded in a
:class:`~memetag.demo.transcript.Transcript`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord as discord_py

from memetag.config import AppConfig
from memetag.demo.samplechat import ADMIN, MEMBERS, NEW_KIND, ChatImage, LivePlan, SampleChat
from memetag.demo.transcript import BOT_NAME, Entry, Transcript, entry_lines
from memetag.standin import Interaction, Message, StandinDiscord, User

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"<#(\d+)>")
_USER = re.compile(r"<@!?(\d+)>")
REPLY_TIMEOUT_S = 60.0
RETRAIN_TIMEOUT_S = 600.0
_SAY = {
    "meme": "lmao",
    "social_media": "did you see this thread",
    "comic_strip": "today's comic",
    "news": "this is real news apparently",
    "photo": "view from my walk",
    NEW_KIND: "this episode though",
}


@dataclass
class LiveResult:
    transcript: Transcript
    reviewed: bool
    retrained: bool
    gate: str | None  # what the retrain answered
    channel_id: int = 0
    # (tagged right, posted) per phase: known kinds, the new kind before and after correcting
    first: tuple[int, int] = (0, 0)
    new: tuple[int, int] = (0, 0)
    after: tuple[int, int] = (0, 0)


def _score(entries: list[Entry]) -> tuple[int, int]:
    posts = [e for e in entries if e.kind == "post"]
    return sum(bool(e.right) for e in posts), len(posts)


def _emoji(cfg: AppConfig, label: str) -> str:
    return next(spec.emoji for spec in cfg.labels if spec.name == label)


class LiveChat:
    """Scripted members in the stand-in, and the transcript of what happened."""

    def __init__(
        self,
        discord: StandinDiscord,
        chat: SampleChat,
        cfg: AppConfig,
        users: Mapping[str, User],
        echo: Callable[[str], None],
    ) -> None:
        self.discord = discord
        self.chat = chat
        self.cfg = cfg
        self.users = users
        self.echo = echo
        self.transcript = Transcript()
        self.replies: dict[int, Message] = {}  # member's message id -> the bot's reply
        self.truth_by_sha = {hashlib.sha256(chat.image_bytes(i)).hexdigest(): i for i in chat.live}

    def _named(self, text: str | None) -> str | None:
        """Mentions as Discord shows them: <#id> as #channel, <@id> as @member."""
        if text is None:
            return None
        channels, users = self.discord.channels, self.discord.users

        def channel(m: re.Match[str]) -> str:
            found = channels.get(int(m[1]))
            return f"#{found.name}" if found is not None else m[0]

        def user(m: re.Match[str]) -> str:
            found = users.get(int(m[1]))
            return f"@{found.name}" if found is not None else m[0]

        return _USER.sub(user, _CHANNEL.sub(channel, text))

    def record(self, entry: Entry) -> Entry:
        entry.text = self._named(entry.text) or ""
        entry.bot = self._named(entry.bot)
        self.transcript.add(entry)
        for line in entry_lines(entry):
            self.echo(line)
        return entry

    def phase(self, text: str) -> None:
        self.record(Entry("phase", text=text))

    def note(self, text: str) -> None:
        self.record(Entry("note", text=text))

    # -- members' gestures --------------------------------------------------------------------

    def _reply_to(self, message: Message) -> Message | None:
        for m in self.discord.bot_messages(self.discord.channel):
            if m.reference_ids and m.reference_ids[0] == message.id:
                return m
        return None

    async def post(self, image: ChatImage) -> tuple[Message, Message]:
        """A member posts one image; returns (their message, the bot's reply)."""
        user = self.users[image.sender]
        data = self.chat.image_bytes(image)
        loop = asyncio.get_running_loop()
        started = loop.time()
        message = await self.discord.post_message(
            self.discord.channel,
            user,
            _SAY.get(image.kind, ""),
            attachments=[(Path(image.path).name, data)],
        )
        reply = await self.discord.wait_for(
            lambda: self._reply_to(message),
            REPLY_TIMEOUT_S,
            what=f"the bot's reply to {image.path}",
        )
        latency = (loop.time() - started) * 1000
        self.replies[message.id] = reply
        self.record(
            Entry(
                "post",
                who=image.sender,
                text=message.content,
                image=self.chat.folder / image.path,
                truth=image.kind,
                bot=reply.content,
                latency_ms=latency,
                right=self.tagged_right(reply.content, image.kind),
            )
        )
        return message, reply

    def tagged_right(self, text: str, kind: str) -> bool:
        """The image's kind is among the reply's tags."""
        tags = text.split(" — ")[0].split(" · ")
        return any(kind.replace("_", " ") in tag for tag in tags)

    async def react(self, who: str, message: Message, label: str) -> None:
        emoji = _emoji(self.cfg, label)
        reply = self.replies[message.id]
        before = reply.content
        await self.discord.add_reaction(self.users[who], message, emoji)
        await self.discord.wait_for(
            lambda: reply.content != before and reply.content.endswith("✓"),
            REPLY_TIMEOUT_S,
            what="the reply to show the vote",
        )
        self.record(
            Entry(
                "reaction",
                who=who,
                text=f"reacts {emoji} {label.replace('_', ' ')} to {self._name(message)}",
                bot=f"(edits its reply) {reply.content}",
            )
        )

    async def fix_tags(self, who: str, message: Message, labels: list[str]) -> None:
        """``who`` presses "Fix tags" under the bot's reply and picks ``labels``: every tag the
        model gave that is not picked becomes a -1 vote, every picked one a +1."""
        reply = self.replies[message.id]
        user = self.users[who]
        opened = await self.discord.click_button(user, reply, f"memetag:fix:{message.id}")
        picker = await self.discord.wait_for(lambda: opened.original, REPLY_TIMEOUT_S)
        done = await self.discord.select(user, picker, f"memetag:pick:{message.id}:0", labels)
        await self.discord.wait_for(lambda: done.response, REPLY_TIMEOUT_S)
        await self.discord.wait_for(
            lambda: reply.content.endswith("✓"), REPLY_TIMEOUT_S, what="the corrected reply"
        )
        picked = ", ".join(f"{_emoji(self.cfg, n)} {n.replace('_', ' ')}" for n in labels)
        self.record(
            Entry(
                "fix",
                who=who,
                text=f'presses "Fix tags" on {self._name(message)} and picks only: {picked}',
                bot=f"{picker.content.splitlines()[0]}\n(edits its reply) {reply.content}",
            )
        )

    def _name(self, message: Message) -> str:
        return message.attachments[0].filename if message.attachments else f"message {message.id}"

    # -- admin commands -----------------------------------------------------------------------

    def has_command(self, sub: str) -> bool:
        for command in self.discord.registered_commands(self.discord.guild):
            if command["name"] == "tagger":
                return any(o["name"] == sub for o in command.get("options", []))
        return False

    async def answer(
        self,
        interaction: Interaction,
        timeout: float,
        finished: Callable[[str], bool] = lambda text: True,
    ) -> str:
        """What the bot finally told the admin: the last followup, else the (edited) original
        response once ``finished`` accepts it."""

        def final() -> str | None:
            if interaction.followups:
                return interaction.followups[-1].content
            original = interaction.original
            if original is not None and not original.loading and finished(original.content):
                return original.content
            return None

        return await self.discord.wait_for(final, timeout, what="the command's answer")

    async def command(
        self,
        who: str,
        name: str,
        options: dict[str, Any],
        timeout: float,
        finished: Callable[[str], bool] = lambda text: True,
    ) -> str:
        shown = " ".join(f"{k}:{v}" for k, v in options.items())
        interaction = await self.discord.invoke_slash(self.users[who], name, options)
        text = await self.answer(interaction, timeout, finished)
        self.record(Entry("command", who=who, text=f"/{name} {shown}".strip(), bot=text))
        return text

    async def answer_review_posts(self, who: str) -> int:
        """``who`` answers every review post: taps the image's kind if it is missing, takes
        wrong tags off, or taps "All correct"."""
        posts = [
            m
            for m in self.discord.messages.values()
            if m.author == self.discord.bot_user
            and m.attachments
            and any(
                c.get("custom_id", "").startswith("memetag:rv") for c in _components(m.components)
            )
        ]
        user = self.users[who]
        for post in posts:
            sha = hashlib.sha256(post.attachments[0].data).hexdigest()
            image = self.truth_by_sha.get(sha)
            buttons = {
                c["custom_id"]: c
                for c in _components(post.components)
                if c.get("custom_id", "").startswith("memetag:rv")
            }
            on = {cid.rsplit(":", 1)[1] for cid, c in buttons.items() if c.get("style") == 3}
            item = next(cid.split(":")[2] for cid in buttons)
            if image is None:
                continue
            taps: list[str] = []
            if on == {image.kind}:
                taps.append(f"memetag:rv-ok:{item}")
            else:
                if image.kind not in on:
                    taps.append(f"memetag:rv:{item}:{image.kind}")
                taps += [f"memetag:rv:{item}:{label}" for label in sorted(on - {image.kind})]
            self.record(
                Entry(
                    "review",
                    who=BOT_NAME,
                    text=_first_lines(post.content, 2),
                    image=self.chat.folder / image.path,
                    truth=image.kind,
                )
            )
            for custom_id in taps:
                tapped = await self.discord.click_button(user, post, custom_id)
                await self.discord.wait_for(lambda t=tapped: t.response, REPLY_TIMEOUT_S)
            names = []
            for tap in taps:
                label = tap.rsplit(":", 1)[1]
                if ":rv:" not in tap:
                    names.append("✅ All correct")
                else:
                    shown = f"{_emoji(self.cfg, label)} {label.replace('_', ' ')}"
                    names.append(f"{shown} (takes it off)" if label in on else shown)
            self.record(Entry("tap", who=who, text="taps " + ", ".join(names)))
        return len(posts)


def _retrain_finished(text: str) -> bool:
    """The retrain message is edited with its progress; its last edit starts with the outcome."""
    return text.startswith(("✅", "⏸", "❌"))


def _components(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        out.extend(row.get("components", [row]))
    return out


def _first_lines(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[:n])


async def _wait_ready(discord: StandinDiscord, runner: asyncio.Task[None]) -> None:
    await discord.wait_for(
        lambda: discord.gateway.connected or runner.done(), 120, what="the bot to connect"
    )
    if runner.done():
        await runner  # raises why it stopped
        raise RuntimeError("the bot stopped before it connected")
    # READY and GUILD_CREATE follow IDENTIFY on the same socket, before any message the
    # members post; the client then waits guild_ready_timeout (0.05 s here) before on_ready.
    await discord.wait_for(
        lambda: discord.gateway.identify_count >= 1, 30, what="the bot to identify"
    )
    await asyncio.sleep(1.0)


async def run_live(
    chat: SampleChat,
    plan: LivePlan,
    *,
    configure: Callable[[StandinDiscord, Mapping[str, User]], AppConfig],
    echo: Callable[[str], None] = print,
) -> LiveResult:
    """Start the stand-in and the bot, play the live script, stop the bot; the transcript.

    Args:
        configure: writes the demo's config for this stand-in (its channel, the members'
            Discord ids) and returns it loaded.
    """
    quiet = _NoVoiceNotice()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        return await _run(chat, plan, configure, echo)
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


class _NoVoiceNotice(logging.Filter):
    """discord.py warns at every start that voice support is missing (as `memetag bot` does,
    the demo leaves it out: the bot has no voice)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


async def _run(
    chat: SampleChat,
    plan: LivePlan,
    configure: Callable[[StandinDiscord, Mapping[str, User]], AppConfig],
    echo: Callable[[str], None],
) -> LiveResult:
    from bot.app import run_bot

    async with StandinDiscord.start(
        guild_name="Sample chat", channel_name="memes", interaction_deadline=None
    ) as discord:
        with discord.patch_client():
            users = {m.name: await discord.add_member(m.name) for m in MEMBERS}
            await discord.add_role(
                "admins", discord_py.Permissions(manage_guild=True), members=[users[ADMIN]]
            )
            cfg = configure(discord, users)
            stop = asyncio.Event()
            runner = asyncio.create_task(
                run_bot(
                    cfg,
                    token=discord.token,
                    stop=stop,
                    bot_options={"guild_ready_timeout": 0.05},
                    # The stand-in's CDN is on 127.0.0.1, which the guard refuses by default.
                    allow_private=True,
                ),
                name="demo-bot",
            )
            try:
                await _wait_ready(discord, runner)
                live = LiveChat(discord, chat, cfg, users, echo)
                result = await _script(live, chat, plan)
            finally:
                stop.set()
                try:
                    await asyncio.wait_for(runner, 60)
                except Exception:  # noqa: BLE001 - a failed script is the error worth showing
                    log.debug("the bot stopped with an error", exc_info=True)
            result.channel_id = discord.channel.id
            return result


async def _script(live: LiveChat, chat: SampleChat, plan: LivePlan) -> LiveResult:
    known = chat.live_phase("tag")
    new = chat.live_phase("new")
    after = chat.live_phase("after")

    live.phase("1. Members post; the bot tags each image and guesses who posted it")
    mark = len(live.transcript.entries)
    for image in known:
        await live.post(image)
    first = _score(live.transcript.entries[mark:])

    live.phase(f"2. A new kind of image: {NEW_KIND.replace('_', ' ')} frames")
    mark = len(live.transcript.entries)
    posted = [(image, *(await live.post(image))) for image in new]
    before = _score(live.transcript.entries[mark:])
    live.phase("3. Members correct the bot")
    correctors = [m.name for m in MEMBERS if m.name != "Person A"]
    for i, (_image, message, _reply) in enumerate(posted[: plan.corrected]):
        who = correctors[i % len(correctors)]
        if i % 3 == 2:
            await live.fix_tags(who, message, [NEW_KIND])
        else:
            await live.react(who, message, NEW_KIND)

    reviewed = False
    if live.has_command("review"):
        live.phase("4. An admin asks for a review: the images where a tap helps most")
        await live.command(ADMIN, "tagger review", {"n": 4}, REPLY_TIMEOUT_S)
        answered = await live.answer_review_posts("Person B")
        reviewed = answered > 0
    else:
        live.note("/tagger review is not in this build of the bot: skipped")

    live.phase("5. The admin retrains; the gate compares the new model with the current one")
    gate: str | None = None
    retrained = False
    if live.has_command("retrain"):
        gate = await live.command(
            ADMIN, "tagger retrain", {}, RETRAIN_TIMEOUT_S, finished=_retrain_finished
        )
        retrained = True
    else:
        live.note("/tagger retrain is not in this build of the bot: skipped")

    live.phase(f"6. More {NEW_KIND.replace('_', ' ')} frames after the retrain")
    mark = len(live.transcript.entries)
    for image in after:
        await live.post(image)
    later = [
        e
        for e, image in zip(live.transcript.entries[mark:], after, strict=True)
        if image.kind == NEW_KIND
    ]
    return LiveResult(
        transcript=live.transcript,
        reviewed=reviewed,
        retrained=retrained,
        gate=gate,
        first=first,
        new=before,
        after=_score(later),
    )
