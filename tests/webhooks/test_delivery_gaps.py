"""Three points of issue 9 the other delivery tests leave open, on SQLite and PostgreSQL
against real loopback receivers: the deliveries list pages (meta, links, the ``status``
filter and the sorts, no delivery repeated or missing), a receiver timeout and a
connection error each leave a delivery ``retrying`` with the attempt recorded and the next
one scheduled, and an internal address refused at delivery time is a recorded attempt
that sent nothing."""

# ruff: noqa: F811 - the fixtures imported from hooks are redefined as test arguments

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hooks import (  # noqa: F401 - fixtures
    HOOKS,
    Receiver,
    Reply,
    Worker,
    deliveries,
    emit,
    endpoint,
    eventually,
    receiver,
    settings,
    worker,
)

from conftest import Api
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from core_api.webhooks.transport import is_blocked_address
from support import free_port


def seconds_after(clock_ms: int, stamp: str) -> float:
    """How long after ``clock_ms`` the API timestamp ``stamp`` (whole seconds) is."""
    at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return at.timestamp() - clock_ms / 1000


async def walk(
    api: Api, hook_id: int, per_page: int, total: int, **params: str
) -> list[dict[str, Any]]:
    """Every page of one endpoint's deliveries, following ``links.next`` from page 1:
    each page's ``meta`` and size as documented for ``total`` rows; the rows in order."""
    last_page = max(1, -(-total // per_page))
    path = f"{HOOKS}/{hook_id}/deliveries"
    query: dict[str, str] | None = {"per_page": str(per_page), **params}
    rows: list[dict[str, Any]] = []
    page = 0
    while query is not None:
        page += 1
        got = await api.get(path, params=query)
        assert got.status == 200, got.json
        size = min(per_page, total - (page - 1) * per_page)
        first = (page - 1) * per_page + 1
        assert got.json["meta"] == {
            "current_page": page,
            "from": first if size else None,
            "last_page": last_page,
            "per_page": per_page,
            "to": first + size - 1 if size else None,
            "total": total,
        }, (params, page)
        assert len(got.json["data"]) == size
        rows += got.json["data"]
        following = got.json["links"]["next"]
        if following is None:
            query = None
            continue
        link = urlsplit(following)  # absolute, keeping the other parameters
        assert link.path == path
        query = dict(parse_qsl(link.query))
        assert query == {"per_page": str(per_page), **params, "page": str(page + 1)}
    assert page == last_page
    # One page past the end: empty, the same exact total.
    past = await api.get(path, params={"per_page": str(per_page), **params, "page": str(page + 1)})
    assert past.status == 200 and past.json["data"] == []
    assert past.json["meta"]["total"] == total and past.json["meta"]["from"] is None
    return rows


async def test_deliveries_list_pages_with_meta_and_status_filter(
    api: Api, runtime: Runtime, receiver: Receiver, worker: Worker
) -> None:
    """14 deliveries of one endpoint, 7 ``success``, 4 ``retrying``, 3 ``pending`` (all
    created in the same millisecond: the sorts' tie-breaker keeps pages stable), beside
    another endpoint's 14: each walk over the pages returns exactly the endpoint's
    matching deliveries, each once, in order, with exact meta."""
    failing = {1, 4, 7, 10}  # of the first 11 events, answered 500 (then retried later)
    url = receiver.script(
        "/paged", *(Reply(500, "no") if n in failing else Reply(200) for n in range(11))
    )
    hook = await endpoint(api, url)
    other = await endpoint(api, receiver.url("/other"))
    sent = [await emit(api, n=n) for n in range(11)]
    worker.start()

    async def settled() -> bool:
        mine = [d["status"] for d in await deliveries(api, hook["id"])]
        theirs = [d["status"] for d in await deliveries(api, other["id"])]
        return sorted(mine) == ["retrying"] * 4 + ["success"] * 7 and theirs == ["success"] * 11

    await eventually(settled)
    await worker.stop()  # what is published now stays pending
    sent += [await emit(api, n=n) for n in range(11, 14)]

    rows = await runtime.db.fetch_all(
        "SELECT id FROM webhook_deliveries WHERE endpoint_id = ?", (hook["id"],)
    )
    ids = sorted(r["id"] for r in rows)  # the truth, read past the API
    assert len(ids) == 14
    by_status = {
        "success": [e for n, e in enumerate(sent) if n < 11 and n not in failing],
        "retrying": [e for n, e in enumerate(sent) if n in failing],
        "pending": sent[11:],
        "failed": [],
    }

    newest_first = await walk(api, hook["id"], 4, 14)  # 4 + 4 + 4 + 2
    assert [d["id"] for d in newest_first] == ids[::-1]
    assert [d["event_id"] for d in newest_first] == sent[::-1]
    oldest_first = await walk(api, hook["id"], 4, 14, sort="created_at")
    assert [d["id"] for d in oldest_first] == ids
    by_id = await walk(api, hook["id"], 5, 14, sort="id")  # 5 + 5 + 4
    assert [d["id"] for d in by_id] == ids

    for status, events in by_status.items():
        for per_page in (1, 3):
            found = await walk(api, hook["id"], per_page, len(events), status=status)
            assert [d["event_id"] for d in found] == events[::-1], (status, per_page)
            assert {d["status"] for d in found} <= {status}
            assert {d["id"] for d in found} <= set(ids)  # never the other endpoint's
    retrying = await walk(api, hook["id"], 3, 4, status="retrying", sort="created_at")
    assert [d["event_id"] for d in retrying] == by_status["retrying"]
    assert all(d["response_code"] == 500 and d["attempt"] == 1 for d in retrying)


@pytest.mark.parametrize("trouble", ["timeout", "connection refused"])
async def test_a_timeout_or_a_connection_error_is_retried_with_the_attempt_recorded(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock, trouble: str
) -> None:
    """No response (the receiver outlasts a 1 s timeout, or nothing listens on the port):
    the delivery is ``retrying``, its attempt recorded with the error and no status code,
    and the next attempt due on the schedule (5 s +-20 %), where it is indeed sent."""
    if trouble == "timeout":
        url = receiver.script("/slow", Reply(200, delay=2.5), Reply(200, "late but fine"))
    else:
        url = f"http://127.0.0.1:{free_port()}/closed"  # bound once, then released
    hook = await endpoint(api, url)
    event = await emit(api)
    started = clock.now_ms()
    worker.start(webhook_timeout_seconds=1)

    async def attempts_made(n: int) -> bool:
        rows = await deliveries(api, hook["id"])
        return len(rows) == 1 and rows[0]["attempt"] == n

    await eventually(lambda: attempts_made(1), within=4.0)
    [row] = await deliveries(api, hook["id"])
    assert row["event_id"] == event and row["status"] == "retrying"
    assert row["response_code"] is None and row["delivered_at"] is None
    assert 4 <= seconds_after(started, row["next_retry_at"]) <= 6
    detail = (await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")).json["data"]
    [attempt] = detail["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] is None and attempt["response_body"] is None
    if trouble == "timeout":
        assert attempt["error"] == "timeout: no complete response within 1s"
        assert 900 <= attempt["duration_ms"] < 2500
        assert len(receiver.on("/slow")) == 1
    else:
        assert attempt["error"].startswith("connect: "), attempt["error"]
        assert attempt["duration_ms"] < 1000
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert (item["success_count"], item["failure_count"], item["consecutive_failures"]) == (
        0,
        1,
        1,
    )
    assert item["is_active"] is True

    clock.advance(6.001)  # past the latest the retry could be due
    await eventually(lambda: attempts_made(2), within=4.0)
    [row] = await deliveries(api, hook["id"])
    detail = (await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")).json["data"]
    if trouble == "timeout":  # the receiver answers in time now
        assert row["status"] == "success" and row["response_code"] == 200
        assert [(a["status_code"], a["response_body"]) for a in detail["attempts"]] == [
            (None, None),
            (200, "late but fine"),
        ]
    else:  # still nobody there: retried again, on the schedule's second step (300 s)
        assert row["status"] == "retrying" and row["response_code"] is None
        assert [a["status_code"] for a in detail["attempts"]] == [None, None]
        assert detail["attempts"][1]["error"].startswith("connect: ")
        assert 6 + 240 <= seconds_after(started, row["next_retry_at"]) <= 6 + 360


def _loopback_name() -> str | None:
    """This machine's host name when it resolves to an internal address only (as ``vm`` ->
    127.0.0.1 in /etc/hosts), else None."""
    name = socket.gethostname()
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return None
    return name if addresses and all(is_blocked_address(a) for a in addresses) else None


@pytest.mark.parametrize("target", ["name resolving to loopback", "loopback address"])
async def test_an_internal_address_at_delivery_is_a_refused_attempt_that_sent_nothing(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock, target: str
) -> None:
    """The endpoint was accepted while private networks were allowed; the worker then runs
    with the guard on (``CORE_API_WEBHOOK_ALLOW_PRIVATE_NETWORKS`` off, as in production),
    so the same URL is refused at delivery: a failed attempt with the refusal as its
    error, nothing sent, and, as docs/webhooks.md says ("Anything else is retried: ... a
    refused (private) address"), the delivery ``retrying``. With the guard off again the
    retry reaches the receiver: only the guard stopped the first attempt."""
    if target == "loopback address":
        host = "127.0.0.1"
        refusal = (
            "blocked: must not point to a private, loopback, link-local or other internal address"
        )
    else:
        name = _loopback_name()
        if name is None:
            pytest.skip(f"{socket.gethostname()} does not resolve to loopback only")
        host = name
        refusal = f"blocked: {host} resolves to an internal address"
    hook = await endpoint(api, receiver.url("/ssrf", host=host))
    started = clock.now_ms()
    await emit(api)
    worker.start(webhook_allow_private_networks=False)

    async def attempted() -> bool:
        return [d["attempt"] for d in await deliveries(api, hook["id"])] == [1]

    await eventually(attempted, within=4.0)
    [row] = await deliveries(api, hook["id"])
    assert row["status"] == "retrying" and row["response_code"] is None
    assert 4 <= seconds_after(started, row["next_retry_at"]) <= 6
    detail = (await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")).json["data"]
    [attempt] = detail["attempts"]
    assert attempt["status_code"] is None and attempt["response_body"] is None
    assert attempt["error"] == refusal
    assert receiver.hits == []
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert (item["failure_count"], item["consecutive_failures"], item["is_active"]) == (
        1,
        1,
        True,
    )

    await worker.stop()
    worker.start()  # private networks allowed again (the test settings)
    clock.advance(6.001)
    await eventually(lambda: len(receiver.on("/ssrf")) == 1, within=4.0)

    async def delivered() -> bool:
        return [d["status"] for d in await deliveries(api, hook["id"])] == ["success"]

    await eventually(delivered, within=4.0)
