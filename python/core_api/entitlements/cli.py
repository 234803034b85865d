"""``core-api entitlements grant|set|clear|show``: operators' per-workspace overrides."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from ..clock import parse_iso
from ..config import Settings
from ..errors import ValidationFailed

DAY_MS = 86_400_000


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "entitlements", help="show a workspace's entitlements; set or grant per-workspace limits"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="add an amount on top of the limit (may expire)")
    limit = actions.add_parser("set", help="replace the tier's limit (-1 = unlimited)")
    clear = actions.add_parser("clear", help="remove a feature's overrides")
    show = actions.add_parser("show", help="usage, limits and overrides, as JSON")
    for sub in (grant, limit, clear, show):
        sub.add_argument("--workspace", type=int, required=True, help="workspace id")
    for sub in (grant, limit, clear):
        sub.add_argument("--feature", required=True)
    grant.add_argument("--amount", type=int, required=True)
    limit.add_argument("--limit", type=int, required=True)
    for sub in (grant, limit):
        ends = sub.add_mutually_exclusive_group()
        ends.add_argument("--expires", help="ISO 8601 date-time the override ends")
        ends.add_argument("--days", type=int, help="the override ends after this many days")
        sub.add_argument("--note", default="")


def run(settings: Settings, args: argparse.Namespace) -> None:
    try:
        result = asyncio.run(_run(settings, args))
    except ValidationFailed as exc:
        text = "; ".join(m for ms in exc.errors.values() for m in ms)
        print(f"core-api: {text}", file=sys.stderr)
        raise SystemExit(2) from None
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


async def _run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from ..runtime import Runtime

    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        service = runtime.entitlements
        service.watch(runtime.invalidator)  # a change reaches the serving processes at once
        if args.action == "show":
            return await service.show(args.workspace)
        if args.action == "clear":
            removed = await service.clear_overrides(args.workspace, args.feature)
            return {"removed": removed, **await service.show(args.workspace)}
        expires_at = None
        if args.expires is not None:
            try:
                expires_at = parse_iso(args.expires)
            except ValueError as exc:
                raise ValidationFailed.field("expires", f"--expires: {exc}") from None
        elif args.days is not None:
            if args.days <= 0:
                raise ValidationFailed.field("days", "--days must be at least 1.")
            expires_at = runtime.clock.now_ms() + args.days * DAY_MS
        kind, amount = ("grant", args.amount) if args.action == "grant" else ("set", args.limit)
        created = await service.add_override(
            args.workspace, args.feature, kind, amount, expires_at, args.note
        )
        return {"created": {"id": created.id, "kind": kind}, **await service.show(args.workspace)}
    finally:
        await runtime.close()
