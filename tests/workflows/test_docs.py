"""docs/workflows.md's planner runs as written: a graph in one request, dependency results,
an approval signal, a signed webhook to the caller, progress followed over the stream."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pgqueue.settings import Settings
from tests.api.conftest import Api
from tests.helpers import fast_settings, running_worker, wait_for
from tests.workflows.test_webhooks import SECRET, Receiver, receiver

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "workflows.md"
__all__ = ["receiver"]  # the fixture, used by name below


@pytest.fixture
def api_settings(dsn: str) -> Settings:
    """The server takes the caller's 127.0.0.1 receiver as a callback_url."""
    return fast_settings(dsn, webhook_allow_hosts="127.0.0.1")


async def test_the_planner_example_runs(api: Api, receiver: tuple[Receiver, str], dsn: str) -> None:
    state, url = receiver
    example = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)[0]
    ns: dict[str, Any] = {}
    exec(compile(example, str(DOC), "exec"), ns)
    settings = fast_settings(dsn, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1")
    async with running_worker(ns["app"], settings), api.client(api.tokens.alice) as client:
        tasks = await ns["start"](client, "solar roofs", url)
        assert [t.status for t in tasks] == ["pending", "pending", "blocked"]
        seen = await ns["follow"](client, [t.id for t in tasks], "waiting")
        assert "waiting for approval" in seen
        await client.signal(tasks[2].id, "approval", {"ok": True, "by": "ana"})
        done = await client.wait(tasks[2].id, timeout_s=60)

        async def hooked() -> bool:
            return any(b["task"]["id"] == str(done.id) for b in state.bodies.values())

        await wait_for(hooked, timeout=60, what="the caller's webhook")
    assert done.result == {
        "text": "notes on risks of solar roofs + notes on solar roofs",
        "approved_by": "ana",
    }
    (body,) = state.bodies.values()
    assert (body["event"], body["task"]["status"]) == ("completed", "completed")
    assert state.bad_signatures == 0
