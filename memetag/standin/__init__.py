"""A local stand-in Discord (REST, gateway, CDN) that the real discord.py client runs against.

Tests and ``memetag demo`` use it to drive the unmodified bot offline; see ``server.py`` for the
driver API and /work/shared/discord-standin.md for the protocol notes it follows.
"""

from memetag.standin.harness import running_bot
from memetag.standin.model import (
    Attachment,
    Channel,
    CustomEmoji,
    Guild,
    Interaction,
    InteractionCallback,
    Message,
    Role,
    User,
)
from memetag.standin.process import RemoteStandin
from memetag.standin.rest import FailureRule, RecordedRequest
from memetag.standin.server import StandinDiscord, StandinError, StandinFailure, patched_client

__all__ = [
    "Attachment",
    "Channel",
    "CustomEmoji",
    "FailureRule",
    "Guild",
    "Interaction",
    "InteractionCallback",
    "Message",
    "RecordedRequest",
    "RemoteStandin",
    "Role",
    "StandinDiscord",
    "StandinError",
    "StandinFailure",
    "User",
    "patched_client",
    "running_bot",
]
