"""The ``/tagger`` slash command group that every concern adds its subcommands to.

One group, shared: ``bot/cogs/admin.py`` adds ``status``, ``channel …``, ``threshold``…,
``bot/cogs/retrain.py`` adds ``retrain``, and so on, each at import with ``@TAGGER.command()``
(or a subgroup made with ``app_commands.Group(name=…, parent=TAGGER)``). A callback reaches the
shared store, model and config through ``interaction.client.deps`` (a :class:`bot.app.MemetagBot`),
so the group object can serve every bot in the process; ``MemetagBot.setup_hook`` adds it to the
command tree once its cogs are loaded.

Who may use what. Discord lets ``default_permissions`` sit only on a top-level command, and
``/tagger`` also carries the members' own subcommands (``optout``, ``optin``, ``forget-me``), so
it cannot hide the admin subcommands from members. :func:`admin_only` is therefore the real
gate: it checks, on our side and on every call, that the member invoking the command has the
Manage Server permission in that guild (from the permissions Discord resolves into the
interaction, which reflect role changes since the commands were synced), and refuses everyone
else with an ephemeral message. Server admins can hide the group from members in Server Settings
→ Integrations → memetag. Every admin call — allowed or refused — is written to the audit log
(:func:`audit`), which ``memetag audit`` prints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import discord
from discord import app_commands

log = logging.getLogger(__name__)

T = TypeVar("T")

TAGGER = app_commands.Group(
    name="tagger",
    description="memetag: tags for the images posted here",
    guild_only=True,
)


class NotAnAdmin(app_commands.CheckFailure):
    """Raised by :func:`admin_only`; answered with an ephemeral refusal."""


def is_admin(interaction: discord.Interaction) -> bool:
    """Manage Server in this guild, as Discord resolved it for this interaction."""
    perms = getattr(interaction, "permissions", None)
    if perms is None or interaction.guild_id is None:
        return False
    return bool(perms.manage_guild or perms.administrator)


def admin_only() -> Callable[[T], T]:
    """Decorator for an admin subcommand: Manage Server checked server-side on every call."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if is_admin(interaction):
            return True
        command = interaction.command.qualified_name if interaction.command else "?"
        await audit(interaction, command, {}, outcome="refused: not an admin")
        raise NotAnAdmin("only members with the Manage Server permission can do that")

    return app_commands.check(predicate)


async def audit(
    interaction: discord.Interaction,
    action: str,
    arguments: Mapping[str, Any],
    *,
    outcome: str = "ok",
) -> None:
    """Write one audit-log row for an admin action (who, what, when, arguments, outcome)."""
    from store.queries.audit import add_audit  # local: keeps this module importable alone

    deps = getattr(interaction.client, "deps", None)
    if deps is None:
        return
    try:
        await add_audit(
            deps.db,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            actor=f"discord:{interaction.user.id}",
            action=action,
            arguments=json.dumps(dict(arguments), sort_keys=True, default=str),
            outcome=outcome,
        )
    except Exception:  # noqa: BLE001 - an audit write failure must not break the command
        log.exception("could not write the audit log for %s", action)


async def on_tagger_error(
    interaction: discord.Interaction, error: app_commands.AppCommandError
) -> None:
    """Answer a refused or failed ``/tagger`` call ephemerally instead of leaving it hanging."""
    if isinstance(error, app_commands.CheckFailure):
        text = str(error) or "you can't use that here"
    else:
        log.error(
            "/tagger %s failed",
            getattr(interaction.command, "qualified_name", "?"),
            exc_info=getattr(error, "original", error),
        )
        text = "that did not work: the error is in the bot's log"
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not answer a /tagger interaction")


TAGGER.error(on_tagger_error)
