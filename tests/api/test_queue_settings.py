"""``PATCH /queues/{name}``: pause, resume and concurrency limits over real HTTP."""

from __future__ import annotations

import httpx


async def test_queue_settings_over_http(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    r = await admin.patch("/queues/llm", json={"concurrency_limit": 5, "paused": True})
    assert r.status_code == 200, r.text
    assert (r.json()["concurrency_limit"], r.json()["paused"]) == (5, True)
    shown = {q["name"]: q for q in (await admin.get("/queues")).json()}
    assert (shown["llm"]["concurrency_limit"], shown["llm"]["paused"]) == (5, True)
    r = await admin.patch("/queues/llm", json={"concurrency_limit": None, "paused": False})
    assert (r.json()["concurrency_limit"], r.json()["paused"]) == (None, False)

    assert (await alice.patch("/queues/llm", json={"paused": True})).status_code == 403
    for body, field in [
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({}, "paused"),
        ({"paused": "yes"}, "paused"),
    ]:
        r = await admin.patch("/queues/llm", json=body)
        assert r.status_code == 400 and field in r.json()["detail"], (body, r.text)
    r = await admin.patch("/queues/bad name!", json={"paused": True})
    assert r.status_code == 400 and "name" in r.json()["detail"]
