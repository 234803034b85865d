"""Cache invalidation that holds across processes and nodes.

Within a host, every worker maps the same shared-memory file; bumping its generation
counter is seen by every process on its next request. Across nodes, the bump is also
published on Redis and each node's listener bumps its own host counter (bounded by the
pub/sub delivery time, typically well under a millisecond on a LAN).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from .. import _native

log = logging.getLogger("core_api.invalidation")


class Invalidator:
    def __init__(self, shared: _native.SharedState, redis: Any = None, prefix: str = "") -> None:
        self.shared = shared
        self.redis = redis
        self.channel = f"{prefix}invalidate"
        self.node = f"{uuid.uuid4().hex}:{os.getpid()}"

    async def changed(self) -> None:
        """Call after a committed change that cached auth or workspace data depends on."""
        self.shared.bump_generation()
        if self.redis is not None:
            try:
                await self.redis.publish(self.channel, self.node)
            except Exception as exc:  # Redis down: this host is still exact; log, never fail
                log.warning("could not publish cache invalidation: %s", exc)

    async def listen(self) -> None:
        """Bump this host's generation when another node reports a change. Runs forever."""
        if self.redis is None:
            return
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                # Anything may have changed while we were not listening.
                self.shared.bump_generation()
                async for message in pubsub.listen():
                    data = message.get("data")
                    sender = data.decode() if isinstance(data, bytes) else str(data)
                    if sender != self.node:
                        self.shared.bump_generation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation listener lost Redis (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
