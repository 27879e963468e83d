"""A bounded property-based pass over the API: arbitrary JSON bodies and query strings,
built by hypothesis from the fields the endpoints know, must never produce a 5xx."""

from __future__ import annotations

import time
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api

FIELDS = [
    "kind", "payload", "queue", "priority", "run_at", "delay_s", "max_retries", "timeout_s",
    "backoff_base_s", "backoff_max_s", "idempotency_key", "user_id", "tags", "parent_id",
    "tasks", "worker_id", "queues", "limit", "wait_s", "kinds", "lease", "progress",
    "checkpoint", "usage", "result", "error", "retryable", "retry_in_s", "exit_code",
    "percent", "message", "token", "data", "type", "input_tokens", "cost",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["default", "k", "1:w", "2026-01-01T00:00:00Z", "\u0000", "-1", "nan"])
    | st.uuids().map(str)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6) | json_values
ENDPOINTS = [
    ("POST", "/tasks"),
    ("POST", "/tasks/batch"),
    ("POST", "/tasks/claim"),
    ("POST", "/tasks/{id}/heartbeat"),
    ("POST", "/tasks/{id}/complete"),
    ("POST", "/tasks/{id}/fail"),
    ("POST", "/tasks/{id}/release"),
    ("POST", "/tasks/{id}/cancel"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks"),
]
queries = st.dictionaries(
    st.sampled_from(["status", "queue", "kind", "tag", "user_id", "parent_id", "limit",
                     "cursor", "wait"]),
    st.text(max_size=12) | st.integers(-5, 1000).map(str),
    max_size=3,
)  # fmt: skip
ids = st.uuids().map(str) | st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=10,
)


def collect(n: int) -> list[tuple[str, str, Any, dict[str, str]]]:
    cases: list[tuple[str, str, Any, dict[str, str]]] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(ENDPOINTS), bodies, queries, ids)
    def draw(endpoint: tuple[str, str], body: Any, query: dict[str, str], tid: str) -> None:
        method, path = endpoint
        cases.append((method, path.replace("{id}", tid), body, query))

    draw()
    return cases


async def test_fuzzed_requests_never_get_a_5xx(api: Api) -> None:
    # `wait` is capped so a fuzzed long-poll cannot eat the time budget.
    cases = collect(600)
    deadline = time.monotonic() + 50
    async with api.http(api.tokens.admin) as admin, api.http(api.tokens.alice) as alice:
        for i, (method, path, body, query) in enumerate(cases):
            if time.monotonic() > deadline:
                break
            if "wait" in query:
                query["wait"] = "0.01"
            if isinstance(body, dict) and "wait_s" in body:
                body["wait_s"] = 0
            client: httpx.AsyncClient = alice if i % 2 else admin
            r = await client.request(
                method, path, json=body if method == "POST" else None, params=query
            )
            assert r.status_code < 500, (method, path, body, query, r.text)
            if r.status_code >= 400:
                error = r.json()
                assert error["status_code"] == r.status_code and error["detail"], error
