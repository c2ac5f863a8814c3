"""`memetag audit`: print the log of admin actions taken from Discord (who, what, when, outcome)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC

from memetag.commands._common import UserError, print_json, run_async
from memetag.commands._text import shown
from memetag.config import AppConfig

DEFAULT_LIMIT = 50
# audit_log arrived with store schema v4.
_AUDIT_SCHEMA = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="print the audit log of admin actions taken from Discord",
        description="Print the audit log, oldest first: every /tagger admin command the bot "
        "ran or refused, with when (UTC), the server, who (discord:<user id>), the command, "
        "its arguments and how it ended (ok, refused: …, failed: …).",
    )
    p.add_argument("--guild", metavar="ID", help="only this Discord server (guild id)")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"the newest N entries (default: {DEFAULT_LIMIT}; 0: all)",
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON array, values unescaped and uncut"
    )
    p.set_defaults(handler=handle_audit)


def handle_audit(args: argparse.Namespace, cfg: AppConfig) -> int:
    from store.db import open_database
    from store.queries.audit import list_audit

    if args.limit < 0:
        raise UserError("--limit must be 0 (all) or more")
    if args.guild is not None and not args.guild.isdigit():
        raise UserError(f"--guild {shown(args.guild)}: expected a Discord server id (digits)")
    if not cfg.db_path.exists():
        raise UserError(f"{cfg.db_path}: no store here yet")

    async def go():
        async with open_database(cfg.db_path, readonly=True) as db:
            if await db.schema_version() < _AUDIT_SCHEMA:
                return []
            return await list_audit(db, guild_id=args.guild, limit=args.limit or -1)

    entries = run_async(go())
    if args.json:
        print_json([_as_json(e) for e in entries])
        return 0
    if not entries:
        print("no audit entries" + (f" for server {args.guild}" if args.guild else ""))
        return 0
    print(f"{'when (UTC)':<19}  {'server':<20}  {'who':<28}  action / arguments -> outcome")
    for e in entries:
        when = e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        arguments = json.dumps(e.arguments, ensure_ascii=False, sort_keys=True)
        arguments = "" if arguments == "{}" else " " + shown(arguments, 120)
        print(
            f"{when:<19}  {shown(e.guild_id or '-', 20):<20}  {shown(e.actor, 28):<28}  "
            f"{shown(e.action, 40)}{arguments} -> {shown(e.outcome or '-', 80)}"
        )
    return 0


def _as_json(e) -> dict:
    return {
        "id": e.id,
        "time": e.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "guild_id": e.guild_id,
        "actor": e.actor,
        "action": e.action,
        "arguments": e.arguments,
        "outcome": e.outcome,
    }


__all__ = ["handle_audit", "register"]
