"""POST /api/v1/pixel/track (JSON or sendBeacon's text/plain) and its GET variant
/api/v1/pixel/track.gif (a 1x1 GIF for pages without JavaScript). Unauthenticated,
limited per client IP (``CORE_API_PIXEL_RATE_LIMIT``); the rules live in ``ingest.py``."""

from __future__ import annotations

import dataclasses
from typing import Any

import falcon
import falcon.asgi
import orjson

from ..config import Settings
from ..errors import ValidationFailed
from ..gateway.middleware import client_ip
from ..web.bodies import UnsupportedMediaType, read_raw
from .ingest import MAX_BODY_BYTES, Client, Hit, PixelIngest, host_of, parse_hit

_TRACKED = b'{"tracked":true}'
_CONTENT_TYPES = frozenset({"", "application/json", "text/plain"})
# The smallest transparent 1x1 GIF (43 bytes).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = ("Cache-Control", "no-store")


class _Tracking:
    public = True
    ip_limit = "pixel"

    def __init__(self, settings: Settings, ingest: PixelIngest) -> None:
        self.settings, self.ingest = settings, ingest
        self.body_settings = dataclasses.replace(
            settings, max_body_bytes=min(MAX_BODY_BYTES, settings.max_body_bytes)
        )

    def client(self, req: falcon.asgi.Request, origin: str | None) -> Client:
        return Client(
            ip=client_ip(req, self.settings),
            user_agent=req.get_header("User-Agent") or "",
            origin_host=host_of(origin),
            dnt=req.get_header("DNT"),
            gpc=req.get_header("Sec-GPC"),
        )


class PixelTrack(_Tracking):
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raw = await read_raw(req, self.body_settings)
        content_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if content_type not in _CONTENT_TYPES:
            raise UnsupportedMediaType("The request body must be application/json or text/plain.")
        try:
            media = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValidationFailed.field(
                "body", "The request body must be a valid JSON document."
            ) from None
        hit = parse_hit(media)
        origin = req.get_header("Origin")
        outcome = await self.ingest.track(hit, self.client(req, origin))
        headers = [_NO_STORE]
        if origin is not None:  # allowed by track(): let that page's script read the answer
            headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        resp.set_headers(headers)
        if outcome.tracked:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = _TRACKED
        else:
            resp.media = outcome.body()

    async def on_options(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """CORS preflight (a fetch with a JSON content type); sendBeacon needs none."""
        resp.status = falcon.HTTP_204
        resp.set_headers(
            [
                ("Access-Control-Allow-Origin", req.get_header("Origin") or "*"),
                ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Content-Type"),
                ("Access-Control-Max-Age", "86400"),
                ("Vary", "Origin"),
            ]
        )


class PixelTrackGif(_Tracking):
    """``<img src=".../track.gif?url=...">``; without ``url`` the page is the Referer."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        params: dict[str, Any] = {k: v for k, v in req.params.items() if k != "_"}
        referer = req.get_header("Referer")
        if "url" not in params and referer:
            params["url"] = referer
        properties = params.get("properties")
        if isinstance(properties, str):
            try:
                params["properties"] = orjson.loads(properties)
            except orjson.JSONDecodeError:
                raise ValidationFailed.field(
                    "properties", "The properties must be a JSON object."
                ) from None
        hit: Hit = parse_hit(params)
        await self.ingest.track(hit, self.client(req, referer))
        resp.set_headers([_NO_STORE])
        resp.content_type = "image/gif"
        resp.data = GIF
