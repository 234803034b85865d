"""Scopes are declared per route: the gateway checks the scope a resource declares for the
method (``scopes = {"GET": "workspaces:read", ...}``) and lets a valid key of any scope
through when none is declared (it fails open). So every responder of every non-public resource must
declare one: a new route or method without it fails here instead of being open to every
key. Public resources (``public = True``) are listed, so adding one is a visible choice."""

from __future__ import annotations

from typing import Any

from security_support import responders, routes

from conftest import Api
from core_api.app import create_app
from core_api.config import Settings
from core_api.gateway.scopes import normalised_set
from core_api.runtime import Runtime

PUBLIC = {
    "/health",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/docs",
    "/api/docs/{name}",
    "/api/v1/pixel/config",
    "/api/v1/pixel/pixel.js",
    "/api/v1/pixel/track",
    "/api/v1/pixel/track.gif",
}


async def test_every_responder_declares_a_scope(runtime: Runtime, settings: Settings) -> None:
    app = create_app(settings, runtime)
    open_routes, public = [], set()
    for template, resource in routes(app):
        if getattr(resource, "public", False):
            public.add(template)
            continue
        declared = getattr(resource, "scopes", {})
        for method in responders(resource):
            scope = declared.get(method)
            if method != "OPTIONS" and not scope:
                open_routes.append(f"{method} {template}")
            elif scope:
                assert normalised_set([scope]), scope  # a well-formed resource:action
    assert not open_routes, f"responders without a scope (open to any key): {open_routes}"
    assert public <= PUBLIC, f"new public routes, review them: {sorted(public - PUBLIC)}"


async def test_a_key_without_the_scope_is_refused_everywhere(
    api: Api, runtime: Runtime, settings: Settings
) -> None:
    """A key holding one unrelated scope gets 403 on every scoped route (never 2xx)."""
    made = await api.post("/api/v1/api-keys", json={"name": "narrow", "scopes": ["posts:read"]})
    assert made.status == 201, made.json
    narrow = made.json["data"]["key"]
    app = create_app(settings, runtime)
    refused: list[Any] = []
    for template, resource in routes(app):
        if getattr(resource, "public", False):
            continue
        path = (
            template.replace("{id:id}", "1")
            .replace("{delivery_id:id}", "1")
            .replace("{workspace_id:id}", "1")
            .replace("{server_id}", "filesystem")
            .replace("{uri:path}", "filesystem://a.txt")
        )
        for method, scope in getattr(resource, "scopes", {}).items():
            got = await api.request(method, path, key=narrow, json={} if method != "GET" else None)
            refused.append((method, path, got.status))
            assert got.status == 403, (method, path, got.status, got.json)
            assert got.json["error"] == "access_denied" and scope in got.json["message"]
    assert len(refused) > 40


class _Forgotten:
    """A resource whose author forgot one method's scope."""

    scopes = {"GET": "workspaces:read"}

    async def on_get(self, req: Any, resp: Any) -> None:
        resp.media = {"ok": "get"}

    async def on_post(self, req: Any, resp: Any) -> None:  # no "POST" in scopes
        resp.media = {"ok": "post"}


async def test_a_responder_without_a_scope_is_refused(
    runtime: Runtime, settings: Settings, boot: dict[str, Any]
) -> None:
    """The gateway fails closed: even a ``*`` key gets 403 on an undeclared method, while
    a method the resource does not implement is still Falcon's 405."""
    import falcon.testing

    app = create_app(settings, runtime)
    app.add_route("/api/v1/forgotten", _Forgotten())
    async with falcon.testing.ASGIConductor(app) as conductor:
        api = Api(conductor, boot["api_key"]["key"])
        assert (await api.get("/api/v1/forgotten")).json == {"ok": "get"}
        refused = await api.post("/api/v1/forgotten", json={})
        assert refused.status == 403, refused.json
        assert refused.json["error"] == "access_denied"
        assert (await api.delete("/api/v1/forgotten")).status == 405
        assert (await api.request("OPTIONS", "/api/v1/forgotten")).status == 200
        assert (await api.post("/api/v1/forgotten", auth=False)).status == 401
