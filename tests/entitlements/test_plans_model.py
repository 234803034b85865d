"""The plans file's feature model: every kind, validation at start-up with errors that
name the tier and the feature, the older format, and ``Plans.limit`` for the count caps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from entitlements_support import PLANS, plans_file

from core_api.config import ConfigError
from core_api.plans import Allowance, load_plans
from support import clean_env, core_api_command


def test_shipped_plans_declare_every_kind_and_the_free_counts() -> None:
    plans = load_plans()
    kinds = {f.kind for f in plans.features.values()}
    assert kinds == {"boolean", "limit", "metered", "quantity"}
    assert plans.features["api_calls"].period == "month"
    assert plans.features["storage"].unit == "bytes"
    free = {n: plans.limit("free", n) for n in ("workspaces", "api_keys", "webhooks")}
    assert free == {"workspaces": 3, "api_keys": 5, "webhooks": 2}
    assert plans.limit("free", "pixel_sites") == 1
    assert plans.limit("enterprise", "webhooks") == -1
    assert plans.limit("free", "not_a_feature") == -1  # unnamed: unlimited, as before
    assert plans.limit("free", "custom_domains") == 0 and plans.limit("pro", "custom_domains") == 1
    for tier in plans.tiers.values():  # every tier gives every feature a value
        assert set(tier.allowances) == set(plans.features)


def test_enforcement_per_feature_and_per_tier(tmp_path: Path) -> None:
    plans = load_plans(plans_file(tmp_path))
    assert plans.allowance("small", "mcp_calls") == Allowance(10, True)
    assert plans.allowance("big", "mcp_calls") == Allowance(10, False)  # tier's table value
    assert plans.allowance("small", "api_calls") == Allowance(5, False)  # feature default


def test_older_format_without_features_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text("[tiers.free]\nrequests_per_minute = 60\n[tiers.free.limits]\nwebhooks = 2\n")
    plans = load_plans(str(path))
    assert plans.limit("free", "webhooks") == 2
    assert plans.features["webhooks"].kind == "limit"


BAD = [
    ('[features.x]\nkind = "gauge"\n', "feature x: kind must be one of"),
    ('[features.x]\nkind = "metered"\n', "feature x: a metered feature needs period"),
    ('[features.x]\nkind = "metered"\nperiod = "fortnight"\n', "needs period"),
    ('[features.x]\nkind = "limit"\nperiod = "month"\n', "only a metered feature has a period"),
    ('[features.x]\nkind = "quantity"\n', "feature x: a quantity needs a unit"),
    ('[features.x]\nkind = "limit"\nunit = "b"\n', "only a quantity has a unit"),
    ('[features.x]\nkind = "limit"\nenforcement = "maybe"\n', 'enforcement must be "hard"'),
    ('[features.x]\nkind = "boolean"\nenforcement = "soft"\n', "cannot be soft"),
    ('[features.x]\nkind = "limit"\ncolour = 1\n', "unknown key(s) colour"),
    ('[features.X-1]\nkind = "limit"\n', "a name is lower-case"),
]


@pytest.mark.parametrize(("feature", "message"), BAD)
def test_bad_feature_declarations_are_named(tmp_path: Path, feature: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(feature + "[tiers.t]\nrequests_per_minute = 1\n[tiers.t.limits]\nx = 1\n")
    with pytest.raises(ConfigError) as err:
        load_plans(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


BAD_VALUES = [
    ("posts = -2", "tier small: posts: a limit is a count >= 0, or -1 for unlimited"),
    ('posts = "ten"', "tier small: posts: a limit is an integer"),
    ("posts = true", "tier small: posts: a limit is an integer"),
    ("custom_domains = 1", "tier small: custom_domains: a boolean feature is true or false"),
    ('posts = { enforcement = "soft" }', "tier small: posts: a table value needs limit"),
    ("posts = { limit = 1, hard = true }", "tier small: posts: unknown key(s) hard"),
    ("gadgets = 1", "tier small: unknown feature 'gadgets' (declare it under [features])"),
]


@pytest.mark.parametrize(("line", "message"), BAD_VALUES)
def test_bad_tier_values_are_named(tmp_path: Path, line: str, message: str) -> None:
    name = line.split(" ")[0]
    head, tail = PLANS.split("[tiers.small.limits]\n", 1)
    mine = [ln for ln in tail.splitlines() if ln.startswith(f"{name} =")]
    # The line replaces the tier's own value for that feature (or is added, if new).
    tail = tail.replace(mine[0], line, 1) if mine else f"{line}\n{tail}"
    text = f"{head}[tiers.small.limits]\n{tail}"
    with pytest.raises(ConfigError) as err:
        load_plans(plans_file(tmp_path, text))
    assert message in str(err.value)


def test_a_tier_missing_a_feature_is_refused(tmp_path: Path) -> None:
    text = PLANS.replace("storage = 1000\n", "")
    with pytest.raises(ConfigError, match="tier small: no limit for storage"):
        load_plans(plans_file(tmp_path, text))


def test_start_up_refuses_invalid_plans_with_the_reason(tmp_path: Path) -> None:
    bad = plans_file(
        tmp_path, PLANS.replace('kind = "quantity"\nunit = "bytes"', 'kind = "quantity"')
    )
    env = clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", plans_file=bad)
    done = subprocess.run(
        [*core_api_command(), "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "feature storage: a quantity needs a unit" in done.stderr
