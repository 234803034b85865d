"""The audit log's writer: calls are recorded in memory and written in batches.

A tool call must not wait on a database write (the gateway's built-in tools answer in
well under a millisecond), so each process keeps a bounded buffer and writes it every
``FLUSH_SECONDS`` (or at ``BATCH`` rows) in one transaction: the audit rows and, for
every executed call in a workspace with a webhook endpoint subscribed to it, its
``mcp.tool.executed`` event through the outbox, so the audit row and the event commit
together. A failed write is retried with the next batch; a
graceful stop writes what is left. A crash loses at most the last interval's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from ..clock import Clock
from ..events import Notifier, publish
from ..events import repo as events_repo
from ..events.patterns import matches, parse_stored
from ..storage.base import Database, DatabaseUnavailable, Executor
from . import repo
from .repo import AuditRow

log = logging.getLogger("core_api.mcp")

FLUSH_SECONDS = 0.5
BATCH = 2_000
MAX_PENDING = 100_000  # beyond this (database down for long) the oldest are dropped
EXECUTED = frozenset({"ok", "error", "timeout"})  # outcomes that publish mcp.tool.executed
EVENT_TYPE = "mcp.tool.executed"


async def _subscribed(tx: Executor, workspace_id: int) -> bool:
    """Whether an active webhook endpoint of the workspace takes mcp.tool.executed: an
    event nobody is subscribed to reaches no one (deliveries are made at publish time, and
    the audit log already records the call), so it is not written. Publishing cost two
    statements per call, half the cost of a built-in tool call."""
    endpoints = await events_repo.active_endpoints(tx, workspace_id)
    return any(matches(parse_stored(patterns), EVENT_TYPE) for _, patterns in endpoints)


class AuditLog:
    def __init__(self, db: Database, clock: Clock, events: Notifier) -> None:
        self.db, self.clock, self.events = db, clock, events
        self.pending: list[AuditRow] = []
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False

    def record(self, row: AuditRow) -> None:
        self.pending.append(storable(row))
        if len(self.pending) > MAX_PENDING:
            drop = len(self.pending) - MAX_PENDING
            del self.pending[:drop]
            self.dropped += drop
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="mcp:audit")
        if len(self.pending) >= BATCH:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except DatabaseUnavailable as exc:
                log.warning("mcp audit write deferred: %s", exc)
            except Exception:
                log.exception("mcp audit write failed; retried with the next batch")

    async def flush(self) -> int:
        """Write what is pending now; returns the number of rows written."""
        async with self._lock:
            rows, self.pending = self.pending, []
            if not rows:
                return 0
            try:
                published = await self._write(rows)
            except BaseException:
                self.pending[:0] = rows  # first in, first written next time
                raise
            self.written += len(rows)
            if published:
                self.events.notify()
            return len(rows)

    async def _write(self, rows: list[AuditRow]) -> int:
        published = 0
        listening: dict[int, bool] = {}
        async with self.db.transaction() as tx:
            for start in range(0, len(rows), BATCH):
                await repo.insert_audit(tx, rows[start : start + BATCH])
            for row in rows:
                if row.outcome not in EXECUTED or row.kind != "tool":
                    continue
                workspace = row.workspace_id
                if workspace not in listening:
                    listening[workspace] = await _subscribed(tx, workspace)
                if listening[workspace]:
                    await publish(
                        tx,
                        workspace_id=workspace,
                        type=EVENT_TYPE,
                        data=event_data(row),
                        now=row.created_at,
                    )
                    published += 1
        return published

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        with contextlib.suppress(Exception):
            await self.flush()


def clean_text(value: str) -> str:
    """``value`` as text every backend stores: a NUL character (PostgreSQL text cannot hold
    one) becomes U+FFFD, a lone surrogate (not encodable as UTF-8) ``?``."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def storable(row: AuditRow) -> AuditRow:
    """The row with its client-given text made storable. The server, tool and resource
    names come from the request as they are (a resource path, a JSON-RPC tool name): one
    NUL among them made the whole batch fail, and it stayed first in the queue, so no
    audit row of the process was written again and every audit read was a 500."""
    server, tool = clean_text(row.server), clean_text(row.tool)
    error = None if row.error is None else clean_text(row.error)
    if server is row.server and tool is row.tool and error is row.error:
        return row
    return dataclasses.replace(row, server=server, tool=tool, error=error)


def event_data(row: AuditRow) -> dict[str, Any]:
    return {
        "server": row.server,
        "tool": row.tool,
        "outcome": row.outcome,
        "duration_ms": round(row.duration_ms, 3),
        "api_key_id": row.key_id,
        "transport": row.transport,
        "request_id": row.request_id,
    }
