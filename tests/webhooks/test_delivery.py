"""Delivery against real loopback receivers, on SQLite and PostgreSQL: signatures the
reference library verifies (both during a rotation), wildcard matching, retries with the
statuses recorded in order, 410 and the consecutive-failure rule (manual clock), manual
retry and cannot_retry, the test endpoint's bodies, slow-receiver isolation, per-endpoint
order, exact counters and the retention purge."""

# ruff: noqa: F811 - the fixtures imported from hooks are redefined as test arguments

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
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
    statuses,
    worker,
)
from standardwebhooks.webhooks import Webhook

from conftest import Api
from core_api.clock import ManualClock
from core_api.events import publish
from core_api.runtime import Runtime
from core_api.webhooks.delivery import retry_delay
from core_api.webhooks.jobs import purge


async def test_delivered_signed_and_verified_by_the_reference_library(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    hook = await endpoint(api, receiver.url("/hook"), ["post.created"])
    event_id = await emit(api, "post.created", title="café")
    worker.start()
    await eventually(lambda: len(receiver.on("/hook")) == 1)
    hit = receiver.on("/hook")[0]
    payload = Webhook(hook["secret"]).verify(hit.body, hit.headers)
    assert payload["id"] == event_id == hit.headers["webhook-id"]
    assert payload["type"] == "post.created" and payload["data"] == {"title": "café"}
    assert payload["workspace_id"] > 0 and payload["timestamp"].endswith("Z")
    assert hit.headers["Content-Type"] == "application/json"

    async def settled() -> bool:
        return await statuses(api, hook["id"]) == ["success"]

    await eventually(settled)
    [row] = await deliveries(api, hook["id"])
    assert row["response_code"] == 200 and row["attempt"] == 1 and row["delivered_at"]
    detail = await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")
    [attempt] = detail.json["data"]["attempts"]
    assert attempt["status_code"] == 200 and attempt["response_body"] == '{"received": true}'
    assert attempt["error"] is None and attempt["duration_ms"] >= 0
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert item["success_count"] == 1 and item["failure_count"] == 0
    assert item["last_delivery_at"] is not None


async def test_wildcards_route_each_event_to_matching_endpoints_only(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    await endpoint(api, receiver.url("/exact"), ["post.created"])
    await endpoint(api, receiver.url("/prefix"), ["post.*"])
    await endpoint(api, receiver.url("/all"), ["*"])
    await endpoint(api, receiver.url("/users"), ["user.created", "user.deleted"])
    for event_type in ("post.created", "post.comment.added", "user.deleted", "postal.sent"):
        await emit(api, event_type)
    worker.start()
    await eventually(lambda: len(receiver.hits) == 1 + 2 + 4 + 1)

    def types(path: str) -> list[str]:
        return [orjson.loads(h.body)["type"] for h in receiver.on(path)]

    assert types("/exact") == ["post.created"]
    assert types("/prefix") == ["post.created", "post.comment.added"]
    assert types("/all") == ["post.created", "post.comment.added", "user.deleted", "postal.sent"]
    assert types("/users") == ["user.deleted"]


async def test_both_signatures_verify_during_a_rotation(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock
) -> None:
    hook = await endpoint(api, receiver.url("/rot"))
    rotated = await api.post(f"{HOOKS}/{hook['id']}/secret/rotate", json={"grace_period_hours": 1})
    new_secret = rotated.json["data"]["secret"]
    await emit(api)
    worker.start()
    await eventually(lambda: len(receiver.hits) == 1)
    hit = receiver.hits[0]
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    Webhook(hook["secret"]).verify(hit.body, hit.headers)
    Webhook(new_secret).verify(hit.body, hit.headers)
    # After the grace period only the new secret signs.
    clock.advance(3601)
    await emit(api)
    await eventually(lambda: len(receiver.hits) == 2)
    late = receiver.hits[1]
    assert len(late.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(late.body, late.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(hook["secret"]).verify(late.body, late.headers)


async def test_500_twice_then_200_is_three_attempts_in_order(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock
) -> None:
    url = receiver.script("/flaky", Reply(500, "boom"), Reply(503, "busy"), Reply(200, "ok"))
    hook = await endpoint(api, url)
    await emit(api)
    worker.start()
    await eventually(lambda: len(receiver.hits) == 1)

    async def status_is(wanted: str) -> bool:
        return await statuses(api, hook["id"]) == [wanted]

    await eventually(lambda: status_is("retrying"))
    [row] = await deliveries(api, hook["id"])
    assert row["attempt"] == 1 and row["response_code"] == 500 and row["next_retry_at"]
    clock.advance(5 * 1.2 + 1)  # the first retry is 5 s +-20 %
    await eventually(lambda: len(receiver.hits) == 2)
    await eventually(lambda: status_is("retrying"))
    clock.advance(300 * 1.2 + 1)
    await eventually(lambda: len(receiver.hits) == 3)
    await eventually(lambda: status_is("success"))
    [row] = await deliveries(api, hook["id"])
    detail = (await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")).json["data"]
    assert [(a["attempt"], a["status_code"], a["response_body"]) for a in detail["attempts"]] == [
        (1, 500, "boom"),
        (2, 503, "busy"),
        (3, 200, "ok"),
    ]
    assert detail["attempt"] == 3 and detail["response_code"] == 200
    ids = {h.headers["webhook-id"] for h in receiver.hits}
    assert len(ids) == 1  # one message id across its retries
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert (item["success_count"], item["failure_count"], item["consecutive_failures"]) == (
        1,
        2,
        0,
    )


def test_retry_schedule_jitter_and_retry_after_cap() -> None:
    schedule = (5, 300, 1800)
    assert retry_delay(schedule, 1, None, 3600, lambda: 0.0) == pytest.approx(4.0)
    assert retry_delay(schedule, 1, None, 3600, lambda: 1.0) == pytest.approx(6.0)
    assert retry_delay(schedule, 3, None, 3600, lambda: 0.5) == pytest.approx(1800)
    assert retry_delay(schedule, 4, None, 3600, lambda: 0.5) is None
    # Retry-After asks for longer: honoured, up to the cap; shorter: the schedule wins.
    assert retry_delay(schedule, 1, 120.0, 3600, lambda: 0.5) == 120.0
    assert retry_delay(schedule, 1, 99_999.0, 3600, lambda: 0.5) == 3600.0
    assert retry_delay(schedule, 2, 1.0, 3600, lambda: 0.5) == pytest.approx(300)


async def test_retry_after_is_honoured(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock
) -> None:
    url = receiver.script("/busy", Reply(429, headers={"Retry-After": "600"}), Reply(200))
    hook = await endpoint(api, url)
    await emit(api)
    worker.start()

    async def retrying() -> bool:
        return await statuses(api, hook["id"]) == ["retrying"]

    await eventually(retrying)
    [row] = await deliveries(api, hook["id"])
    assert row["next_retry_at"] == "2026-01-01T00:10:00Z"
    clock.advance(300)
    await asyncio.sleep(0.6)
    assert len(receiver.hits) == 1  # not before Retry-After
    clock.advance(301)
    await eventually(lambda: len(receiver.hits) == 2)


async def test_schedule_spent_is_failed(
    api: Api, receiver: Receiver, worker: Worker, runtime: Runtime
) -> None:
    url = receiver.script("/down", Reply(500))
    hook = await endpoint(api, url)
    await emit(api)
    worker.start(webhook_retry_schedule=(0, 0))

    async def failed() -> bool:
        return await statuses(api, hook["id"]) == ["failed"]

    await eventually(failed)
    assert len(receiver.hits) == 3
    [row] = await deliveries(api, hook["id"], status="failed")
    assert row["attempt"] == 3 and row["next_retry_at"] is None


async def test_a_response_body_with_nul_characters_is_recorded(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    hook = await endpoint(api, receiver.script("/nul", Reply(200, "ok\x00then\x00")))
    await emit(api)
    await emit(api)
    worker.start()

    async def both_done() -> bool:
        return await statuses(api, hook["id"]) == ["success", "success"]

    await eventually(both_done)
    row = (await deliveries(api, hook["id"]))[0]
    detail = (await api.get(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}")).json["data"]
    assert detail["attempts"][0]["response_body"] == "ok\ufffdthen\ufffd"


async def test_410_disables_the_endpoint_and_announces_it(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    gone = await endpoint(api, receiver.script("/gone", Reply(410, "bye")), ["post.*"])
    watcher = await endpoint(api, receiver.url("/watch"), ["webhook.endpoint.disabled"])
    for n in range(3):
        await emit(api, n=n)
    worker.start()

    async def disabled() -> bool:
        got = await api.get(f"{HOOKS}/{gone['id']}")
        return got.json["data"]["is_active"] is False

    await eventually(disabled)
    item = (await api.get(f"{HOOKS}/{gone['id']}")).json["data"]
    assert item["disabled_reason"] == "The endpoint answered 410 Gone."
    await eventually(lambda: len(receiver.on("/watch")) == 1)
    note = orjson.loads(receiver.on("/watch")[0].body)
    assert note["type"] == "webhook.endpoint.disabled"
    assert note["data"]["endpoint"]["id"] == gone["id"]
    assert len(receiver.on("/gone")) == 1  # nothing more was sent to it

    async def all_failed() -> bool:
        return await statuses(api, gone["id"]) == ["failed"] * 3

    await eventually(all_failed)
    assert watcher["id"] != gone["id"]
    # A disabled endpoint gets no new deliveries; a manual retry says why it cannot.
    await emit(api)
    assert len(await deliveries(api, gone["id"])) == 3
    first = (await deliveries(api, gone["id"]))[-1]
    refused = await api.post(f"{HOOKS}/{gone['id']}/deliveries/{first['id']}/retry")
    assert refused.status == 400 and refused.json["error"] == "cannot_retry"


async def test_disabling_by_patch_fails_what_is_queued(api: Api, receiver: Receiver) -> None:
    hook = await endpoint(api, receiver.url("/paused"))
    await emit(api)
    await emit(api)
    assert await statuses(api, hook["id"]) == ["pending", "pending"]
    await api.patch(f"{HOOKS}/{hook['id']}", json={"is_active": False})
    assert await statuses(api, hook["id"]) == ["failed", "failed"]
    await emit(api)  # nothing new is queued for it
    assert len(await deliveries(api, hook["id"])) == 2
    # Re-enabled, a failed delivery can be retried by hand.
    await api.patch(f"{HOOKS}/{hook['id']}", json={"is_active": True})
    first = (await deliveries(api, hook["id"]))[-1]
    retried = await api.post(f"{HOOKS}/{hook['id']}/deliveries/{first['id']}/retry")
    assert retried.status == 200 and retried.json["data"]["attempt"] == 1


async def test_consecutive_failures_over_hours_disable_with_an_injected_clock(
    api: Api, receiver: Receiver, worker: Worker, clock: ManualClock
) -> None:
    hook = await endpoint(api, receiver.script("/dead", Reply(500)))
    await emit(api)
    worker.start(
        webhook_disable_after_failures=3,
        webhook_disable_after_hours=24,
        webhook_retry_schedule=(43_200, 43_200, 43_200, 43_200),
    )

    async def attempts_recorded(n: int) -> bool:
        [row] = await deliveries(api, hook["id"])
        return bool(row["attempt"] == n)

    await eventually(lambda: attempts_recorded(1))
    clock.advance(15 * 3600)  # 12 h +-20 % later: attempt 2
    await eventually(lambda: attempts_recorded(2))
    assert (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]["is_active"] is True
    clock.advance(15 * 3600)  # attempt 3: three failures over 30 h
    await eventually(lambda: attempts_recorded(3))
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert item["is_active"] is False and item["consecutive_failures"] == 3
    assert "3 consecutive failed attempts" in item["disabled_reason"]
    assert await statuses(api, hook["id"]) == ["failed"]
    # Re-enabling starts afresh.
    again = await api.patch(f"{HOOKS}/{hook['id']}", json={"is_active": True})
    assert again.json["data"]["consecutive_failures"] == 0
    assert again.json["data"]["disabled_reason"] is None


async def test_many_fast_failures_do_not_disable_before_the_hours(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    hook = await endpoint(api, receiver.script("/blip", Reply(500)))
    for _ in range(5):
        await emit(api)
    worker.start(webhook_disable_after_failures=3, webhook_retry_schedule=(0,))
    await eventually(lambda: len(receiver.hits) == 10)

    async def settled() -> bool:
        return await statuses(api, hook["id"]) == ["failed"] * 5

    await eventually(settled)
    item = (await api.get(f"{HOOKS}/{hook['id']}")).json["data"]
    assert item["is_active"] is True and item["consecutive_failures"] == 10


async def test_manual_retry_and_cannot_retry(
    api: Api, receiver: Receiver, worker: Worker, runtime: Runtime
) -> None:
    url = receiver.script("/later", Reply(500), Reply(200))
    hook = await endpoint(api, url)
    await emit(api)
    worker.start(webhook_retry_schedule=())  # one attempt, then failed

    async def status_is(wanted: str) -> bool:
        return await statuses(api, hook["id"]) == [wanted]

    await eventually(lambda: status_is("failed"))
    [row] = await deliveries(api, hook["id"])
    retried = await api.post(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}/retry")
    assert retried.status == 200, retried.json
    assert retried.json == {
        "message": "Delivery queued for retry.",
        "data": {"id": row["id"], "status": "pending", "attempt": 2},
    }
    await eventually(lambda: status_is("success"))
    done = await api.post(f"{HOOKS}/{hook['id']}/deliveries/{row['id']}/retry")
    assert done.status == 400
    assert done.json == {"error": "cannot_retry", "message": "Delivery already succeeded."}
    assert (await api.post(f"{HOOKS}/{hook['id']}/deliveries/999999/retry")).status == 404

    # The manual cap: five manual retries per delivery, then "max retries reached".
    receiver.script("/later", Reply(500))
    await emit(api)

    async def second_failed() -> bool:
        return len(await deliveries(api, hook["id"], status="failed")) == 1

    await eventually(second_failed)
    failed = (await deliveries(api, hook["id"], status="failed"))[0]
    for n in range(5):

        async def failed_again(want: int = n + 2) -> bool:
            rows = await deliveries(api, hook["id"], status="failed")
            return any(r["id"] == failed["id"] and r["attempt"] == want for r in rows)

        ok = await api.post(f"{HOOKS}/{hook['id']}/deliveries/{failed['id']}/retry")
        assert ok.status == 200, (n, ok.json)
        await eventually(failed_again)
    capped = await api.post(f"{HOOKS}/{hook['id']}/deliveries/{failed['id']}/retry")
    assert capped.status == 400 and capped.json["error"] == "cannot_retry"
    assert "Max retries reached" in capped.json["message"]


async def test_test_endpoint_success_and_failure_bodies(api: Api, receiver: Receiver) -> None:
    good = await endpoint(api, receiver.script("/good", Reply(200, '{"received": true}')))
    result = await api.post(f"{HOOKS}/{good['id']}/test")
    assert result.status == 200
    assert set(result.json) == {"success", "status_code", "response_time_ms", "response_body"}
    assert result.json["success"] is True and result.json["status_code"] == 200
    assert result.json["response_body"] == '{"received": true}'
    assert isinstance(result.json["response_time_ms"], int)
    hit = receiver.on("/good")[0]
    payload = Webhook(good["secret"]).verify(hit.body, hit.headers)
    assert payload["type"] == "webhook.test"

    bad = await endpoint(api, receiver.script("/bad", Reply(500, "kaput")))
    failed = await api.post(f"{HOOKS}/{bad['id']}/test")
    assert failed.status == 200
    assert failed.json["success"] is False and failed.json["status_code"] == 500
    assert failed.json["error"] == "HTTP 500" and failed.json["response_body"] == "kaput"
    assert isinstance(failed.json["response_time_ms"], int)

    refused = await endpoint(api, "http://127.0.0.1:9/closed")
    down = await api.post(f"{HOOKS}/{refused['id']}/test")
    assert down.json["success"] is False and down.json["status_code"] is None
    assert down.json["error"]
    assert set(down.json) == {"success", "status_code", "error", "response_time_ms"}
    # A test send is not a delivery: nothing is queued or counted.
    assert await deliveries(api, good["id"]) == []
    assert (await api.get(f"{HOOKS}/{good['id']}")).json["data"]["success_count"] == 0


async def test_a_20_second_receiver_does_not_slow_a_fast_one(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    slow = await endpoint(api, receiver.script("/slow", Reply(200, delay=20.0)), ["post.*"])
    fast = await endpoint(api, receiver.url("/fast"), ["post.*"])
    for n in range(40):
        await emit(api, n=n)
    started = time.monotonic()
    worker.start(webhook_timeout_seconds=25)
    await eventually(lambda: len(receiver.on("/fast")) == 40, within=5.0)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed
    assert len(receiver.on("/slow")) == 1  # still holding its first request

    async def fast_done() -> bool:
        return await statuses(api, fast["id"]) == ["success"] * 40

    await eventually(fast_done, within=5.0)
    assert "success" not in await statuses(api, slow["id"])


async def test_global_and_per_endpoint_bounds_hold(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    paths = [f"/b{n}" for n in range(6)]
    for path in paths:
        await endpoint(api, receiver.script(path, Reply(200, delay=0.15)))
    for n in range(8):
        await emit(api, n=n)
    worker.start(webhook_max_in_flight=4, webhook_endpoint_concurrency=2)
    await eventually(lambda: len(receiver.hits) == 48, within=30.0)
    assert receiver.peak[""] == 4  # the global bound, reached and never passed
    assert all(receiver.peak[p] <= 2 for p in paths)
    assert any(receiver.peak[p] == 2 for p in paths)


async def test_one_endpoint_receives_in_creation_order(
    api: Api, receiver: Receiver, worker: Worker
) -> None:
    await endpoint(api, receiver.url("/ordered"))
    sent = [await emit(api, n=n) for n in range(60)]
    worker.start()
    await eventually(lambda: len(receiver.on("/ordered")) == 60)
    assert [h.headers["webhook-id"] for h in receiver.on("/ordered")] == sent


async def test_counters_are_exact(api: Api, receiver: Receiver, worker: Worker) -> None:
    hooks = [await endpoint(api, receiver.url(f"/c{n}")) for n in range(4)]
    receiver.script("/c3", Reply(500))
    for n in range(50):
        await emit(api, n=n)
    worker.start(webhook_retry_schedule=(), webhook_endpoint_concurrency=4)
    await eventually(lambda: len(receiver.hits) == 200)

    async def settled() -> bool:
        items = [(await api.get(f"{HOOKS}/{h['id']}")).json["data"] for h in hooks]
        return all(i["success_count"] + i["failure_count"] == 50 for i in items)

    await eventually(settled)
    items = [(await api.get(f"{HOOKS}/{h['id']}")).json["data"] for h in hooks]
    assert [(i["success_count"], i["failure_count"]) for i in items] == [
        (50, 0),
        (50, 0),
        (50, 0),
        (0, 50),
    ]
    assert items[3]["consecutive_failures"] == 50


async def test_publish_inside_the_callers_transaction(
    api: Api, runtime: Runtime, receiver: Receiver, worker: Worker, boot: dict[str, Any]
) -> None:
    await endpoint(api, receiver.url("/tx"))
    workspace_id = boot["workspace"]["id"]
    with pytest.raises(RuntimeError):
        async with runtime.db.transaction() as tx:
            await publish(tx, workspace_id=workspace_id, type="thing.made", data={}, now=1)
            raise RuntimeError("the change failed")  # the event rolls back with it
    async with runtime.db.transaction() as tx:
        event = await publish(
            tx, workspace_id=workspace_id, type="thing.made", data={"ok": True}, now=2
        )
    runtime.events.notify()
    assert event.deliveries == 1 and event.id.startswith("evt_")
    worker.start()
    await eventually(lambda: len(receiver.hits) == 1)
    await asyncio.sleep(0.3)
    assert [orjson.loads(h.body)["id"] for h in receiver.hits] == [event.id]


async def test_retention_purges_old_settled_events_and_deliveries(
    api: Api, runtime: Runtime, clock: ManualClock, receiver: Receiver
) -> None:
    hook = await endpoint(api, receiver.url("/old"))
    settled = await emit(api)
    queued = await emit(api)
    clock.advance(31 * 86_400)
    recent = await emit(api)
    await runtime.db.execute(
        "UPDATE webhook_deliveries SET status = 'success' WHERE event_id = "
        "(SELECT id FROM events WHERE public_id = ?)",
        (settled,),
    )
    result = await purge(runtime)
    assert result is not None and "purged 1 event" in result
    left = [d["event_id"] for d in await deliveries(api, hook["id"])]
    assert sorted(left) == sorted([queued, recent])  # still queued: kept, however old
    rows = await runtime.db.fetch_all("SELECT public_id FROM events ORDER BY id")
    assert [r["public_id"] for r in rows] == [queued, recent]
    attempts = await runtime.db.fetch_one("SELECT COUNT(*) AS n FROM webhook_attempts")
    assert attempts is not None and attempts["n"] == 0


async def test_workspace_deleted_reaches_its_own_endpoints_which_then_go(
    api: Api, runtime: Runtime, receiver: Receiver, worker: Worker
) -> None:
    created = await api.post("/api/v1/workspaces", json={"name": "Short-lived"})
    assert created.status == 201, created.json
    workspace_id = created.json["data"]["id"]
    acting = {"X-Workspace-ID": str(workspace_id)}
    hook = await api.post(
        HOOKS,
        json={"url": receiver.url("/bye"), "events": ["workspace.*"]},
        headers=acting,
    )
    assert hook.status == 201, hook.json
    assert (await api.delete(f"/api/v1/workspaces/{workspace_id}")).status == 204
    worker.start()
    await eventually(lambda: len(receiver.on("/bye")) == 1)
    event = Webhook(hook.json["data"]["secret"]).verify(
        receiver.on("/bye")[0].body, receiver.on("/bye")[0].headers
    )
    assert event["type"] == "workspace.deleted" and event["workspace_id"] == workspace_id

    async def settled() -> bool:
        row = await runtime.db.fetch_one(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'success'"
        )
        return row is not None and row["n"] == 1

    await eventually(settled)
    await purge(runtime)
    left = await runtime.db.fetch_one(
        "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE workspace_id = ?", (workspace_id,)
    )
    assert left is not None and left["n"] == 0


async def test_a_stop_gives_back_leases_its_claim_never_read_back(
    api: Api, runtime: Runtime, receiver: Receiver
) -> None:
    """A claim cancelled by the stop after its UPDATE ran leaves rows leased to the holder
    that were never loaded into memory: the stop must give those back too."""
    from core_api.webhooks.delivery import Dispatcher
    from core_api.webhooks.secrets import SecretBox

    await endpoint(api, receiver.url("/lost"))
    await emit(api, n=1)
    settings = runtime.settings
    dispatcher = Dispatcher(
        runtime.db, runtime.clock, settings, runtime.events, SecretBox(settings.secret_key)
    )
    far = runtime.clock.now_ms() + 3_600_000
    leased = await runtime.db.execute(
        "UPDATE webhook_deliveries SET locked_by = ?, locked_until = ?", (dispatcher.holder, far)
    )
    assert leased == 1
    await dispatcher._shutdown()  # nothing held in memory, one row leased in the database
    rows = await runtime.db.fetch_all("SELECT locked_by, locked_until FROM webhook_deliveries")
    assert rows == [{"locked_by": None, "locked_until": None}]


async def test_the_worker_is_woken_only_when_a_publish_queued_a_delivery(
    api: Api, runtime: Runtime, receiver: Receiver, boot: dict[str, Any]
) -> None:
    """Most writes publish an event no endpoint takes (nothing is written): waking the
    delivery worker for them cost a claim query per write. A publish that queued a
    delivery wakes it; ``wake`` (manual retries, handed-back deliveries) always does."""
    workspace_id = boot["workspace"]["id"]
    notifier = runtime.events
    notifier.notify()  # whatever earlier publishes queued is seen

    async def woken(after: Any) -> bool:
        waiter = asyncio.create_task(notifier.wait(5.0))
        await asyncio.sleep(0.05)  # the waiter made its event and waits on it
        after()
        await asyncio.sleep(0.2)
        done = waiter.done()
        waiter.cancel()
        return done

    async with runtime.db.transaction() as tx:  # no endpoint yet: nothing is queued
        event = await publish(tx, workspace_id=workspace_id, type="thing.made", data={}, now=1)
    assert event.deliveries == 0
    assert not await woken(notifier.notify)
    assert await woken(notifier.wake)
    await endpoint(api, receiver.url("/wake"))
    async with runtime.db.transaction() as tx:
        event = await publish(tx, workspace_id=workspace_id, type="thing.made", data={}, now=2)
    assert event.deliveries == 1
    assert await woken(notifier.notify)
    assert not await woken(notifier.notify)  # seen once
