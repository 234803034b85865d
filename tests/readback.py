"""Read every stored workspace and API key back through the API.

Bad input must never leave behind something that later reads cannot present: each list
page and each item of the caller's workspaces, and of the keys in each of them, must be
a 200. The snapshot it returns lets a test show that a refused request changed nothing.
"""

from __future__ import annotations

from typing import Any

from conftest import Api

WS = "/api/v1/workspaces"
KEYS = "/api/v1/api-keys"
MAX_PAGES = 200


async def _all_pages(
    api: Api, path: str, headers: dict[str, str], include: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"page": str(page), "per_page": "100", "include": include}
        got = await api.get(path, params=params, headers=headers)
        assert got.status == 200, (path, page, headers, got.json)
        items += got.json["data"]
        if got.json["links"]["next"] is None:
            return items
    raise AssertionError(f"{path} has more than {MAX_PAGES} pages")


async def read_back(api: Api) -> dict[str, dict[int, Any]]:
    """``{"workspaces": {id: item}, "keys": {id: item}}`` as GET by id returns them."""
    snapshot: dict[str, dict[int, Any]] = {"workspaces": {}, "keys": {}}
    for workspace in await _all_pages(api, WS, {}, "owner,members"):
        got = await api.get(f"{WS}/{workspace['id']}")
        assert got.status == 200, (workspace["id"], got.json)
        snapshot["workspaces"][workspace["id"]] = got.json["data"]
        acting = {"X-Workspace-ID": str(workspace["id"])}
        for key in await _all_pages(api, KEYS, acting, "workspace,user"):
            got = await api.get(f"{KEYS}/{key['id']}", headers=acting)
            assert got.status == 200, (key["id"], got.json)
            snapshot["keys"][key["id"]] = got.json["data"]
    return snapshot
