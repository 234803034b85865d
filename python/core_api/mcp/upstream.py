"""Upstream MCP servers (stdio or Streamable HTTP), reached with the SDK's ``Client``.

One long-lived session per server and process, shared by every call: the SDK multiplexes
concurrent requests over it by JSON-RPC id, so a tool call costs one round trip, never a
process start or a handshake. A supervisor task owns the session (the SDK's cancel scopes
must be entered and left by one task); it starts on first use. When the session breaks
(the process exits, the connection closes) or cannot start, the server is unavailable
and the supervisor starts it again after a backoff of 0.5 s doubling to 30 s; a session
that then works resets the backoff. The catalogue (tools, resources, templates) is cached
for the registry's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from mcp import Client, StdioServerParameters

from .backends import Caller, Catalogue, ServerUnavailable, ToolTimeout
from .registry import HttpTransport, Registry, ServerSpec, StdioTransport

log = logging.getLogger("core_api.mcp")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc) or type(exc).__name__
    return text[:200]


class UpstreamServer:
    def __init__(self, spec: ServerSpec, registry: Registry) -> None:
        self.spec, self.registry = spec, registry
        self.client: Client | None = None
        self.failures = 0  # consecutive failed starts or broken sessions
        self.retry_at = 0.0  # monotonic time of the next start while backing off
        self.last_error = ""
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._attempt: asyncio.Future[Client | None] | None = None
        self._broken = asyncio.Event()
        self._closing = False
        self._catalogue: Catalogue | None = None
        self._catalogue_lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        return self.client is not None or (self.failures == 0 or time.monotonic() >= self.retry_at)

    def _target(self, stack: contextlib.AsyncExitStack) -> StdioServerParameters | Any:
        transport = self.spec.transport
        if isinstance(transport, StdioTransport):
            return StdioServerParameters(
                command=transport.command,
                args=list(transport.args),
                env=dict(transport.env) or None,
                cwd=transport.cwd,
            )
        assert isinstance(transport, HttpTransport)
        if not transport.headers:
            return transport.url
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(
            headers=dict(transport.headers), timeout=self.registry.call_timeout
        )
        stack.push_async_callback(http.aclose)  # the SDK leaves a client it was given open
        return streamable_http_client(transport.url, http_client=http)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            attempt = self._attempt
            if attempt is None or attempt.done():
                attempt = self._attempt = loop.create_future()
            resources = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(self.registry.connect_timeout):
                    target = self._target(resources)
                    client = Client(target, read_timeout_seconds=None, cache=None)
                    entered = await client.__aenter__()
                try:
                    self.client, self.failures, self.last_error = entered, 0, ""
                    self.starts += 1
                    attempt.set_result(entered)
                    await self._broken.wait()
                finally:
                    self.client = None
                    with contextlib.suppress(Exception):
                        await client.__aexit__(None, None, None)
            except asyncio.CancelledError:
                if self._closing:
                    break
                raise
            except BaseException as exc:
                self.last_error = _describe(exc)
                log.warning("mcp server %s unavailable: %s", self.spec.id, self.last_error)
            finally:
                with contextlib.suppress(Exception):
                    await resources.aclose()
                self._broken.clear()
                self._catalogue = None
                if not attempt.done():
                    attempt.set_result(None)
            if self._closing:
                break
            self.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
            self.retry_at = time.monotonic() + delay
            await asyncio.sleep(delay)

    def warm_up(self) -> None:
        if self._task is None and not self._closing:
            self._attempt = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.spec.id}")

    async def session(self) -> Client:
        """The live session, started on first use; ServerUnavailable while it cannot be."""
        client = self.client
        if client is not None:
            return client
        if self._closing:
            raise ServerUnavailable(self.spec.id, "the gateway is shutting down")
        if self._task is None:
            self.warm_up()
        elif self.failures and time.monotonic() < self.retry_at:
            raise ServerUnavailable(self.spec.id, self.last_error)
        attempt = self._attempt
        assert attempt is not None
        try:
            found = await asyncio.wait_for(
                asyncio.shield(attempt), self.registry.connect_timeout + 1
            )
        except TimeoutError:
            found = None
        if found is None:
            raise ServerUnavailable(self.spec.id, self.last_error)
        return found

    def _check_broken(self, exc: BaseException) -> None:
        if isinstance(exc, MCPError) and exc.error.code == types.CONNECTION_CLOSED:
            self._broken.set()

    def cached(self) -> Catalogue | None:
        return self._catalogue

    async def catalogue(self) -> Catalogue:
        cached = self._catalogue
        if (
            cached is not None
            and time.monotonic() - cached.fetched_at < self.registry.catalogue_ttl
        ):
            return cached
        async with self._catalogue_lock:  # one fetch however many requests wait for it
            cached = self._catalogue
            if cached is not None and (
                time.monotonic() - cached.fetched_at < self.registry.catalogue_ttl
            ):
                return cached
            client = await self.session()
            try:
                async with asyncio.timeout(self.registry.call_timeout):
                    found = await self._fetch(client)
            except TimeoutError:
                raise ServerUnavailable(self.spec.id, "it did not list its tools in time") from None
            except MCPError as exc:
                self._check_broken(exc)
                raise ServerUnavailable(self.spec.id, exc.error.message) from None
            self._catalogue = found
            return found

    async def _fetch(self, client: Client) -> Catalogue:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang the gateway
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        capabilities = client.server_capabilities
        if capabilities.resources is not None:
            with contextlib.suppress(MCPError):
                resources = list((await client.list_resources(cache_mode="refresh")).resources)
            with contextlib.suppress(MCPError):
                listed = await client.session.list_resource_templates()
                templates = list(listed.resource_templates)
        return Catalogue(tools=tools, resources=resources, templates=templates)

    async def call(
        self, tool: str, arguments: Mapping[str, Any], caller: Caller, seconds: float
    ) -> types.CallToolResult:
        client = await self.session()
        try:
            async with asyncio.timeout(seconds):
                return await client.call_tool(tool, dict(arguments))
        except TimeoutError:
            raise ToolTimeout(seconds) from None
        except MCPError as exc:
            self._check_broken(exc)
            if exc.error.code == types.CONNECTION_CLOSED:
                raise ServerUnavailable(self.spec.id, "the connection closed") from None
            raise

    async def read(self, uri: str, caller: Caller, seconds: float) -> types.ReadResourceResult:
        client = await self.session()
        try:
            async with asyncio.timeout(seconds):
                return await client.read_resource(uri, cache_mode="refresh")
        except TimeoutError:
            raise ToolTimeout(seconds) from None
        except MCPError as exc:
            self._check_broken(exc)
            if exc.error.code == types.CONNECTION_CLOSED:
                raise ServerUnavailable(self.spec.id, "the connection closed") from None
            raise

    async def close(self) -> None:
        self._closing = True
        self._broken.set()
        task, self._task = self._task, None
        if task is None:
            return
        attempt = self._attempt
        if attempt is not None and not attempt.done():  # cancelling mid-connect leaks sockets
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(attempt), 5)
            self._broken.set()
        if self.client is not None:  # let the supervisor leave the session itself
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
