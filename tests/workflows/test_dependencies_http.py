"""Dependencies over HTTP (SPEC §4, §10): depends_on at enqueue (404 for a task the caller may
not read), graphs in POST /tasks/batch, GET /tasks?status=blocked, dependency_results in a
remote claim; and the enqueue race with producers and workers really racing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from pgqueue.worker.handlers import App
from tests.helpers import running_worker, wait_for


async def test_dependencies_over_http(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    r = await alice.post("/tasks", json={"kind": "k", "queue": "first"})
    first = r.json()
    r = await bob.post("/tasks", json={"kind": "k", "depends_on": [first["id"]]})
    assert r.status_code == 404 and "depends_on" in r.json()["detail"]
    r = await alice.post(
        "/tasks/batch",
        json={
            "tasks": [
                {"kind": "k", "ref": "a", "depends_on": [first["id"]]},
                {"kind": "k", "ref": "b", "depends_on_refs": ["a"]},
            ]
        },
    )
    assert r.status_code == 201, r.text
    a, b = r.json()
    assert (a["status"], b["status"], b["depends_on"]) == ("blocked", "blocked", [a["id"]])
    r = await alice.get("/tasks", params={"status": "blocked"})
    assert {t["id"] for t in r.json()["items"]} == {a["id"], b["id"]}
    r = await alice.post("/tasks/batch", json={"tasks": [{"kind": "k", "depends_on_refs": ["x"]}]})
    assert r.status_code == 400 and "depends_on_refs" in r.json()["detail"]

    claim = {"worker_id": "rw", "queues": ["first"], "limit": 1}
    (leased,) = (await worker.post("/tasks/claim", json=claim)).json()
    r = await worker.post(
        f"/tasks/{leased['id']}/complete", json={"lease": leased["lease"], "result": {"x": 1}}
    )
    assert r.status_code == 200, r.text
    claim["queues"] = ["default"]
    (leased,) = (await worker.post("/tasks/claim", json=claim)).json()
    assert leased["id"] == a["id"]
    assert leased["dependency_results"] == {first["id"]: {"x": 1}}


async def test_the_last_dependency_completing_during_the_insert(
    queue: Queue, settings: Settings
) -> None:
    """Producers enqueue a task and at once a dependent of it while workers complete the
    first as fast as they can: every dependent must run (none left blocked forever)."""
    app = App()

    @app.task("dep")
    async def dep(ctx: Any, payload: Any) -> int:
        return 1

    @app.task("child")
    async def child(ctx: Any, payload: Any) -> int:
        return 2

    rounds, producers = 150, 4
    children: list[Any] = []

    async def produce() -> None:
        async with Queue(settings=settings) as q:
            for _ in range(rounds):
                d = await q.enqueue("dep", {})
                children.append((await q.enqueue("child", {}, depends_on=[d.id])).id)

    async with (
        running_worker(app, settings, concurrency=8),
        running_worker(app, settings, concurrency=8),
    ):
        await asyncio.gather(*(produce() for _ in range(producers)))

        async def all_done() -> bool:
            page = await queue.list(status=Status.COMPLETED, kind="child", limit=500)
            more = await queue.list(
                status=Status.COMPLETED, kind="child", limit=500, cursor=page.next_cursor
            )
            return len(page.items) + len(more.items) == rounds * producers

        await wait_for(all_done, timeout=120, what="every dependent to complete")
    assert (await queue.list(status=Status.BLOCKED)).items == []
