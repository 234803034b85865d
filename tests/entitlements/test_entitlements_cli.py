"""``core-api entitlements grant|set|clear|show`` against a real database file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from entitlements_support import CHECK, SUMMARY, plans_file

from support import Launcher, clean_env, core_api_command, fresh_connection_client, printed_key


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*core_api_command(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def ok(env: dict[str, str], *args: str) -> Any:
    done = run(env, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_operators_set_grant_show_and_clear(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        plans_file=plans_file(tmp_path),
        log_level="WARNING",
    )
    ws = ok(env, "bootstrap", "--name", "Acme")["workspace"]["id"]
    shown = ok(env, "entitlements", "show", "--workspace", str(ws))
    assert shown["tier"] == "small" and shown["overrides"] == []
    assert shown["entitlements"]["posts"]["limit"] == 10
    ok(env, "entitlements", "set", "--workspace", str(ws), "--feature", "posts", "--limit", "50")
    granted = ok(
        env,
        *("entitlements", "grant", "--workspace", str(ws), "--feature", "posts"),
        *("--amount", "5", "--days", "30", "--note", "launch promo"),
    )
    assert granted["entitlements"]["posts"]["limit"] == 55
    grant = granted["overrides"][1]
    assert (grant["kind"], grant["amount"], grant["note"]) == ("grant", 5, "launch promo")
    assert grant["expires_at"] is not None and grant["expired"] is False
    expiring = ok(
        env,
        *("entitlements", "grant", "--workspace", str(ws), "--feature", "custom_domains"),
        *("--amount", "1", "--expires", "2099-01-01T00:00:00Z"),
    )
    assert expiring["entitlements"]["custom_domains"] == {"enabled": True}
    cleared = ok(env, "entitlements", "clear", "--workspace", str(ws), "--feature", "posts")
    assert cleared["removed"] == 2 and cleared["entitlements"]["posts"]["limit"] == 10

    grant_one = ("grant", "--workspace", str(ws), "--feature", "posts", "--amount", "1")
    for args, message in [
        (("grant", "--workspace", str(ws), "--feature", "nope", "--amount", "1"), "invalid"),
        (("grant", "--workspace", str(ws), "--feature", "posts", "--amount", "0"), "positive"),
        (("set", "--workspace", "999", "--feature", "posts", "--limit", "1"), "No workspace"),
        (("set", "--workspace", str(ws), "--feature", "posts", "--limit", "-5"), "-1"),
        ((*grant_one, "--expires", "2001-01-01T00:00:00Z"), "future"),
        ((*grant_one, "--expires", "soon"), "--expires"),
    ]:
        done = run(env, "entitlements", *args)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr, (args, done.stderr)
    assert len(ok(env, "entitlements", "show", "--workspace", str(ws))["overrides"]) == 1


def test_a_running_server_sees_an_override_at_once(launcher: Launcher, tmp_path: Path) -> None:
    """The CLI names the workspace as changed through the host's invalidation log: the
    serving processes drop their cached limits on their next request, not after a TTL."""
    env = clean_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        plans_file=plans_file(tmp_path),
        log_level="WARNING",
    )
    server = launcher.start(env, 2, "--first-run-bootstrap")
    key = printed_key(server)
    with fresh_connection_client(server, key) as client:
        limits = {client.get(CHECK, params={"feature": "posts"}).json()["limit"] for _ in range(8)}
        assert limits == {10}  # now cached in both workers
        workspace = client.get(SUMMARY).json()["data"]["workspace_id"]
        grant = ("grant", "--workspace", str(workspace), "--feature", "posts", "--amount", "1")
        ok(env, "entitlements", *grant)
        after = {client.get(CHECK, params={"feature": "posts"}).json()["limit"] for _ in range(8)}
    assert after == {11}
