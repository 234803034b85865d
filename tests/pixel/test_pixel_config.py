"""GET /api/v1/pixel/config: the site by ?site=, Origin or Referer; unknown, disabled and
foreign origins get the disabled config (200, never an error page); CORS; a short cache;
site changes show at once."""

from __future__ import annotations

import asyncio

from pixel_sites_support import CONFIG, SITES

from conftest import Api, serving
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime

ENABLED = {
    "enabled": True,
    "features": {"pageviews": True, "events": True, "sessions": True},
    "sample_rate": 1.0,
}
DISABLED = {
    "enabled": False,
    "features": {"pageviews": False, "events": False, "sessions": False},
    "sample_rate": 0.0,
}


async def config(api: Api, **kw: object) -> dict[str, object]:
    result = await api.get(CONFIG, auth=False, **kw)  # type: ignore[arg-type]
    assert result.status == 200, result.json
    assert result.header("Access-Control-Allow-Origin") == "*"
    assert result.header("Cache-Control") == "public, max-age=60"
    assert "Origin" in (result.header("Vary") or "")
    return dict(result.json)


async def test_by_origin_referer_and_site(api: Api) -> None:
    made = await api.post(
        SITES, json={"domain": "example.com", "allowed_origins": ["*.example.org", "shop.io"]}
    )
    assert made.status == 201
    assert await config(api, headers={"Origin": "https://example.com"}) == ENABLED
    assert await config(api, headers={"Origin": "https://WWW.example.com:8443"}) == ENABLED
    assert await config(api, headers={"Referer": "https://example.com/pricing?x=1"}) == ENABLED
    assert await config(api, params={"site": "example.com"}) == ENABLED
    # A subdomain of the domain is only allowed through allowed_origins.
    assert await config(api, headers={"Origin": "https://blog.example.com"}) == DISABLED
    # ?site= is checked against the page asking (Origin, else Referer).
    ok = {"site": "example.com"}
    assert await config(api, params=ok, headers={"Origin": "https://a.example.org"}) == ENABLED
    assert await config(api, params=ok, headers={"Origin": "https://shop.io"}) == ENABLED
    assert await config(api, params=ok, headers={"Origin": "https://evil.test"}) == DISABLED
    assert await config(api, params=ok, headers={"Referer": "https://evil.test/"}) == DISABLED
    assert await config(api, params=ok, headers={"Origin": "https://example.org"}) == DISABLED
    # Origin comes before Referer.
    both = {"Origin": "https://evil.test", "Referer": "https://example.com/"}
    assert await config(api, headers=both) == DISABLED


async def test_unknown_and_malformed_get_disabled(api: Api) -> None:
    await api.post(SITES, json={"domain": "example.com"})
    assert await config(api) == DISABLED
    assert await config(api, headers={"Origin": "https://unknown.test"}) == DISABLED
    assert await config(api, params={"site": "unknown.test"}) == DISABLED
    for origin in ("null", "not a url", "https://[::1]", "http://", "https://exa mple.com"):
        assert await config(api, headers={"Origin": origin}) == DISABLED, origin
    assert await config(api, params={"site": "x" * 300}) == DISABLED


async def test_settings_and_changes_show_at_once(api: Api) -> None:
    site = (await api.post(SITES, json={"domain": "example.com"})).json["data"]
    origin = {"Origin": "https://example.com"}
    assert (await config(api, headers=origin))["enabled"] is True  # cached now
    await api.patch(
        f"{SITES}/{site['id']}",
        json={"features": {"events": False}, "sample_rate": 0.5, "excluded_paths": ["/admin"]},
    )
    assert await config(api, headers=origin) == {
        **ENABLED,
        "features": {"pageviews": True, "events": False, "sessions": True},
        "sample_rate": 0.5,
    }
    await api.patch(f"{SITES}/{site['id']}", json={"enabled": False})
    assert await config(api, headers=origin) == DISABLED
    await api.patch(f"{SITES}/{site['id']}", json={"enabled": True, "domain": "example.net"})
    assert await config(api, headers=origin) == DISABLED
    assert (await config(api, params={"site": "example.net"}))["enabled"] is True
    await api.delete(f"{SITES}/{site['id']}")
    assert await config(api, params={"site": "example.net"}) == DISABLED
    # An unknown host answered (and cached) as disabled is enabled once registered.
    assert await config(api, params={"site": "later.com"}) == DISABLED
    await api.post(SITES, json={"domain": "later.com"})
    assert (await config(api, params={"site": "later.com"}))["enabled"] is True


async def test_preflight(api: Api) -> None:
    result = await api.request("OPTIONS", CONFIG, auth=False)
    assert result.status == 204
    assert result.header("Access-Control-Allow-Origin") == "*"
    assert "GET" in (result.header("Access-Control-Allow-Methods") or "")


async def test_per_ip_limit_applies(api: Api) -> None:
    result = await api.get(CONFIG, auth=False, headers={"Origin": "https://example.com"})
    assert result.header("X-RateLimit-Limit") == "300"


async def test_change_reaches_another_process_cache(
    api: Api, settings: Settings, clock: ManualClock
) -> None:
    """A second runtime on the same host (another worker) drops its cached site."""
    site = (await api.post(SITES, json={"domain": "example.com"})).json["data"]
    async with serving(settings, clock) as (other, _):
        assert (await other.pixel_sites.for_host("example.com")) is not None
        assert (await other.pixel_sites.for_host("new.example")) is None
        await api.patch(f"{SITES}/{site['id']}", json={"enabled": False})
        found = await other.pixel_sites.for_host("www.example.com")
        assert found is not None and found.enabled is False
        await api.post(SITES, json={"domain": "new.example"})
        assert (await other.pixel_sites.for_host("new.example")) is not None


async def test_subdomains_through_a_parent_site(api: Api, runtime: Runtime) -> None:
    parent = await api.post(
        SITES, json={"domain": "example.com", "allowed_origins": ["*.example.com"]}
    )
    assert parent.status == 201
    for origin in (
        "https://blog.example.com",
        "https://a.b.example.com",
        "https://www.example.com",
    ):
        assert (await config(api, headers={"Origin": origin}))["enabled"] is True, origin
    own = (await api.post(SITES, json={"domain": "blog.example.com", "enabled": False})).json
    # A site registered for the subdomain itself takes precedence (here: disabled).
    assert await config(api, headers={"Origin": "https://blog.example.com"}) == DISABLED
    found = await runtime.pixel_sites.for_host("BLOG.example.com.")
    assert found is not None and found.id == own["data"]["id"]
    assert await runtime.pixel_sites.for_host("example.org") is None
    assert await runtime.pixel_sites.for_host("") is None


async def test_one_query_per_host_under_concurrency(api: Api, runtime: Runtime) -> None:
    await api.post(SITES, json={"domain": "example.com"})
    directory = runtime.pixel_sites
    directory.clear()
    misses = directory.misses
    found = await asyncio.gather(*(directory.for_host("example.com") for _ in range(20)))
    assert all(site is not None and site.domain == "example.com" for site in found)
    assert directory.misses - misses == 1
    assert await directory.for_host("example.com") is found[0]  # cached
