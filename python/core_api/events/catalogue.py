"""The event-type catalogue (``GET /api/v1/webhooks/event-types``, docs/webhooks.md).

Types under ``RESERVED_PREFIXES`` are published by core-api itself; ``POST /api/v1/events``
refuses them, so a key can never forge, say, ``api_key.revoked``. Any other well-formed
type (``post.created``) may be published by the platform's own services.
"""

from __future__ import annotations

from typing import Any

# (type, description, example data)
EVENT_TYPES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "workspace.created",
        "A workspace was created; delivered to the workspace the request acted in (the key's"
        " home or X-Workspace-ID), since the new one has no endpoints yet.",
        {"workspace": {"id": 7, "name": "Acme", "slug": "acme", "tier": "free"}},
    ),
    (
        "workspace.updated",
        "A workspace's name, slug, tier or settings changed.",
        {"workspace": {"id": 7, "name": "Acme Inc", "slug": "acme", "tier": "pro"}},
    ),
    (
        "workspace.deleted",
        "A workspace was deleted (delivered to its own endpoints, which are then removed).",
        {"workspace": {"id": 7}},
    ),
    (
        "api_key.created",
        "An API key was created (never carries the key itself).",
        {"api_key": {"id": 12, "name": "CI", "prefix": "sk_live_abc", "scopes": ["read"]}},
    ),
    (
        "api_key.rotated",
        "An API key was rotated; the old key works until grace_period_ends_at.",
        {"api_key": {"id": 12, "rotated_to_id": 13, "grace_period_ends_at": "..."}},
    ),
    ("api_key.revoked", "An API key was revoked.", {"api_key": {"id": 12}}),
    (
        "webhook.endpoint.disabled",
        "A webhook endpoint was disabled: it answered 410 Gone, or kept failing.",
        {"endpoint": {"id": 3, "url": "https://example.com/hook", "reason": "..."}},
    ),
    (
        "webhook.test",
        "Sent by POST /api/v1/webhooks/{id}/test to that endpoint only.",
        {"message": "This is a test event from core-api."},
    ),
    (
        "seo.report.created",
        "An SEO report was stored (POST /api/v1/seo/report).",
        {"report": {"id": 5, "url": "https://example.com/", "scores": {"seo": 95}}},
    ),
    (
        "mcp.tool.executed",
        "An MCP tool call through the gateway completed (REST or /api/v1/mcp).",
        {
            "server": "filesystem",
            "tool": "read_file",
            "outcome": "ok",
            "duration_ms": 1.8,
            "api_key_id": 12,
            "transport": "rest",
            "request_id": "req_...",
        },
    ),
    (
        "entitlement.threshold_reached",
        "Usage of a limited feature crossed 80 % of its limit (once per period).",
        {
            "feature": "posts",
            "threshold": 80,
            "used": 8,
            "limit": 10,
            "enforcement": "hard",
            "period_start": None,
            "reset_at": None,
        },
    ),
    (
        "entitlement.limit_reached",
        "Usage of a limited feature reached 100 % of its limit (once per period).",
        {
            "feature": "posts",
            "threshold": 100,
            "used": 10,
            "limit": 10,
            "enforcement": "hard",
            "period_start": None,
            "reset_at": None,
        },
    ),
)
RESERVED_PREFIXES = ("workspace.", "api_key.", "webhook.", "seo.", "mcp.", "entitlement.")


def reserved(event_type: str) -> bool:
    return event_type.startswith(RESERVED_PREFIXES)


def present() -> list[dict[str, Any]]:
    return [
        {
            "type": name,
            "description": description,
            "source": "core-api" if reserved(name) else "platform",
            "example": example,
        }
        for name, description, example in EVENT_TYPES
    ]
