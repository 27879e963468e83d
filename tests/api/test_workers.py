"""The remote-worker protocol over HTTP, and the operational endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from tests.api.conftest import Api, create_token


async def claim(c: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    r = await c.post("/tasks/claim", json={"worker_id": "w1", "queues": ["default"], **body})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()
    return data


async def test_claim_heartbeat_complete(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k", "payload": {"x": 1}})).json()
    [claimed] = await claim(worker, limit=10)
    assert claimed["id"] == task["id"] and claimed["lease"] == "1:w1"
    assert claimed["status"] == "running" and claimed["payload"] == {"x": 1}
    url = f"/tasks/{task['id']}"
    r = await worker.post(
        f"{url}/heartbeat",
        json={
            "lease": "1:w1",
            "progress": {"percent": 50, "message": "half"},
            "checkpoint": {"token": "c1", "data": {"step": 2}},
            "usage": {"input_tokens": 10, "output_tokens": 5, "cost": 0.5},
        },
    )
    assert r.status_code == 200 and r.json() == {"cancel_requested": False}
    seen = (await alice.get(url)).json()
    assert seen["progress"] == {"percent": 50, "message": "half"}
    assert seen["checkpoint"]["token"] == "c1" and seen["checkpoint"]["data"] == {"step": 2}
    r = await worker.post(
        f"{url}/complete",
        json={"lease": "1:w1", "result": {"ok": True}, "usage": {"input_tokens": 1}},
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed" and done["result"] == {"ok": True}
    assert done["usage"]["input_tokens"] == 11
    again = await worker.post(f"{url}/complete", json={"lease": "1:w1"})
    assert again.status_code == 409 and "lease" in again.json()["detail"]


async def test_heartbeat_reports_cancel_and_fail_as_cancelled(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    [c] = await claim(worker)
    await alice.post(f"/tasks/{task['id']}/cancel")
    r = await worker.post(f"/tasks/{task['id']}/heartbeat", json={"lease": c["lease"]})
    assert r.json() == {"cancel_requested": True}
    r = await worker.post(
        f"/tasks/{task['id']}/fail",
        json={
            "lease": c["lease"],
            "error": {"type": "cancelled", "message": "stopped"},
            "retryable": False,
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


async def test_fail_retryable_then_permanent(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k", "max_retries": 1})).json()
    [c] = await claim(worker)
    r = await worker.post(
        f"/tasks/{task['id']}/fail",
        json={
            "lease": c["lease"],
            "error": {"type": "Boom", "message": "bad"},
            "retryable": True,
            "retry_in_s": 0,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["error"]["type"] == "Boom"
    [c2] = await claim(worker)
    assert c2["lease"] == "2:w1"
    r = await worker.post(
        f"/tasks/{task['id']}/fail",
        json={"lease": c2["lease"], "error": {"type": "Boom", "message": "bad"}, "retryable": True},
    )
    assert r.json()["status"] == "failed"  # retries exhausted
    bad = await worker.post(f"/tasks/{task['id']}/fail", json={"lease": "x", "error": {}})
    assert bad.status_code == 400


async def test_stale_lease_after_reap_is_409(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient, dsn: str
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    [c] = await claim(worker, worker_id="old")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT * FROM pgqueue.reap('0 seconds')")
    [c2] = await claim(worker, worker_id="new")
    assert c2["id"] == task["id"] and c2["lease"] == "2:new"
    url = f"/tasks/{task['id']}"
    for path, body in [
        ("heartbeat", {"lease": c["lease"]}),
        ("complete", {"lease": c["lease"], "result": 1}),
        ("fail", {"lease": c["lease"], "error": {"type": "x", "message": "y"}}),
        ("release", {"lease": c["lease"]}),
    ]:
        r = await worker.post(f"{url}/{path}", json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["type"] == "StaleLease" and "lease" in r.json()["detail"]
    r = await worker.post(f"{url}/complete", json={"lease": c2["lease"], "result": 2})
    assert r.status_code == 200 and r.json()["result"] == 2
    missing = "00000000-0000-0000-0000-000000000000"
    r = await worker.post(f"/tasks/{missing}/heartbeat", json={"lease": "1:w"})
    assert r.status_code == 404


async def test_a_lease_is_bound_to_the_token_that_claimed_it(
    api: Api, alice: httpx.AsyncClient, worker: httpx.AsyncClient, dsn: str
) -> None:
    """Another worker token that learnt the lease gets a 409 for every report (SPEC §4),
    and cannot claim under the worker id the first token uses."""
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    [c] = await claim(worker, worker_id="bound")
    url = f"/tasks/{task['id']}"
    async with api.http(await create_token(dsn, "w2", "worker")) as other:
        for path, body in [
            ("heartbeat", {"lease": c["lease"]}),
            ("complete", {"lease": c["lease"], "result": 1}),
            ("fail", {"lease": c["lease"], "error": {"type": "x", "message": "y"}}),
            ("cancelled", {"lease": c["lease"]}),
            ("release", {"lease": c["lease"]}),
        ]:
            r = await other.post(f"{url}/{path}", json=body)
            assert r.status_code == 409, (path, r.text)
            assert "token" in r.json()["detail"]
        r = await other.post("/tasks/claim", json={"worker_id": "bound", "queues": ["default"]})
        assert r.status_code == 409 and "worker_id" in r.json()["detail"]
    assert (await alice.get(url)).json()["status"] == "running"
    r = await worker.post(f"{url}/complete", json={"lease": c["lease"], "result": 2})
    assert r.status_code == 200 and r.json()["result"] == 2


async def test_cancelled_records_an_obeyed_cancel(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    [c] = await claim(worker)
    await alice.post(f"/tasks/{task['id']}/cancel")
    r = await worker.post(
        f"/tasks/{task['id']}/cancelled", json={"lease": c["lease"], "usage": {"cost": 0.5}}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "cancelled" and done["usage"]["cost"] == 0.5
    assert done["error"]["type"] == "cancelled"


async def test_release_gives_the_attempt_back(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    [c] = await claim(worker)
    r = await worker.post(f"/tasks/{task['id']}/release", json={"lease": c["lease"]})
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0


async def test_claim_long_poll_is_woken_by_enqueue(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(claim(worker, wait_s=20, queues=["lp"]))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await alice.post("/tasks", json={"kind": "k", "queue": "lp"})
    claimed = await asyncio.wait_for(poll, 10)
    assert len(claimed) == 1 and time.monotonic() - started < 5
    # nothing due: returns empty after wait_s
    started = time.monotonic()
    assert await claim(worker, wait_s=0.5, queues=["lp"]) == []
    assert time.monotonic() - started >= 0.45


async def test_claim_by_kinds_and_bounds(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    await alice.post("/tasks", json={"kind": "a"})
    await alice.post("/tasks", json={"kind": "b"})
    got = await claim(worker, kinds=["b"], limit=5)
    assert [t["kind"] for t in got] == ["b"]
    refused: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": 101},
        {"wait_s": 31},
        {"queues": []},
        {"extra": 1},
    ]
    for body in refused:
        r = await worker.post(
            "/tasks/claim", json={"worker_id": "w", "queues": ["default"], **body}
        )
        assert r.status_code == 400, body
        key = next(iter(body))
        assert key in r.json()["detail"], (body, r.json())


async def test_users_cannot_claim_or_report(alice: httpx.AsyncClient) -> None:
    r = await alice.post("/tasks/claim", json={"worker_id": "w", "queues": ["default"]})
    assert r.status_code == 403
    r = await alice.post(
        "/tasks/00000000-0000-0000-0000-000000000000/complete", json={"lease": "1:w"}
    )
    assert r.status_code == 403


async def test_workers_queues_stats(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    worker: httpx.AsyncClient,
    admin: httpx.AsyncClient,
) -> None:
    await alice.post("/tasks", json={"kind": "k"})
    await alice.post("/tasks", json={"kind": "k"})
    await bob.post("/tasks", json={"kind": "k", "queue": "other"})
    [c] = await claim(worker, worker_id="w-stats", host="box", pid=42, concurrency=4)
    await worker.post(
        f"/tasks/{c['id']}/complete",
        json={
            "lease": c["lease"],
            "usage": {"input_tokens": 100, "output_tokens": 20, "cost": 0.25},
        },
    )
    workers = (await admin.get("/workers")).json()
    [w] = [w for w in workers if w["id"] == "w-stats"]
    assert w["host"] == "box" and w["pid"] == 42 and w["concurrency"] == 4
    assert w["heartbeat_age_s"] >= 0
    # The row `pgqueue status` prints too: the tasks it runs by the table, and liveness.
    assert w["running_tasks"] == 0 and w["alive"] is True
    queues = {q["name"]: q for q in (await admin.get("/queues")).json()}
    assert queues["default"]["completed"] == 1 and queues["default"]["pending"] == 1
    assert queues["default"]["due"] == 1 and queues["default"]["completed_last_minute"] == 1
    assert queues["other"]["pending"] == 1
    stats = (await admin.get("/stats")).json()
    assert stats["usage"]["input_tokens"] == 100 and stats["usage"]["cost"] == 0.25
    by_user = {u["user_id"]: u for u in stats["by_user"]}
    assert by_user["alice"]["tasks"] == 2 and by_user["bob"]["tasks"] == 1
    assert {q["queue"] for q in stats["by_queue"]} == {"default", "other"}
    mine = (await alice.get("/stats")).json()
    assert [u["user_id"] for u in mine["by_user"]] == ["alice"]
    assert mine["tasks"] == {"pending": 1, "completed": 1}


async def test_health_ready_metrics_openapi(api: Api, worker: httpx.AsyncClient) -> None:
    async with api.http(None) as anon:
        assert (await anon.get("/healthz")).json()["status"] == "ok"
        ready = await anon.get("/readyz")
        assert (
            ready.status_code == 200
            and ready.json()["schema_version"] == ready.json()["latest_version"]
        )
        await claim(worker)
        metrics = (await anon.get("/metrics")).text
        for name in (
            "pgqueue_tasks",
            "pgqueue_http_request_duration_seconds_bucket",
            "pgqueue_ws_subscribers",
            "pgqueue_pool_connections",
            "pgqueue_api_claimed_tasks",
            "pgqueue_api_finished_tasks",
        ):
            assert name in metrics, name
        schema = (await anon.get("/schema/openapi.json")).json()
        for path in (
            "/tasks",
            "/tasks/batch",
            "/tasks/{task_id}",
            "/tasks/claim",
            "/tasks/{task_id}/heartbeat",
            "/queues",
            "/workers",
            "/stats",
        ):
            assert path in schema["paths"], path
