"""Issue 9, items 1, 3 and 4, over real HTTP with two users, a worker and an admin: keys are
scoped by owner, ``parent_id`` must be the caller's to read, a worker names no owner."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest

import pgqueue
from pgqueue.errors import NotFound
from pgqueue.queue import Queue
from pgqueue.worker.remote import RemoteWorker
from tests.api.conftest import Api


async def post(c: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await c.post("/tasks", json={"kind": "k", **body}, headers=headers)


async def test_one_key_two_users_two_tasks_body_header_and_batch(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Bob sending Alice's key (body, header, batch) gets his own task, never hers."""
    mine = await post(alice, {"payload": {"secret": "alice's"}, "idempotency_key": "k1"})
    assert mine.status_code == 201
    alice_id = mine.json()["id"]
    answers = [
        await post(bob, {"payload": {"secret": "alice's"}, "idempotency_key": "k1"}),
        await post(bob, {"payload": {"secret": "alice's"}}, **{"Idempotency-Key": "k1"}),
        await post(bob, {"payload": {"other": 1}}, **{"Idempotency-Key": "k1"}),  # 409: his
        await bob.post(
            "/tasks/batch",
            json={"tasks": [{"kind": "k", "payload": {"x": 2}, "idempotency_key": "k2"}]},
        ),
    ]
    first, replay, conflict, _ = answers
    assert first.status_code == 201 and first.json()["user_id"] == "bob"
    assert first.json()["id"] != alice_id
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]  # a replay returns the caller's own task
    assert conflict.status_code == 409 and first.json()["id"] in conflict.json()["detail"]
    # Alice's key k2 in a batch, after Bob's: again two tasks
    theirs = await alice.post(
        "/tasks/batch",
        json={"tasks": [{"kind": "k", "payload": {"y": 3}, "idempotency_key": "k2"}]},
    )
    assert theirs.status_code == 201
    [a2], [b2] = theirs.json(), answers[3].json()
    assert a2["id"] != b2["id"] and (a2["user_id"], b2["user_id"]) == ("alice", "bob")
    assert a2["payload"] == {"y": 3}
    for r in answers:  # no answer to Bob names Alice's task
        assert alice_id not in r.text
    # and Alice still replays her own
    again = await post(alice, {"payload": {"secret": "alice's"}, "idempotency_key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == alice_id


async def test_a_409_never_names_another_owners_task(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    held = await post(alice, {"payload": {"n": 1}, "idempotency_key": "shared"})
    r = await post(bob, {"payload": {"n": 2}, "idempotency_key": "shared"})
    assert r.status_code == 201, r.text  # not a 409 about Alice's task
    assert held.json()["id"] not in r.text
    batch = await bob.post(
        "/tasks/batch",
        json={
            "tasks": [
                {"kind": "k", "payload": {"n": 3}, "idempotency_key": "shared"},  # his: 409
            ]
        },
    )
    assert batch.status_code == 409 and held.json()["id"] not in batch.text
    assert r.json()["id"] in batch.json()["detail"]


async def test_racing_producers_of_one_user_one_key_make_one_task(api: Api, dsn: str) -> None:
    """30 concurrent POSTs of one user with one key: one task, 29 replays — and Bob's same
    key, raced alongside, makes his own one task."""
    clients = [api.http(api.tokens.alice) for _ in range(30)] + [
        api.http(api.tokens.bob) for _ in range(10)
    ]
    try:
        answers = await asyncio.gather(
            *(post(c, {"payload": {"n": 1}}, **{"Idempotency-Key": "race"}) for c in clients)
        )
    finally:
        for c in clients:
            await c.aclose()
    alice_answers, bob_answers = answers[:30], answers[30:]
    assert {r.status_code for r in answers} <= {200, 201}
    assert len({r.json()["id"] for r in alice_answers}) == 1
    assert len({r.json()["id"] for r in bob_answers}) == 1
    assert sum(r.status_code == 201 for r in alice_answers) == 1
    assert sum(r.status_code == 201 for r in bob_answers) == 1
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT user_id, count(*) FROM pgqueue.tasks GROUP BY user_id ORDER BY user_id"
        )
        assert await cur.fetchall() == [("alice", 1), ("bob", 1)]


async def test_parent_must_be_readable_and_the_child_gets_its_owner(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    parent = (await post(alice, {})).json()
    missing = str(uuid.uuid4())
    for body in ({"parent_id": parent["id"]}, {"parent_id": missing}):
        r = await post(bob, body)
        assert r.status_code == 404 and "parent_id" in r.json()["detail"], r.text
        r = await bob.post("/tasks/batch", json={"tasks": [{"kind": "k"}, {"kind": "k", **body}]})
        assert r.status_code == 404 and "tasks[1].parent_id" in r.json()["detail"], r.text
    # Bob learns nothing: both answers read the same, bar the id
    a = (await post(bob, {"parent_id": parent["id"]})).json()["detail"]
    b = (await post(bob, {"parent_id": missing})).json()["detail"]
    assert a.replace(parent["id"], "X") == b.replace(missing, "X")
    async with httpx.AsyncClient(base_url=str(bob.base_url), headers=bob.headers) as c:
        listed = (await c.get("/tasks")).json()["items"]
    assert listed == []  # nothing was created for him
    child = await post(alice, {"parent_id": parent["id"]})
    assert child.status_code == 201 and child.json()["user_id"] == "alice"
    # an admin naming only the parent: the child is the parent's owner's
    r = await post(admin, {"parent_id": parent["id"]})
    assert r.status_code == 201 and r.json()["user_id"] == "alice"
    # an admin naming another owner than the parent's: refused
    r = await post(admin, {"parent_id": parent["id"], "user_id": "bob"})
    assert r.status_code == 404 and "parent_id" in r.json()["detail"]
    children = (await alice.get("/tasks", params={"parent_id": parent["id"]})).json()["items"]
    assert len(children) == 2 and {t["user_id"] for t in children} == {"alice"}


async def test_worker_enqueue_takes_its_owner_from_the_parent(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    parent = (await post(alice, {})).json()
    r = await post(worker, {"user_id": "alice"})
    assert r.status_code == 400 and "user_id" in r.json()["detail"], r.text
    r = await worker.post("/tasks/batch", json={"tasks": [{"kind": "k", "user_id": "bob"}]})
    assert r.status_code == 400 and "tasks[0].user_id" in r.json()["detail"], r.text
    r = await post(worker, {"user_id": "alice", "parent_id": parent["id"]})
    assert r.status_code == 400, r.text  # even the parent's owner may not be named
    r = await post(worker, {"parent_id": parent["id"]})
    assert r.status_code == 201 and r.json()["user_id"] == "alice", r.text
    r = await worker.post(
        "/tasks/batch", json={"tasks": [{"kind": "k", "parent_id": parent["id"]}]}
    )
    assert r.status_code == 201 and r.json()[0]["user_id"] == "alice", r.text
    r = await post(worker, {"parent_id": str(uuid.uuid4())})
    assert r.status_code == 404 and "parent_id" in r.json()["detail"]
    # Alice sees both children as hers
    children = (await alice.get("/tasks", params={"parent_id": parent["id"]})).json()["items"]
    assert len(children) == 2


async def test_queue_enqueue_parent_rules(queue: Queue) -> None:
    """Python producers: the parent must exist; an ownerless child takes the parent's owner;
    a key is scoped by owner there too."""
    parent = await queue.enqueue("k", user_id="alice")
    child = await queue.enqueue("k", parent_id=parent.id)
    assert child.user_id == "alice" and child == await queue.get(child.id)
    with pytest.raises(NotFound, match="parent_id"):
        await queue.enqueue("k", parent_id=uuid.uuid4())
    with pytest.raises(NotFound, match="parent_id"):
        await queue.enqueue("k", parent_id=parent.id, user_id="bob")
    [many] = await queue.enqueue_many([{"kind": "k", "parent_id": parent.id}])
    assert many.user_id == "alice"
    a = await queue.enqueue("k", idempotency_key="same", user_id="alice")
    b = await queue.enqueue("k", idempotency_key="same", user_id="bob")
    n = await queue.enqueue("k", idempotency_key="same")
    assert len({a.id, b.id, n.id}) == 3
    assert (await queue.enqueue("k", idempotency_key="same", user_id="bob")).id == b.id
    assert (await queue.enqueue("k", idempotency_key="same")).id == n.id


children_app = pgqueue.App()


@children_app.task("fan.out")
async def fan_out(ctx: pgqueue.Context, payload: Any) -> list[str]:
    child = await ctx.enqueue("fan.leaf", {"n": 1})
    return [str(child.id)]


async def test_a_remote_workers_child_task_is_its_parents_owners(api: Api) -> None:
    """ctx.enqueue in a remote worker (worker token): the child is Alice's, as its parent."""
    async with api.client(api.tokens.alice) as alice, api.client(api.tokens.worker) as client:
        worker = RemoteWorker(children_app, client, heartbeat_s=0.3, claim_wait_s=1)
        runner = asyncio.create_task(worker.run())
        try:
            await worker.started.wait()
            parent = await alice.submit("fan.out", {})
            done = await alice.wait(parent.id, timeout_s=30)
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 30)
        assert done.status is pgqueue.Status.COMPLETED, done.error
        child = await alice.get(done.result[0])
        assert child.user_id == "alice" and child.parent_id == parent.id
