"""SPEC §12 over real HTTP: queue limits in PATCH /queues and GET /queues, users' budgets and
caps, their usage, and GET /tasks/{id}/why with the caller's rights."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from pgqueue.queue import Queue
from tests.api.conftest import Api


async def test_queue_limits_over_http(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    body = {
        "rate_limit": {"tasks": 100, "per_s": 60},
        "per_user_concurrency": 2,
        "fair": True,
        "circuit_breaker": {"failures": 5, "cool_down_s": 30},
    }
    r = await admin.patch("/queues/llm", json=body)
    assert r.status_code == 200, r.text
    for key, value in body.items():
        assert r.json()[key] == value, key
    shown = {q["name"]: q for q in (await admin.get("/queues")).json()}["llm"]
    assert {k: shown[k] for k in body} == body
    assert shown["open_breakers"] == []

    r = await admin.patch("/queues/llm", json={"rate_limit": None, "fair": False})
    assert (r.json()["rate_limit"], r.json()["fair"], r.json()["per_user_concurrency"]) == (
        None,
        False,
        2,
    )
    assert (await alice.patch("/queues/llm", json={"fair": True})).status_code == 403
    for bad, field in [
        ({"rate_limit": {"tasks": 0, "per_s": 1}}, "rate_limit"),
        ({"rate_limit": {"tasks": 5}}, "rate_limit"),
        ({"rate_limit": {"tasks": 5, "per_s": 0}}, "rate_limit"),
        ({"per_user_concurrency": 0}, "per_user_concurrency"),
        ({"fair": "yes"}, "fair"),
        ({"circuit_breaker": {"failures": 3, "cool_down_s": -1}}, "circuit_breaker"),
        ({"circuit_breaker": {"failures": 3, "cool_down_s": 1, "x": 1}}, "circuit_breaker"),
    ]:
        r = await admin.patch("/queues/llm", json=bad)
        assert r.status_code == 400 and field in r.json()["detail"], (bad, r.text)


async def test_user_limits_and_usage(
    admin: httpx.AsyncClient,
    alice: httpx.AsyncClient,
    queue: Queue,
    conn: psycopg.AsyncConnection[Any],
) -> None:
    r = await admin.put("/users/alice/limits", json={"cost_per_day": 2.5, "max_running": 3})
    assert r.status_code == 200, r.text
    assert (r.json()["cost_per_day"], r.json()["cost_per_month"], r.json()["max_running"]) == (
        2.5,
        None,
        3,
    )
    mine = await alice.get("/users/alice/limits")
    assert mine.status_code == 200 and mine.json()["max_running"] == 3
    assert (await alice.get("/users/bob/limits")).status_code == 404  # not hers
    assert (await alice.get("/users/bob/usage")).status_code == 404
    assert (await alice.put("/users/alice/limits", json={})).status_code == 403
    for bad, field in [
        ({"cost_per_day": -1}, "cost_per_day"),
        ({"max_running": "many"}, "max_running"),
        ({"budget": 1}, "budget"),
    ]:
        r = await admin.put("/users/alice/limits", json=bad)
        assert r.status_code == 400 and field in r.json()["detail"], (bad, r.text)
    assert (await admin.put("/users/" + "x" * 300 + "/limits", json={})).status_code == 400

    task = await queue.enqueue("k", user_id="alice")
    await conn.execute("SELECT pgqueue.claim('w', '{default}', NULL, 1)")
    await conn.execute(
        "UPDATE pgqueue.tasks SET status = 'completed', completed_at = now(), worker_id = NULL,"
        " heartbeat_at = NULL, usage = pgqueue.usage_add(usage, %s) WHERE id = %s",
        ('{"input_tokens": 7, "output_tokens": 3, "cost": 1.25}', task.id),
    )
    usage = (await alice.get("/users/alice/usage")).json()
    assert (usage["cost_today"], usage["cost_this_month"], usage["budget_exhausted"]) == (
        1.25,
        1.25,
        None,
    )
    assert usage["days"][0]["input_tokens"] == 7
    # the rollup outlives the task
    await conn.execute("DELETE FROM pgqueue.tasks WHERE id = %s", (task.id,))
    assert (await alice.get("/users/alice/usage")).json()["cost_today"] == 1.25

    r = await admin.put("/users/alice/limits", json={"cost_per_day": 1})
    assert r.json()["max_running"] is None  # PUT replaces
    assert (await admin.get("/users/alice/usage")).json()["budget_exhausted"] == "cost_per_day"


async def test_why_over_http(api: Api, alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    created = (await alice.post("/tasks", json={"kind": "k", "queue": "nobody"})).json()
    r = await alice.get(f"/tasks/{created['id']}/why")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"
    assert [x["code"] for x in r.json()["reasons"]] == ["no_worker"]
    assert (await bob.get(f"/tasks/{created['id']}/why")).status_code == 404
    async with api.client(api.tokens.alice) as client:
        why = await client.why(created["id"])
    assert [x.code for x in why.reasons] == ["no_worker"]


async def test_metrics_count_tasks_held_back_by_reason(
    admin: httpx.AsyncClient, queue: Queue
) -> None:
    await queue.enqueue("k", queue="frozen")
    await queue.enqueue("k", queue="frozen")
    assert (await admin.patch("/queues/frozen", json={"paused": True})).status_code == 200
    text = (await admin.get("/metrics")).text
    assert 'pgqueue_tasks_held_back{queue="frozen",reason="queue_paused"} 2.0' in text, text
