"""Logging for ``memetag bot``: one line per event, as text or JSON, never the token or chat text.

:func:`configure_logging` installs the one handler (``[bot] log_level`` / ``log_json``, or
``memetag bot --log-json``). A JSON line is an object with ``time``, ``level``, ``logger``,
``event`` (the formatted message) and, when a call passes them in ``extra=``, the fields in
:data:`FIELDS`; an exception becomes one ``error`` field (its type and message) plus a
``traceback`` string, so a log shipper still sees one line per event.

What keeps chat text out: the bot's own modules log ids, counts and reasons, never a message's
content; discord.py logs every raw gateway payload and request body at DEBUG, so its loggers
stay at INFO or above whatever ``log_level`` says. The token is replaced by ``[token]`` in any
line that would carry it.

:class:`RecentProblems` keeps the last warning or error for ``/tagger status``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

# Fields a log call may attach with ``extra={...}`` that the JSON lines carry.
FIELDS = (
    "guild_id",
    "channel_id",
    "message_id",
    "user_id",
    "command",
    "action",
    "outcome",
    "model_version",
    "shard_id",
    "images",
    "seconds",
)
# discord.py's DEBUG lines hold raw payloads (message text included).
_CHATTY = ("discord",)


class Redact(logging.Filter):
    """Replaces secrets (the token) in a record's message and exception text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[token]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            if self._clean(text) != text:
                record.exc_text = self._clean(text)
                record.exc_info = None
        return True


class NoVoiceNotice(logging.Filter):
    """discord.py warns at every start that voice support is missing; the bot has no voice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error"] = f"{type(exc).__name__}: {exc}"
        text = _exception_text(record)
        if text:
            entry["traceback"] = text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value …`` on one line (a traceback folded into it)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{when} {record.levelname} {record.name}: {record.getMessage()}"
        extras = [
            f"{name}={record.__dict__[name]}"
            for name in FIELDS
            if record.__dict__.get(name) is not None
        ]
        if extras:
            line += " " + " ".join(extras)
        text = _exception_text(record)
        if text:
            line += " | " + " | ".join(part.strip() for part in text.splitlines() if part.strip())
        return line


def configure_logging(
    *,
    level: str = "INFO",
    json_lines: bool = False,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
    verbose: bool = False,
) -> logging.Handler:
    """Replace the root logger's handlers with one structured handler; returns it.

    Args:
        level: the bot's level (``[bot] log_level``); ``verbose`` (``memetag -v``) means DEBUG.
        json_lines: one JSON object per line instead of text.
        secrets: strings never written (the token).
        stream: where lines go (stderr by default).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(Redact(secrets))
    handler.addFilter(NoVoiceNotice())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    wanted = logging.DEBUG if verbose else logging.getLevelName(level.upper())
    if not isinstance(wanted, int):
        wanted = logging.INFO
    root.setLevel(max(wanted, logging.WARNING))  # other libraries: warnings and up
    for name in ("bot", "memetag", "store", "ingest", "classifier"):
        logging.getLogger(name).setLevel(wanted)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(wanted, logging.INFO))
    return handler


@dataclass(frozen=True)
class Problem:
    time: datetime
    level: str
    logger: str
    message: str


class RecentProblems(logging.Handler):
    """Keeps the latest warning or error of the bot (discord.py: errors only) for ``status``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(logging.WARNING)
        self.last: Problem | None = None
        self.addFilter(Redact(secrets))
        self.addFilter(NoVoiceNotice())

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("discord") and record.levelno < logging.ERROR:
            return  # rate-limit notices and the like are not the bot's problems
        try:
            message = " ".join(record.getMessage().split())
        except Exception:  # noqa: BLE001 - a bad log call must not break logging
            return
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {' '.join(str(exc).split())})"
        self.last = Problem(
            datetime.fromtimestamp(record.created, UTC),
            record.levelname,
            record.name,
            message[:300],
        )

    def attach(self, names: Iterable[str] = ("bot", "memetag", "discord")) -> None:
        for name in names:
            logging.getLogger(name).addHandler(self)

    def detach(self, names: Iterable[str] = ("bot", "memetag", "discord")) -> None:
        for name in names:
            logging.getLogger(name).removeHandler(self)
