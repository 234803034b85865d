"""Tiers from the plans file: rate limits and entitlements (features and their limits).

The file's ``[features.<name>]`` tables declare what can be limited and how (its kind,
period, unit, hard or soft); each ``[tiers.<tier>.limits]`` table gives every declared
feature a value. A file without ``[features]`` (the older format) still loads: each name
in a tier's limits is then a hard count limit. Everything is validated here, once, at
start-up, and a mistake names the tier, the feature and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import _native
from .config import ConfigError

UNLIMITED = -1
# boolean: on/off. limit: a count of existing things (core-api counts its own resources:
# workspaces, api_keys, webhooks, pixel_sites; others, such as posts, are counted through
# POST /entitlements/usage). metered: consumption that resets every period. quantity: an
# amount held, in a unit (storage in bytes), recorded through usage (negative releases).
KINDS = ("boolean", "limit", "metered", "quantity")
PERIODS = ("day", "week", "month", "year")
ENFORCEMENTS = ("hard", "soft")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FEATURE_KEYS = {"kind", "period", "unit", "enforcement", "description"}


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    kind: str  # one of KINDS
    period: str | None = None  # metered only
    unit: str | None = None  # quantity only
    hard: bool = True  # hard: refuse beyond the limit; soft: allow, report the overage
    description: str = ""


@dataclass(frozen=True, slots=True)
class Allowance:
    """A tier's value for one feature: a limit (-1 unlimited; a boolean is 1 on, 0 off)
    and whether it is enforced (hard) or only reported (soft)."""

    limit: int
    hard: bool


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    requests_per_minute: int
    burst: float
    # Count limits by feature (``[tiers.<tier>.limits]``); -1 or absent means unlimited.
    limits: dict[str, int] = field(default_factory=dict)
    allowances: dict[str, Allowance] = field(default_factory=dict)
    # Derived once: they are read (and the strings written into headers) on every request.
    capacity: float = field(init=False)
    refill_per_second: float = field(init=False)
    policy: str = field(init=False)  # the IETF RateLimit-Policy item
    policy_name: str = field(init=False)
    limit_text: str = field(init=False)
    # The three header values above as bytes (the pixel fast path writes raw ASGI headers).
    raw: tuple[bytes, bytes, bytes] = field(init=False)  # (limit, policy, policy name)
    native: _native.RateTier = field(init=False)  # validated once for the Rust bucket check

    def __post_init__(self) -> None:
        capacity = self.requests_per_minute * (1.0 + self.burst)
        policy_name, policy = f'"{self.name}"', f'"{self.name}";q={int(capacity)};w=60'
        limit_text = str(self.requests_per_minute)
        derived = {
            "capacity": capacity,
            "refill_per_second": self.requests_per_minute / 60.0,
            "policy_name": policy_name,
            "policy": policy,
            "limit_text": limit_text,
            "raw": (limit_text.encode(), policy.encode(), policy_name.encode()),
            "native": _native.RateTier(capacity, self.requests_per_minute / 60.0),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class Plans:
    tiers: dict[str, Tier]
    default_tier: str
    features: dict[str, Feature] = field(default_factory=dict)

    def get(self, name: str) -> Tier:
        return self.tiers[name]

    def names(self) -> list[str]:
        return sorted(self.tiers, key=lambda n: self.tiers[n].requests_per_minute)

    def limit(self, tier: str, feature: str) -> int:
        """The tier's limit for a feature; -1 means unlimited (also for a feature the
        plans do not name). Per-workspace overrides are the entitlements service's."""
        return self.tiers[tier].limits.get(feature, UNLIMITED)

    def allowance(self, tier: str, feature: str) -> Allowance:
        found = self.tiers[tier].allowances.get(feature)
        if found is not None:
            return found
        hard = self.features[feature].hard if feature in self.features else True
        return Allowance(UNLIMITED, hard)

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
    declared = "features" in data
    features = _features(data.get("features", {}))
    tiers = {}
    for name, spec in data["tiers"].items():
        rpm, burst = int(spec["requests_per_minute"]), float(spec.get("burst", 0.0))
        if rpm <= 0 or burst < 0:
            raise ValueError(f"tier {name}: requests_per_minute > 0 and burst >= 0 required")
        values = spec.get("limits", {})
        if not isinstance(values, dict):
            raise ValueError(f"tier {name}: limits must be a table")
        allowances: dict[str, Allowance] = {}
        for feature, value in values.items():
            if feature not in features:
                if declared:
                    raise ValueError(
                        f"tier {name}: unknown feature {feature!r} (declare it under [features])"
                    )
                features[feature] = Feature(feature, "limit")  # the older format
            allowances[feature] = _allowance(f"tier {name}: {feature}", features[feature], value)
        if missing := sorted(set(features) - set(allowances)) if declared else []:
            raise ValueError(f"tier {name}: no limit for {', '.join(missing)}")
        limits = {feature: a.limit for feature, a in allowances.items()}
        tiers[name] = Tier(name, rpm, burst, limits, allowances)
    default = str(data.get("default_tier", "free"))
    if default not in tiers:
        raise ValueError(f"default_tier {default!r} is not a tier")
    return Plans(tiers, default, features)


def _features(table: Any) -> dict[str, Feature]:
    if not isinstance(table, dict):
        raise ValueError("features must be a table of [features.<name>] tables")
    found = {}
    for name, spec in table.items():
        where = f"feature {name}"
        if not _NAME.match(name):
            raise ValueError(f"{where}: a name is lower-case letters, digits and _ (max 64)")
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: must be a table")
        if unknown := sorted(set(spec) - _FEATURE_KEYS):
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
        period, unit = spec.get("period"), spec.get("unit")
        if kind == "metered" and period not in PERIODS:
            raise ValueError(f"{where}: a metered feature needs period = {' | '.join(PERIODS)}")
        if kind != "metered" and period is not None:
            raise ValueError(f"{where}: only a metered feature has a period")
        if kind == "quantity" and not (isinstance(unit, str) and unit):
            raise ValueError(f'{where}: a quantity needs a unit (unit = "bytes")')
        if kind != "quantity" and unit is not None:
            raise ValueError(f"{where}: only a quantity has a unit")
        hard = _enforcement(where, spec.get("enforcement", "hard"))
        if kind == "boolean" and not hard:
            raise ValueError(f"{where}: a boolean feature cannot be soft")
        found[name] = Feature(name, kind, period, unit, hard, str(spec.get("description", "")))
    return found


def _enforcement(where: str, value: Any) -> bool:
    if value not in ENFORCEMENTS:
        raise ValueError(f'{where}: enforcement must be "hard" or "soft"')
    return bool(value == "hard")


def _allowance(where: str, feature: Feature, value: Any) -> Allowance:
    hard = feature.hard
    if isinstance(value, dict):
        if unknown := sorted(set(value) - {"limit", "enforcement"}):
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if "limit" not in value:
            raise ValueError(f"{where}: a table value needs limit = ...")
        if "enforcement" in value:
            hard = _enforcement(where, value["enforcement"])
            if feature.kind == "boolean" and not hard:
                raise ValueError(f"{where}: a boolean feature cannot be soft")
        value = value["limit"]
    if feature.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: a boolean feature is true or false")
        return Allowance(1 if value else 0, True)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: a limit is an integer (-1 for unlimited)")
    if value < UNLIMITED:
        raise ValueError(f"{where}: a limit is a count >= 0, or -1 for unlimited")
    return Allowance(value, hard)
