"""/tasks over real HTTP: enqueue, idempotency, validation, ownership, listing, control, waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from tests.api.conftest import Api


async def post_task(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post("/tasks", json={"kind": "k", **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_submit_returns_201_with_rfc3339_utc_and_forced_owner(
    alice: httpx.AsyncClient,
) -> None:
    r = await alice.post(
        "/tasks",
        json={
            "kind": "email.send",
            "payload": {"to": "a@b.c"},
            "priority": 5,
            "user_id": "mallory",
            "tags": ["signup"],
            "queue": "emails",
            "delay_s": 10,
        },
    )
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["user_id"] == "alice"  # forced to the token's user
    assert task["status"] == "pending" and task["priority"] == 5 and task["queue"] == "emails"
    assert task["created_at"].endswith("Z") and "T" in task["created_at"]


async def test_idempotent_replay_through_header(alice: httpx.AsyncClient) -> None:
    body = {"kind": "k", "payload": {"n": 1}}
    first = await alice.post("/tasks", json=body, headers={"Idempotency-Key": "key-1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = await alice.post("/tasks", json=body, headers={"Idempotency-Key": "key-1"})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "key-1"
    # the body field is the same key
    same = await alice.post("/tasks", json={**body, "idempotency_key": "key-1"})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = await alice.post(
        "/tasks", json={"kind": "k", "payload": {"n": 2}}, headers={"Idempotency-Key": "key-1"}
    )
    assert other.status_code == 409 and "idempotency_key" in other.json()["detail"]
    differ = await alice.post(
        "/tasks", json={**body, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert differ.status_code == 400 and "idempotency_key" in differ.json()["detail"]


async def test_validation_errors_name_the_field(alice: httpx.AsyncClient, api: Api) -> None:
    cases: list[tuple[Any, str]] = [
        ({"kind": "k", "priority": 1001}, "priority"),
        ({"kind": "k", "priority": "high"}, "priority"),
        ({"kind": "k", "max_retries": -1}, "max_retries"),
        ({"kind": "k", "timeout_s": 0}, "timeout_s"),
        ({"kind": "bad kind!"}, "kind"),
        ({"kind": "k", "queue": "x" * 65}, "queue"),
        ({"kind": "k", "surprise": 1}, "surprise"),
        ({"payload": {}}, "kind"),
        ([1, 2], "body"),
    ]
    for body, field in cases:
        r = await alice.post("/tasks", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["detail"], (body, r.json())
        assert r.json()["status_code"] == 400
    r = await alice.post(
        "/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await alice.get("/tasks", params={"limit": 501})
    assert r.status_code == 400 and "limit" in r.json()["detail"]
    r = await alice.get("/tasks/not-a-uuid")
    assert r.status_code == 400 and "id" in r.json()["detail"]
    r = await alice.get("/tasks", params={"status": "nope"})
    assert r.status_code == 400 and "status" in r.json()["detail"]
    r = await alice.get("/tasks/00000000-0000-0000-0000-000000000000", params={"wait": 301})
    assert r.status_code == 400 and "wait" in r.json()["detail"]


async def test_oversize_payload_is_413(alice: httpx.AsyncClient, api: Api) -> None:
    big = "x" * (api.settings.max_payload_bytes + 10)
    r = await alice.post("/tasks", json={"kind": "k", "payload": {"blob": big}})
    assert r.status_code == 413 and "payload" in r.json()["detail"]
    r = await alice.post(
        "/tasks/batch", json={"tasks": [{"kind": "k"}, {"kind": "k", "payload": big}]}
    )
    assert r.status_code == 413 and "tasks[1].payload" in r.json()["detail"]
    r = await alice.get("/tasks")
    assert r.json()["items"] == []  # nothing half-written


async def test_auth_401_for_missing_and_bad_tokens(api: Api) -> None:
    for token in (None, "pgq_wrong"):
        async with api.http(token) as c:
            for method, path in [("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/stats")]:
                r = await c.request(method, path, json={"kind": "k"})
                assert r.status_code == 401, (token, path, r.text)
                assert (
                    "token" in r.json()["detail"].lower()
                    or "authorization" in r.json()["detail"].lower()
                )


async def test_revoked_token_stops_working(api: Api, dsn: str) -> None:
    async with api.http(api.tokens.bob) as c:
        assert (await c.get("/tasks")).status_code == 200
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.api_tokens SET revoked_at = now() WHERE user_id = 'bob'")
    # the server caches a token for a few seconds at most
    deadline = time.monotonic() + 30
    async with api.http(api.tokens.bob) as c:
        while (await c.get("/tasks")).status_code != 401:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)


async def test_batch_one_transaction_in_order(alice: httpx.AsyncClient) -> None:
    tasks = [{"kind": "k", "payload": {"i": i}} for i in range(500)]
    r = await alice.post("/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    created = r.json()
    assert [t["payload"]["i"] for t in created] == list(range(500))
    assert {t["user_id"] for t in created} == {"alice"}
    bad = await alice.post(
        "/tasks/batch", json={"tasks": [{"kind": "k"}, {"kind": "k", "priority": 5000}]}
    )
    assert bad.status_code == 400 and "priority" in bad.json()["detail"]
    too_many = await alice.post("/tasks/batch", json={"tasks": [{"kind": "k"}] * 10_001})
    assert too_many.status_code == 400 and "tasks" in too_many.json()["detail"]
    empty = await alice.post("/tasks/batch", json={"tasks": []})
    assert empty.status_code == 400
    page = (await alice.get("/tasks", params={"limit": 500})).json()
    assert len(page["items"]) == 500


async def test_batch_owner_is_the_users_whatever_the_body_says(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    tasks = [{"kind": "k"}, {"kind": "k", "user_id": "mallory"}, {"kind": "k", "user_id": "alice"}]
    r = await alice.post("/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    assert [t["user_id"] for t in r.json()] == ["alice"] * 3
    stored = (await admin.get("/tasks", params={"user_id": "alice"})).json()["items"]
    assert len(stored) == 3 and {t["user_id"] for t in stored} == {"alice"}
    assert (await admin.get("/tasks", params={"user_id": "mallory"})).json()["items"] == []
    r = await admin.post("/tasks/batch", json={"tasks": [{"kind": "k"}, *tasks[1:]]})
    assert [t["user_id"] for t in r.json()] == [None, "mallory", "alice"]  # admins may name one


async def test_batch_of_10000(alice: httpx.AsyncClient) -> None:
    r = await alice.post(
        "/tasks/batch", json={"tasks": [{"kind": "k", "payload": {"i": i}} for i in range(10_000)]}
    )
    assert r.status_code == 201 and len(r.json()) == 10_000


async def test_user_isolation_get_list_cancel_retry_events(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    mine = await post_task(alice)
    theirs = await post_task(bob)
    for path in (f"/tasks/{theirs['id']}", f"/tasks/{theirs['id']}/events"):
        r = await alice.get(path)
        assert r.status_code == 404, path
    for path in (f"/tasks/{theirs['id']}/cancel", f"/tasks/{theirs['id']}/retry"):
        r = await alice.post(path)
        assert r.status_code == 404, path
    listed = (await alice.get("/tasks")).json()["items"]
    assert [t["id"] for t in listed] == [mine["id"]]
    r = await alice.get("/tasks", params={"user_id": "bob"})
    assert r.status_code == 400 and "user_id" in r.json()["detail"]
    everyone = (await admin.get("/tasks")).json()["items"]
    assert {t["id"] for t in everyone} == {mine["id"], theirs["id"]}
    only_bob = (await admin.get("/tasks", params={"user_id": "bob"})).json()["items"]
    assert [t["id"] for t in only_bob] == [theirs["id"]]
    assert (await bob.get(f"/tasks/{theirs['id']}")).status_code == 200


async def test_list_filters_and_keyset_pagination(alice: httpx.AsyncClient) -> None:
    parent = await post_task(alice)
    for i in range(7):
        await post_task(
            alice,
            queue="q1" if i % 2 else "q2",
            tags=["t"] if i < 3 else [],
            parent_id=parent["id"],
            payload={"i": i},
        )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "parent_id": parent["id"]}
        if cursor:
            params["cursor"] = cursor
        page = (await alice.get("/tasks", params=params)).json()
        seen += [t["payload"]["i"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    q1 = (await alice.get("/tasks", params={"queue": "q1"})).json()["items"]
    assert sorted(t["payload"]["i"] for t in q1) == [1, 3, 5]
    tagged = (await alice.get("/tasks", params={"tag": "t"})).json()["items"]
    assert sorted(t["payload"]["i"] for t in tagged) == [0, 1, 2]
    kinds = (await alice.get("/tasks", params={"kind": "nope"})).json()
    assert kinds == {"items": [], "next_cursor": None}
    pending = (await alice.get("/tasks", params={"status": "pending", "limit": 500})).json()[
        "items"
    ]
    assert len(pending) == 8
    bad = await alice.get("/tasks", params={"cursor": "abc"})
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


async def test_cancel_retry_events_and_conflicts(alice: httpx.AsyncClient) -> None:
    task = await post_task(alice)
    r = await alice.post(f"/tasks/{task['id']}/retry")
    assert r.status_code == 409 and "retried" in r.json()["detail"]
    r = await alice.post(f"/tasks/{task['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await alice.post(f"/tasks/{task['id']}/cancel")
    assert r.status_code == 409 and "cancel" in r.json()["detail"]
    r = await alice.post(f"/tasks/{task['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    events = (await alice.get(f"/tasks/{task['id']}/events")).json()
    assert [e["event"] for e in events] == ["created", "cancelled", "requeued"]
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path in [
        ("GET", f"/tasks/{missing}"),
        ("POST", f"/tasks/{missing}/cancel"),
        ("POST", f"/tasks/{missing}/retry"),
        ("GET", f"/tasks/{missing}/events"),
    ]:
        r = await alice.request(method, path)
        assert r.status_code == 404, path


async def test_worker_token_may_read_but_not_cancel(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = await post_task(alice)
    assert (await worker.get(f"/tasks/{task['id']}")).status_code == 200
    r = await worker.post(f"/tasks/{task['id']}/cancel")
    assert r.status_code == 403 and "role" in r.json()["detail"]


async def test_get_wait_is_woken_by_notify(alice: httpx.AsyncClient, dsn: str) -> None:
    task = await post_task(alice)

    async def finish_later() -> None:
        await asyncio.sleep(0.5)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                "UPDATE pgqueue.tasks SET status = 'cancelled', completed_at = now() WHERE id = %s",
                (task["id"],),
            )

    start = time.monotonic()
    finisher = asyncio.create_task(finish_later())
    r = await alice.get(f"/tasks/{task['id']}", params={"wait": 30})
    elapsed = time.monotonic() - start
    await finisher
    assert r.json()["status"] == "cancelled"
    assert elapsed < 5, elapsed  # woken by NOTIFY, not by the 30 s timeout
    # a wait that times out returns the current state
    other = await post_task(alice)
    start = time.monotonic()
    r = await alice.get(f"/tasks/{other['id']}", params={"wait": 0.5})
    assert r.json()["status"] == "pending" and time.monotonic() - start >= 0.45


async def test_post_wait_returns_the_terminal_task(alice: httpx.AsyncClient, dsn: str) -> None:
    async def cancel_when_created() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _ in range(200):
                cur = await conn.execute("SELECT id FROM pgqueue.tasks WHERE kind = 'waited'")
                row = await cur.fetchone()
                if row:
                    await conn.execute("SELECT pgqueue.cancel(%s)", (row[0],))
                    return
                await asyncio.sleep(0.05)

    canceller = asyncio.create_task(cancel_when_created())
    r = await alice.post("/tasks", params={"wait": 30}, json={"kind": "waited"})
    await canceller
    assert r.status_code == 201 and r.json()["status"] == "cancelled"
