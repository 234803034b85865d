"""``core-api secrets reseal``: seal every endpoint secret again under the current server
secret, so that ``CORE_API_SECRET_KEY_PREVIOUS`` can be removed (docs/production.md).

Walks ``webhook_endpoints`` by id in batches; a row whose secrets already open under the
current key is left alone (so a second run changes nothing); a row sealed under the
previous key is written back sealed under the current one, conditionally on the row not
having changed since it was read (a secret rotated meanwhile is read again). Secrets that
open under neither key are counted and listed: no key configured can recover them (they
need a new secret, ``POST /api/v1/webhooks/{id}/secret/rotate``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag

from ..config import Settings
from ..storage import Database
from . import repo
from .secrets import SecretBox

_RETRIES = 3  # re-reads of a row that changed between the read and the write


@dataclass
class ResealReport:
    examined: int = 0
    resealed: int = 0
    already_current: int = 0
    unreadable: list[int] = field(default_factory=list)  # endpoint ids
    changed_meanwhile: int = 0  # still changing after the retries: run again

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "resealed": self.resealed,
            "already_current": self.already_current,
            "unreadable": len(self.unreadable),
            "unreadable_endpoint_ids": self.unreadable[:100],
            "changed_meanwhile": self.changed_meanwhile,
        }


def _resealed(box: SecretBox, row: repo.SealedSecrets) -> tuple[bytes, bytes | None] | None:
    """The row's secrets sealed under the current key, or None when they already are.
    Raises InvalidTag/ValueError when one opens under neither key."""
    secret, current = box.open_checked(row.workspace_id, row.secret_sealed)
    previous: str | None = None
    previous_current = True
    if row.previous_secret_sealed is not None:
        previous, previous_current = box.open_checked(row.workspace_id, row.previous_secret_sealed)
    if current and previous_current:
        return None
    return (
        row.secret_sealed if current else box.seal(row.workspace_id, secret),
        row.previous_secret_sealed
        if previous is None or previous_current
        else box.seal(row.workspace_id, previous),
    )


async def reseal_all(db: Database, box: SecretBox, batch_size: int = 500) -> ResealReport:
    report = ResealReport()
    after = 0
    while True:
        rows = await repo.sealed_secrets_after(db, after, batch_size)
        if not rows:
            return report
        after = rows[-1].id
        for row in rows:
            report.examined += 1
            await _reseal_one(db, box, row, report)


async def _reseal_one(
    db: Database, box: SecretBox, row: repo.SealedSecrets, report: ResealReport
) -> None:
    for _ in range(_RETRIES):
        try:
            sealed = _resealed(box, row)
        except (InvalidTag, ValueError):
            report.unreadable.append(row.id)
            return
        if sealed is None:
            report.already_current += 1
            return
        if await repo.replace_sealed(db, row, *sealed):
            report.resealed += 1
            return
        found = await repo.get_sealed_secrets(db, row.id)
        if found is None:  # deleted meanwhile: nothing left to reseal
            report.examined -= 1
            return
        row = found
    report.changed_meanwhile += 1


# -- the command -------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "secrets", help="server secret rotation: reseal stored secrets under the current key"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    reseal = actions.add_parser(
        "reseal",
        help="seal every webhook endpoint secret under CORE_API_SECRET_KEY "
        "(those under CORE_API_SECRET_KEY_PREVIOUS); print counts as JSON",
    )
    reseal.add_argument("--batch-size", type=int, default=500, help="endpoints per read")


def run(settings: Settings, args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        print("core-api: --batch-size must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    report = asyncio.run(_run(settings, args.batch_size))
    result = {
        "previous_secret_key_set": settings.secret_key_previous is not None,
        "webhook_endpoints": report.as_dict(),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if report.changed_meanwhile:
        raise SystemExit(1)  # some rows kept changing: run again


async def _run(settings: Settings, batch_size: int) -> ResealReport:
    from ..storage import open_database

    db = await open_database(settings.database_url)
    try:
        box = SecretBox(settings.secret_key, settings.secret_key_previous)
        return await reseal_all(db, box, batch_size)
    finally:
        await db.close()
