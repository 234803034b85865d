"""Tiers from the plans file: rate limits (and later entitlement limits)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import _native
from .config import ConfigError


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    requests_per_minute: int
    burst: float
    # Count limits by feature (``[tiers.<tier>.limits]``); -1 or absent means unlimited.
    limits: dict[str, int] = field(default_factory=dict)
    # Derived once: they are read (and the strings written into headers) on every request.
    capacity: float = field(init=False)
    refill_per_second: float = field(init=False)
    policy: str = field(init=False)  # the IETF RateLimit-Policy item
    policy_name: str = field(init=False)
    limit_text: str = field(init=False)
    native: _native.RateTier = field(init=False)  # validated once for the Rust bucket check

    def __post_init__(self) -> None:
        capacity = self.requests_per_minute * (1.0 + self.burst)
        derived = {
            "capacity": capacity,
            "refill_per_second": self.requests_per_minute / 60.0,
            "policy_name": f'"{self.name}"',
            "policy": f'"{self.name}";q={int(capacity)};w=60',
            "limit_text": str(self.requests_per_minute),
            "native": _native.RateTier(capacity, self.requests_per_minute / 60.0),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class Plans:
    tiers: dict[str, Tier]
    default_tier: str

    def get(self, name: str) -> Tier:
        return self.tiers[name]

    def names(self) -> list[str]:
        return sorted(self.tiers, key=lambda n: self.tiers[n].requests_per_minute)

    def limit(self, tier: str, feature: str) -> int:
        """The tier's count limit for a feature; -1 means unlimited."""
        return self.tiers[tier].limits.get(feature, -1)

    def exceeds(self, tier: str, ceiling: str) -> bool:
        return self.tiers[tier].requests_per_minute > self.tiers[ceiling].requests_per_minute


def load_plans(path: str | None = None) -> Plans:
    if path is None:
        text = (resources.files("core_api") / "plans.toml").read_text()
        source = "packaged plans.toml"
    else:
        text, source = Path(path).read_text(), path
    try:
        return _parse(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"CORE_API_PLANS_FILE: invalid plans in {source}: {exc}") from None


def _parse(data: dict[str, Any]) -> Plans:
    tiers = {}
    for name, spec in data["tiers"].items():
        rpm, burst = int(spec["requests_per_minute"]), float(spec.get("burst", 0.0))
        if rpm <= 0 or burst < 0:
            raise ValueError(f"tier {name}: requests_per_minute > 0 and burst >= 0 required")
        limits = {str(k): int(v) for k, v in spec.get("limits", {}).items()}
        if any(v < -1 for v in limits.values()):
            raise ValueError(f"tier {name}: a limit is a count >= 0, or -1 for unlimited")
        tiers[name] = Tier(name, rpm, burst, limits)
    default = str(data.get("default_tier", "free"))
    if default not in tiers:
        raise ValueError(f"default_tier {default!r} is not a tier")
    return Plans(tiers, default)
