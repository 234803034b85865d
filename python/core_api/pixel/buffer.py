"""The per-process event queue: the Rust bounded buffer and its flushing.

The request path only calls :meth:`EventQueue.push` (one call into the extension, no
lock, no await). Writes happen in the background, in batches of ``batch_size`` events:

- by time: the per-process job ``pixel.flush`` runs every ``FLUSH_INTERVAL`` seconds;
- by size: a push that leaves a full batch waiting starts a flush at once.

A batch is taken out of the buffer (still counted against its capacity), written, then
committed; a failed write restores it to the front, so nothing is lost and the order is
kept. While the database is unavailable the queue is ``down``: the ingest answers 503
until a write or ping succeeds again. A flush cancelled mid-write (shutdown) lets that
write finish (it is shielded); the final flush waits for it, then writes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .. import _native
from ..metrics.registry import REGISTRY
from ..storage import DatabaseUnavailable
from .writer import DataRefused, EventWriter

log = logging.getLogger("core_api.pixel")


class EventQueue:
    def __init__(self, writer: EventWriter, capacity: int, batch_size: int) -> None:
        self.writer = writer
        self.buffer = _native.PixelBuffer(capacity)
        self.batch_size = batch_size
        self.down = False  # the last write or ping failed: refuse new events (503)
        self.written = 0
        self.refused = 0  # pushes refused because the buffer was full
        self.rejected = 0  # events the database refused (logged; never expected)
        self._lock = asyncio.Lock()
        self._writing: asyncio.Task[int] | None = None
        self._kicked: asyncio.Task[None] | None = None
        self._closed = False

    def push(
        self,
        site_id: int,
        ts: int,
        name: str,
        path: str,
        referrer_source: str | None,
        visitor_id: int,
        session_id: int | None,
        browser: str,
        device: str,
        props: str | None,
    ) -> bool:
        buffer = self.buffer
        if not buffer.push(
            site_id, ts, name, path, referrer_source, visitor_id, session_id, browser, device, props
        ):
            self.refused += 1
            return False
        if buffer.pending >= self.batch_size:
            self.kick()
        return True

    def kick(self) -> None:
        """Start a flush now (a full batch is waiting), unless one was started already."""
        if self._kicked is None or self._kicked.done():
            self._kicked = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(DatabaseUnavailable):  # the flush job logs outages
            await self.flush()

    async def flush(self) -> int:
        """Write everything buffered now; the number of events written. Raises
        :class:`DatabaseUnavailable` (the events stay buffered) when the database is."""
        async with self._lock:
            total = 0
            if self._writing is not None and not self._writing.done():
                # A write a cancelled flush left running (shutdown): wait for its outcome.
                with contextlib.suppress(Exception):
                    total += await asyncio.shield(self._writing)
            if self.down and not self.buffer.pending:
                await self.writer.ping()  # nothing to write: is it back?
                self._set_down(False)
            while self.buffer.pending:
                batch = self.buffer.take(self.batch_size)
                self._writing = asyncio.get_running_loop().create_task(self._write(batch))
                total += await asyncio.shield(self._writing)
            return total

    async def _write(self, batch: _native.PixelBatch) -> int:
        started = time.perf_counter()
        try:
            await self.writer.write(batch)
        except DatabaseUnavailable:
            self.buffer.restore(batch)
            self._set_down(True)
            raise
        except DataRefused as exc:
            # Validation makes this unreachable; if it happens, retrying cannot help.
            n = self.buffer.commit(batch)
            self.rejected += n
            log.error("pixel: the database refused a batch, %d event(s) dropped: %s", n, exc)
            return 0
        except BaseException:
            self.buffer.restore(batch)
            raise
        self._set_down(False)
        n = self.buffer.commit(batch)
        self.written += n
        took = time.perf_counter() - started
        REGISTRY.observe("core_api_pixel_flush_duration_seconds", took)
        log.debug("pixel: %d event(s) written in %.1f ms", n, took * 1e3)
        return n

    def _set_down(self, down: bool) -> None:
        if down != self.down:
            self.down = down
            if down:
                log.warning("pixel: the database is unavailable; new events get 503")
            else:
                log.warning("pixel: the database is back; accepting events again")

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """After the final flush (the job's last run): stop the writer (once)."""
        if self._closed:
            return
        self._closed = True
        if self._kicked is not None and not self._kicked.done():
            with contextlib.suppress(Exception):
                await self._kicked
        await self.writer.close()

    def stats(self) -> dict[str, int | bool]:
        return {
            "pending": self.buffer.pending,
            "in_flight": self.buffer.in_flight,
            "written": self.written,
            "refused": self.refused,
            "rejected": self.rejected,
            "down": self.down,
        }
