"""Route templates shared by every feature's ``register``."""

from __future__ import annotations

from falcon.routing import BaseConverter

MAX_ID = 2**63 - 1  # BIGINT: a larger id can match nothing, and must not reach the database


class IdConverter(BaseConverter):
    """``{id:id}``: ASCII digits only, 1 .. 2**63-1. Falcon's ``int`` converter takes any
    Unicode digit (``/workspaces/`` + U+0661 was workspace 1); an id that is not ours is a 404."""

    def convert(self, value: str) -> int | None:
        if not value.isascii() or not value.isdigit() or len(value) > 19:
            return None
        number = int(value)
        return number if 1 <= number <= MAX_ID else None


ID = "{id:id}"
