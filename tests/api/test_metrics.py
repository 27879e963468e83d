"""``GET /metrics`` (SPEC §4, §15): a snapshot at most 5 s old whatever the scrape rate, an
optional bearer token, and the task histograms and outcome counters from the audit trail."""

# pyright: reportPrivateUsage=false
# (the capping and gap rules are pinned on TaskStats' own helpers, not through a scrape)

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from pgqueue.api import metrics as m
from pgqueue.api.metrics import MAX_SERIES, TaskStats
from tests.api.conftest import Api, Tokens, serving
from tests.helpers import fast_settings, wait_for


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the exposition text (labels in any order), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if line.split("{")[0].split(" ")[0] == name and found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_scrapes_share_one_snapshot(api: Api, alice: httpx.AsyncClient) -> None:
    async with api.http(None) as scraper:
        first = (await scraper.get("/metrics")).text
        taken = time.monotonic()
        await alice.post("/tasks", json={"kind": "k", "queue": "snap"})
        scrapes = await asyncio.gather(*(scraper.get("/metrics") for _ in range(40)))
        if time.monotonic() - taken < m.REFRESH_S:
            # within the snapshot's life, every scrape got the very same text, without the
            # task enqueued after it was taken (a scrape used to aggregate the table itself)
            assert {r.text for r in scrapes} == {first}
            assert sample(first, "pgqueue_tasks", queue="snap", status="pending") is None

        async def refreshed() -> bool:
            text = (await scraper.get("/metrics")).text
            return sample(text, "pgqueue_tasks", queue="snap", status="pending") == 1

        await wait_for(refreshed, timeout=m.REFRESH_S + 10, interval=0.5, what="a new snapshot")


async def test_metrics_token_when_set(dsn: str, tokens: Tokens) -> None:
    async with (
        serving(fast_settings(dsn, metrics_token="scrape-me")) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/metrics")).status_code == 401
        bad = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "PGQUEUE_METRICS_TOKEN" in bad.json()["detail"]
        api_token = await http.get("/metrics", headers={"Authorization": f"Bearer {tokens.admin}"})
        assert api_token.status_code == 401  # an API token is not the scrape token
        good = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert good.status_code == 200 and "pgqueue_tasks" in good.text


async def test_task_histograms_and_outcomes_from_the_audit_trail(
    api: Api, alice: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    async with api.http(None) as scraper:
        await scraper.get("/metrics")  # this process starts counting here
        for _ in range(3):
            await alice.post("/tasks", json={"kind": "m.k", "queue": "mq"})
        claimed = (
            await worker.post(
                "/tasks/claim", json={"worker_id": "w-m", "queues": ["mq"], "limit": 3}
            )
        ).json()
        assert len(claimed) == 3
        for task in claimed[:2]:
            r = await worker.post(f"/tasks/{task['id']}/complete", json={"lease": task["lease"]})
            assert r.status_code == 200, r.text
        last = claimed[2]
        r = await worker.post(
            f"/tasks/{last['id']}/fail",
            json={
                "lease": last["lease"],
                "error": {"type": "E", "message": "no"},
                "retryable": False,
            },
        )
        assert r.status_code == 200, r.text
        labels = {"queue": "mq", "kind": "m.k"}

        async def counted() -> str | None:
            text = (await scraper.get("/metrics")).text
            done = sample(text, "pgqueue_task_outcomes_total", **labels, outcome="completed")
            return text if done == 2 else None

        text = await wait_for(counted, timeout=m.REFRESH_S * 3, interval=0.5, what="outcomes")
        assert sample(text, "pgqueue_task_outcomes_total", **labels, outcome="failed") == 1
        assert sample(text, "pgqueue_task_start_latency_seconds_count", **labels) == 3
        assert sample(text, "pgqueue_task_run_seconds_count", **labels) == 3
        assert sample(text, "pgqueue_task_run_seconds_bucket", **labels, le="+Inf") == 3
        # all three started within seconds of being enqueued
        assert sample(text, "pgqueue_task_start_latency_seconds_bucket", **labels, le="60.0") == 3


def test_label_pairs_are_capped() -> None:
    stats = TaskStats()
    for i in range(MAX_SERIES + 50):
        stats._add(stats._labels("q", f"kind-{i}"), "completed", 0, 1, 0.001)
    assert len({k[:2] for k in stats.outcomes}) == MAX_SERIES + 1
    assert stats.outcomes[("_other", "_other", "completed")] == 50


def test_a_missing_event_id_holds_the_cursor_until_its_grace_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stats = TaskStats()
    stats.after = 10
    now = [100.0]
    monkeypatch.setattr(m.time, "monotonic", lambda: now[0])
    assert stats._unbroken([11, 12, 14, 15]) == 12  # 13 may still commit
    stats.after = 12
    now[0] += m.GAP_GRACE_S + 1
    assert stats._unbroken([14, 15]) == 15  # 13 never came: rolled back
