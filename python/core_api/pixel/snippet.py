"""pixel.js, read and compressed once per process; answers carry a strong ETag.

The URL is not versioned (site owners paste it once), so the cache is long but not
immutable: a day fresh, a week stale-while-revalidate, then a revalidation by ETag that
costs a 304.
"""

from __future__ import annotations

from importlib import resources

from ..web.static import StaticBody, matches

__all__ = ["CACHE_CONTROL", "MAX_GZIPPED", "Script", "matches"]

CACHE_CONTROL = "public, max-age=86400, stale-while-revalidate=604800"
MAX_GZIPPED = 1024


class Script(StaticBody):
    __slots__ = ()

    @classmethod
    def load(cls) -> Script:
        body = (resources.files("core_api.pixel") / "static" / "pixel.js").read_bytes()
        script = cls.of(body, level=9, tag_chars=20)
        assert isinstance(script, Script)
        return script
