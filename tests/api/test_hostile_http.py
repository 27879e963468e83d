"""Issue 9, the HTTP side: what a hostile tenant tried against a real server, and what it
must get instead — 400s naming the field, 403s and scoped counts, 413s that never read the
body whole, a token check that costs the database nothing for bad tokens."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest

from pgqueue.api.auth import new_token
from pgqueue.api.body import MAX_JSON_DEPTH, too_deep
from pgqueue.settings import Settings
from tests.api.conftest import Api, Tokens, free_port, serve_process, wait_healthy


def nested_json(depth: int) -> bytes:
    """``nested(depth)`` as JSON text, built by hand: encoders recurse too."""
    opens = b"".join(b"[" if i % 2 else b'{"a":' for i in reversed(range(depth)))
    closes = b"".join(b"]" if i % 2 else b"}" for i in range(depth))
    return opens + b"1" + closes


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


# -- item 11: 500s -> 400s naming the field ------------------------------------------------


@pytest.mark.parametrize("cursor", ["%C2%B2", "%D9%A3", "99999999999999999999", "-1", "1%201"])
async def test_a_bad_cursor_is_a_400_naming_it(alice: httpx.AsyncClient, cursor: str) -> None:
    r = await alice.get(f"/tasks?cursor={cursor}")
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("cursor"), r.json()


async def test_a_lease_with_unicode_digits_is_a_400(worker: httpx.AsyncClient) -> None:
    tid = "00000000-0000-0000-0000-000000000000"
    r = await worker.post(f"/tasks/{tid}/heartbeat", json={"lease": "\u00b2:w"})
    assert r.status_code == 400 and r.json()["detail"].startswith("lease"), r.text


async def test_json_nested_too_deep_is_a_400_naming_the_field(alice: httpx.AsyncClient) -> None:
    # Deeper than the decoder's own recursion limit: it used to be msgspec's RecursionError.
    r = await alice.post("/tasks", content=b"[" * 1000 + b"]" * 1000)
    assert r.status_code == 400 and r.json()["detail"].startswith("body"), r.text
    r = await alice.post("/tasks", content=b'{"kind":"k","payload":' + nested_json(1000) + b"}")
    assert r.status_code == 400 and "nested deeper" in r.json()["detail"], r.text
    # Within what the decoder survives, but over the bound: named down to the field.
    r = await alice.post("/tasks", json={"kind": "k", "payload": nested(MAX_JSON_DEPTH)})
    assert r.status_code == 400 and r.json()["detail"].startswith(
        "payload[0].a[0].a[0]…: JSON nested"
    ), r.text
    batch = {"tasks": [{"kind": "k"}, {"kind": "k", "payload": nested(300)}]}
    r = await alice.post("/tasks/batch", json=batch)
    assert r.status_code == 400 and r.json()["detail"].startswith("tasks[1].payload"), r.text
    # Just inside the bound is stored and reads back.
    ok = await alice.post("/tasks", json={"kind": "k", "payload": nested(MAX_JSON_DEPTH - 2)})
    assert ok.status_code == 201, ok.text
    assert (await alice.get(f"/tasks/{ok.json()['id']}")).json()["payload"] == nested(
        MAX_JSON_DEPTH - 2
    )
    for method, path in [
        ("POST", "/tasks/claim"),
        ("PATCH", "/queues/q"),
        ("POST", "/schedules"),
        ("POST", "/tasks/00000000-0000-0000-0000-000000000000/complete"),
    ]:
        r = await alice.request(method, path, content=b'{"x":' + nested_json(2000) + b"}")
        assert r.status_code == 400, (path, r.text)


def test_too_deep_names_the_path_and_stops_at_the_limit() -> None:
    assert msgspec.json.decode(nested_json(7)) == nested(7)
    assert too_deep({"a": [1, {"b": 2}]}, limit=3) is None
    assert too_deep({"a": [1, {"b": [3]}]}, limit=3) == "a[1].b"
    assert too_deep([[[[]]]], limit=3) == "[0][0][0]"
    assert too_deep(nested(5000)) is not None  # far deeper than the limit: no RecursionError


# -- role scoping (SPEC §4) -----------------------------------------------------------------


async def test_users_see_only_their_own_queue_counts_and_no_workers_or_schedules(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    worker: httpx.AsyncClient,
    admin: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        assert (await alice.post("/tasks", json={"kind": "k", "queue": "shared"})).is_success
    assert (await bob.post("/tasks", json={"kind": "k", "queue": "shared"})).is_success
    assert (await bob.post("/tasks", json={"kind": "k", "queue": "bobs"})).is_success
    mine = {q["name"]: q for q in (await alice.get("/queues")).json()}
    assert set(mine) == {"shared"} and mine["shared"]["pending"] == 3
    theirs = {q["name"]: q for q in (await bob.get("/queues")).json()}
    assert set(theirs) == {"shared", "bobs"} and theirs["shared"]["pending"] == 1
    everything = {q["name"]: q for q in (await admin.get("/queues")).json()}
    assert everything["shared"]["pending"] == 4
    as_worker = {q["name"]: q["pending"] for q in (await worker.get("/queues")).json()}
    assert as_worker == {name: q["pending"] for name, q in everything.items()}
    stats = (await alice.get("/stats")).json()
    assert stats["tasks"] == {"pending": 3} and [u["user_id"] for u in stats["by_user"]] == [
        "alice"
    ]
    for path in ("/workers", "/schedules", "/schedules/nightly"):
        r = await alice.get(path)
        assert r.status_code == 403 and r.json()["detail"].startswith("role"), (path, r.text)
    assert (await worker.get("/workers")).status_code == 200
    assert (await worker.get("/schedules")).status_code == 200
    assert (await admin.get("/schedules")).status_code == 200


# -- auth -----------------------------------------------------------------------------------


def xact_commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_bad_tokens_cost_the_database_nothing_after_the_first_look(
    api: Api, dsn: str
) -> None:
    unknown = new_token()
    async with api.http(unknown) as bad, api.http("not-a-pgqueue-token") as junk:
        assert (await bad.get("/tasks")).status_code == 401  # the one look
        await asyncio.sleep(1.2)  # the statistics collector flushes at most once a second
        before = xact_commits(dsn)
        for client in (bad, junk):
            replies = await asyncio.gather(*(client.get("/tasks") for _ in range(200)))
            assert {r.status_code for r in replies} == {401}
        await asyncio.sleep(1.2)
        # 400 refused requests; the few transactions are the reads above and the server's
        # own background loops (reaper, scheduler), not one per request.
        assert xact_commits(dsn) - before < 40


async def test_a_live_token_is_stamped_at_most_once_a_minute(api: Api, dsn: str) -> None:
    def last_used() -> object:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT last_used_at FROM pgqueue.api_tokens WHERE user_id = 'alice'"
            ).fetchone()
        assert row is not None
        return row[0]

    from pgqueue.api.auth import Authenticator
    from pgqueue.db.pool import create_pool

    pool = create_pool(dsn, min_size=1, max_size=2)
    await pool.open(wait=True)
    try:
        auth = Authenticator(pool, ttl_s=0.01)
        await auth.authenticate(api.tokens.alice)
        first = last_used()
        assert first is not None
        await asyncio.sleep(0.05)
        await auth.authenticate(api.tokens.alice)
        assert auth.lookups == 2 and last_used() == first
    finally:
        await pool.close()


async def test_query_token_only_on_websocket_and_sse_routes(api: Api) -> None:
    from websockets.asyncio.client import connect as ws_connect

    async with api.http(None) as anon:
        for path in ("/tasks", "/queues", "/stats", "/workers"):
            r = await anon.get(path, params={"token": api.tokens.admin})
            assert r.status_code == 401, (path, r.text)
    async with ws_connect(f"{api.ws_url}?token={api.tokens.alice}") as ws:
        await ws.send('{"op": "subscribe", "all": true}')
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(reply, str) and "subscribed" in reply


# -- body size (PGQUEUE_MAX_BODY_BYTES) ------------------------------------------------------


async def send_oversize(port: int, token: str, size: int, *, chunked: bool) -> int:
    """POST a ``size``-byte batch body over a raw socket, as fast as the server takes it;
    returns the status the server answered with (it may answer before the body is sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    writer.write(
        f"POST /tasks/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
    )
    piece = b'{"kind":"k","payload":"' + b"x" * 1_000_000 + b'"},'
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n"))

    def frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data

    async def body() -> None:
        writer.write(frame(b'{"tasks":['))
        sent = 0
        while sent < size and not answer.done():
            writer.write(frame(piece))
            sent += len(piece)
            await writer.drain()

    with contextlib.suppress(ConnectionError):
        await body()
    status = int((await asyncio.wait_for(answer, 60)).split()[1])
    writer.close()
    return status


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc for RSS")
async def test_oversize_bodies_are_413_before_being_read_whole(
    api_settings: Settings, tokens: Tokens, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    proc = serve_process(api_settings, port)
    processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, proc)
    token = tokens.alice
    baseline = peak_rss_mb(proc.pid)
    started = time.monotonic()
    statuses = await asyncio.gather(
        *(send_oversize(port, token, 60_000_000, chunked=i % 2 == 1) for i in range(4))
    )
    assert statuses == [413, 413, 413, 413]
    # Four 60 MB bodies refused: the process grew by about what it buffered before the
    # limit (16 MiB each at most), not by the bodies (it used to reach 1.6 GB).
    assert peak_rss_mb(proc.pid) - baseline < 4 * 16 + 60, (baseline, peak_rss_mb(proc.pid))
    assert time.monotonic() - started < 30
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.post(
            "/tasks",
            content=b"x" * (17 * 1024 * 1024),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 413 and r.json()["detail"].startswith("body"), r.text
        r = await http.post(
            "/tasks", json={"kind": "k"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 201  # and the server is fine
