"""The request pipeline: authentication, rate limits, scopes, idempotency, invalidation."""

from __future__ import annotations

from .jobs import JOBS

__all__ = ["JOBS"]
