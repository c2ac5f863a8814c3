"""`memetag bot`: run the Discord bot, or check that it is ready to run (--check)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
from pathlib import Path

from memetag.commands._common import UserError, run_async
from memetag.commands._text import shown
from memetag.config import AppConfig

NO_TOKEN = (
    "DISCORD_TOKEN is not set: put the bot token in the environment or in a .env file "
    "(DISCORD_TOKEN=...) next to where you run memetag"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bot",
        help="run the Discord bot that tags images as they are posted",
        description="Connect to Discord with the token in DISCORD_TOKEN (environment or .env) "
        "and tag every image posted in the channels listed in [bot] channels: 'react' adds the "
        "label emojis to the message, 'reply' answers with the labels, their confidence and "
        "the likely sender (pinging nobody), 'silent' only stores and predicts. Every live "
        "image is stored like an ingested Discord post, so the next `memetag train` learns "
        "from it; with no model yet the bot stores posts and tags nothing. A model trained "
        "later is picked up within [bot] model_poll_s seconds. The application needs the "
        "Message Content intent enabled in the Developer Portal. Ctrl-C (or SIGTERM) finishes "
        "the queued images, at most [bot] drain_timeout_s seconds, and closes the store.",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the config, the token's presence, the model and the data dir, then exit "
        "without connecting",
    )
    p.add_argument(
        "--log-json",
        action="store_true",
        help="log one JSON object per line (time, level, logger, event, ids) for log shippers; "
        "same as [bot] log_json = true",
    )
    p.set_defaults(handler=handle_bot)


class _Redact(logging.Filter):
    """Replaces the token in any log record, in case a library ever prints it."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret and self._secret in message:
            record.msg = message.replace(self._secret, "[token]")
            record.args = None
        return True


class _NoVoiceNotice(logging.Filter):
    """discord.py warns at every start that voice support is missing; the bot has no voice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def handle_bot(args: argparse.Namespace, cfg: AppConfig) -> int:
    from classifier.openmp import shorten_openmp_spin

    shorten_openmp_spin()  # before torch loads: the model shares the cores (classifier.openmp)
    if args.check:
        return run_async(_check(cfg))
    token = cfg.discord_token
    if not token:
        raise UserError(NO_TOKEN)
    from bot.logs import configure_logging

    # One line per event at [bot] log_level (what the bot does: connected, model swaps,
    # skipped images); never the token or message text.
    configure_logging(
        level=cfg.bot.log_level,
        json_lines=args.log_json or cfg.bot.log_json,
        secrets=(token,),
        verbose=args.verbose,
    )
    from bot.app import run_bot

    try:
        asyncio.run(run_bot(cfg, token=token))
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        pass
    return 0


async def _check(cfg: AppConfig) -> int:
    from memetag.services.models import current_model, load_model
    from store.db import is_writable, open_database

    problems = 0
    where = shown(cfg.source) if cfg.source else "built-in defaults"
    print(f"config: {where}: ok")
    if cfg.discord_token:
        print("token: DISCORD_TOKEN is set")
    else:
        print(f"token: {NO_TOKEN}")
        problems += 1

    data = cfg.data_dir
    writable = data.is_dir() and is_writable(data) or not data.exists() and _creatable(data)
    if not writable:
        print(f"data: {shown(data)} is not writable")
        return 1
    if not cfg.db_path.exists():
        print(f"data: {shown(data)}: no store yet (the bot creates it and fills it from chat)")
        print("model: none yet: the bot will store posts and tag nothing until `memetag train`")
    else:
        async with open_database(cfg.db_path) as db:
            print(f"data: {shown(data)}: store schema v{await db.schema_version()}")
            choice = await current_model(db, cfg)
        if choice is None:
            print("model: none yet: the bot will store posts and tag nothing until `memetag train`")
        else:
            try:
                ckpt = await load_model(cfg, choice.path)
            except Exception as exc:  # noqa: BLE001 - reported, the bot would run untagged
                print(f"model: {choice.version} does not load: {exc}")
                problems += 1
            else:
                print(
                    f"model: {ckpt.version}: loads ({len(ckpt.emitted_labels)} labels, "
                    f"{len(ckpt.senders)} senders)"
                )

    from bot.app import invite_permissions, invite_url

    app_id = _application_id(cfg.discord_token)
    if app_id is not None:
        print(f"invite: {invite_url(app_id)}")
    else:
        print(
            "invite: https://discord.com/oauth2/authorize?client_id=<application id>"
            f"&scope=bot+applications.commands&permissions={invite_permissions().value}"
        )

    bot = cfg.bot
    listed = ", ".join(f"{cid} {mode}" for cid, mode in bot.channels.items()) or "none listed"
    print(f"channels: {listed}; other channels: {bot.default_mode}")
    if not bot.channels and bot.default_mode == "off":
        print("channels: the bot watches nothing: add [bot] channels or set default_mode")
    if problems:
        return 1
    print("ok: ready to run `memetag bot`")
    return 0


def _application_id(token: str | None) -> int | None:
    """A bot token's first part is its user id (= the application id) in base64."""
    if not token:
        return None
    head = token.split(".", 1)[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=False).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return int(decoded) if decoded.isdigit() and 15 <= len(decoded) <= 21 else None


def _creatable(path: Path) -> bool:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK)


__all__ = ["handle_bot", "register"]
