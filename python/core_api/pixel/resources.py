"""/api/v1/pixel/config: unauthenticated, limited per client IP (CORE_API_PIXEL_RATE_LIMIT)."""

from __future__ import annotations

import falcon.asgi


class PixelConfig:
    public = True
    ip_limit = "pixel"

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {
            "enabled": True,
            "features": {"pageviews": True, "events": True, "sessions": True},
            "sample_rate": 1.0,
        }
