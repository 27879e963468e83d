"""Issue 9, items 9 and 10 and the one result limit, over real HTTP (two users, a worker, an
admin) and with a real local worker: every number a caller sends is bounded, sums never
overflow into an error, and a result too large to record fails the same way everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, LiteralString

import httpx
import psycopg
import pytest

import pgqueue
from pgqueue.errors import InvalidInput
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status, Usage
from pgqueue.worker.context import Context
from tests.helpers import fast_settings, running_worker

RESULT_LIMIT = 4096  # PGQUEUE_MAX_RESULT_BYTES of these tests (the payload limit stays 1 MiB)


@pytest.fixture
def api_settings(dsn: str) -> Settings:
    return fast_settings(dsn, max_result_bytes=RESULT_LIMIT)


async def claim(worker: httpx.AsyncClient) -> dict[str, Any]:
    r = await worker.post("/tasks/claim", json={"worker_id": "w1", "queues": ["default"]})
    assert r.status_code == 200, r.text
    [task] = r.json()
    return dict(task)


@pytest.mark.parametrize("field", ["backoff_base_s", "backoff_max_s"])
async def test_backoff_above_a_day_is_400_per_task_and_in_batches(
    alice: httpx.AsyncClient, field: str
) -> None:
    for value in (86400.5, 1e308):
        r = await alice.post("/tasks", json={"kind": "k", field: value})
        assert r.status_code == 400 and field in r.json()["detail"], r.text
        r = await alice.post("/tasks/batch", json={"tasks": [{"kind": "k", field: value}]})
        assert r.status_code == 400 and field in r.json()["detail"], r.text
    r = await alice.post("/tasks", content=b'{"kind": "k", "%s": 1e999}' % field.encode())
    assert r.status_code == 400, r.text  # not finite
    r = await alice.post("/tasks", json={"kind": "k", field: 86400})
    assert r.status_code == 201, r.text


async def test_timeout_and_delay_are_bounded(alice: httpx.AsyncClient) -> None:
    for field, value in (("timeout_s", 604801), ("delay_s", 1e308), ("delay_s", 4e8)):
        r = await alice.post("/tasks", json={"kind": "k", field: value})
        assert r.status_code == 400 and field in r.json()["detail"], r.text
    r = await alice.post("/tasks", json={"kind": "k", "timeout_s": 604800, "delay_s": 3e8})
    assert r.status_code == 201, r.text


async def test_a_task_due_after_the_year_9999_is_refused(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, queue: Queue
) -> None:
    """PostgreSQL stored such a row, and then no read of it worked: GET /tasks was a 400
    for every admin from then on. Now it is refused up front, naming the field."""
    late = {"kind": "k", "run_at": "9999-12-31T23:59:59Z"}
    for body, field in (
        ({**late, "delay_s": 3e8}, "delay_s"),
        (late | {"run_at": "9999-12-31T23:00:00-05:00"}, "run_at"),
    ):
        r = await alice.post("/tasks", json=body)
        assert r.status_code == 400 and field in r.json()["detail"], r.text
        r = await alice.post("/tasks/batch", json={"tasks": [{"kind": "k"}, body]})
        assert r.status_code == 400 and "tasks[1]" in r.json()["detail"], r.text
    with pytest.raises(InvalidInput, match="delay_s"):
        await queue.enqueue("k", run_at="9999-12-31T23:59:59Z", delay_s=3e8)
    assert (await alice.post("/tasks", json=late)).status_code == 201
    r = await admin.get("/tasks")
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text


async def test_backoff_from_a_remote_worker_or_a_handler_is_bounded(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    c = await claim(worker)
    r = await worker.post(
        f"/tasks/{task['id']}/fail",
        json={
            "lease": c["lease"],
            "error": {"type": "E", "message": "m"},
            "backoff_base_s": 1e308,
            "backoff_max_s": 1e308,
        },
    )
    assert r.status_code == 400 and "backoff" in r.json()["detail"], r.text
    app = pgqueue.App()
    with pytest.raises(InvalidInput, match="backoff_max_s"):
        app.task("k", backoff_max_s=1e308)(lambda ctx, payload: None)


async def test_the_schema_refuses_out_of_range_backoff_and_timeout(dsn: str) -> None:
    """psql users are held to the same bounds (CHECKs of migration 0006)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        refused: list[tuple[LiteralString, LiteralString]] = [
            ("backoff_base_s", "1e308"),
            ("backoff_max_s", "86401"),
            ("backoff_max_s", "'NaN'"),
            ("backoff_base_s", "'Infinity'"),
            ("timeout_s", "604801"),
        ]
        for column, value in refused:
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(
                    f"INSERT INTO pgqueue.tasks (kind, {column}) VALUES ('k', {value})"
                )


async def test_usage_reports_are_bounded_over_http(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    c = await claim(worker)
    url = f"/tasks/{task['id']}"
    for usage in (
        {"cost": 1e308},
        {"cost": 1e9 + 1},
        {"input_tokens": 10**12 + 1},
        {"output_tokens": 2**63},
    ):
        reports: list[tuple[str, dict[str, Any]]] = [("heartbeat", {}), ("complete", {})]
        for path, extra in reports:
            r = await worker.post(
                f"{url}/{path}", json={"lease": c["lease"], "usage": usage, **extra}
            )
            assert r.status_code == 400 and "usage" in r.json()["detail"], (path, usage, r.text)
        r = await worker.post(
            f"{url}/fail",
            json={"lease": c["lease"], "error": {"type": "E", "message": "m"}, "usage": usage},
        )
        assert r.status_code == 400 and "usage" in r.json()["detail"], r.text
    top = {"input_tokens": 10**12, "output_tokens": 10**12, "cost": 1e9}
    r = await worker.post(f"{url}/heartbeat", json={"lease": c["lease"], "usage": top})
    assert r.status_code == 200, r.text


def test_usage_reports_are_bounded_in_python() -> None:
    assert Usage.checked(10**12, 10**12, 1e9) == Usage(10**12, 10**12, 1e9)
    for args in ((10**12 + 1, 0, 0.0), (0, -1, 0.0), (0, 0, 1e10), (0, 0, float("nan"))):
        with pytest.raises(InvalidInput, match="usage"):
            Usage.checked(*args)
    ctx = Context.__new__(Context)  # add_usage needs nothing but its running total
    ctx.usage = Usage()
    ctx.add_usage(input_tokens=10**12, cost=5e8)
    with pytest.raises(ValueError, match="usage"):
        ctx.add_usage(input_tokens=1)  # this attempt's report would pass the bound
    with pytest.raises(ValueError, match="usage"):
        ctx.add_usage(cost=float("inf"))
    assert ctx.usage == Usage(10**12, 0, 5e8)  # a refused report changes nothing


async def test_huge_usage_sums_break_neither_stats_nor_views_nor_recording(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, worker: httpx.AsyncClient, dsn: str
) -> None:
    """Rows as a hostile report could leave them before the bounds (cost 1e308, tokens near
    2^63): /stats, usage_by_user and the next report all still work, the sums saturate."""
    ids = [(await alice.post("/tasks", json={"kind": "k"})).json()["id"] for _ in range(3)]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE pgqueue.tasks SET usage = jsonb_build_object("
            "'input_tokens', 9223372036854775000, 'output_tokens', 9223372036854775000,"
            "'cost', 1e308) WHERE id = ANY(%s::uuid[])",
            (ids,),
        )
        cur = await conn.execute(
            "SELECT input_tokens, cost FROM pgqueue.usage_by_user WHERE user_id = 'alice'"
        )
        [(tokens, cost)] = await cur.fetchall()
        assert tokens == 3 * 9223372036854775000 and cost == 3 * 10**308
    for c in (admin, alice):
        r = await c.get("/stats")
        assert r.status_code == 200, r.text
        assert r.json()["by_user"][-1]["input_tokens"] == 2**63 - 1
        assert r.json()["by_user"][-1]["cost"] == 1e18
    lease = (await claim(worker))["lease"]
    top = {"input_tokens": 10**12, "output_tokens": 10**12, "cost": 1e9}
    r = await worker.post(f"/tasks/{ids[0]}/complete", json={"lease": lease, "usage": top})
    assert r.status_code == 200, r.text
    assert r.json()["usage"] == {
        "input_tokens": 2**63 - 1,
        "output_tokens": 2**63 - 1,
        "cost": 1e18,
    }


async def test_http_complete_refuses_a_result_over_the_limit_with_413(
    alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task = (await alice.post("/tasks", json={"kind": "k"})).json()
    c = await claim(worker)
    url = f"/tasks/{task['id']}/complete"
    r = await worker.post(url, json={"lease": c["lease"], "result": "x" * RESULT_LIMIT})
    assert r.status_code == 413 and "PGQUEUE_MAX_RESULT_BYTES" in r.json()["detail"], r.text
    r = await worker.post(url, json={"lease": c["lease"], "result": "x" * (RESULT_LIMIT - 2)})
    assert r.status_code == 200, r.text  # exactly the limit once JSON-quoted


@pytest.fixture
async def big_result_worker(api_settings: Settings) -> AsyncIterator[None]:
    app = pgqueue.App()

    @app.task("big")
    async def big(ctx: pgqueue.Context, payload: Any) -> str:
        return "x" * payload["n"]

    async with running_worker(app, api_settings):
        yield


@pytest.mark.usefixtures("big_result_worker")
async def test_the_local_worker_fails_an_oversize_result_once_as_unrecordable(
    api_settings: Settings,
) -> None:
    async with Queue(settings=api_settings) as q:
        big = await q.enqueue("big", {"n": RESULT_LIMIT}, max_retries=3)
        fits = await q.enqueue("big", {"n": RESULT_LIMIT - 2})
        big_done = await q.wait(big.id, timeout_s=60)
        fits_done = await q.wait(fits.id, timeout_s=60)
    assert big_done.status is Status.FAILED and big_done.attempts == 1  # not retried
    assert big_done.error is not None and big_done.error["type"] == "unrecordable_outcome"
    assert "PGQUEUE_MAX_RESULT_BYTES" in big_done.error["message"]
    assert big_done.result is None
    assert fits_done.status is Status.COMPLETED and fits_done.result == "x" * (RESULT_LIMIT - 2)


def test_result_limit_defaults_to_the_payload_limit() -> None:
    assert Settings.from_env({}).result_limit == 1024 * 1024
    assert Settings.from_env({"PGQUEUE_MAX_PAYLOAD_BYTES": "2000"}).result_limit == 2000
    assert Settings.from_env({"PGQUEUE_MAX_RESULT_BYTES": "10"}).result_limit == 10
