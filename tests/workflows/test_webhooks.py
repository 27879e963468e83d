"""Webhooks (SPEC §13) against a real HTTP receiver on 127.0.0.1: signed, retried after
failures through pgqueue's own queue, one delivery per final event; and the address rules."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import pytest

from pgqueue.errors import InvalidInput
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status
from pgqueue.webhooks import verify
from pgqueue.worker.handlers import App
from pgqueue.worker.remote import RemoteWorker
from pgqueue.worker.webhooks import with_webhooks
from tests.api.conftest import Api
from tests.helpers import ROOT, fast_settings, running_worker, stop_processes, wait_for

SECRET = "s3cret"


@pytest.fixture
def api_settings(dsn: str) -> Settings:
    """The server of these tests accepts callbacks to the receiver on 127.0.0.1."""
    return fast_settings(dsn, webhook_allow_hosts="127.0.0.1")


class Receiver:
    """Answers 500 to the first delivery of each event, 200 after; checks every signature."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, Any] = {}
        self.bad_signatures = 0
        self.lock = threading.Lock()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            event_id = self.headers["Pgqueue-Event-Id"]
            with state.lock:
                if not verify(SECRET, self.headers["Pgqueue-Signature"], body):
                    state.bad_signatures += 1
                state.attempts[event_id] += 1
                ok = state.attempts[event_id] > 1
                if ok:
                    state.accepted[event_id] += 1
                    state.bodies[event_id] = msgspec.json.decode(body)
            self.send_response(200 if ok else 500)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


app = App()


@app.task("job")
async def job(ctx: Any, payload: dict[str, Any]) -> Any:
    if payload.get("fail"):
        raise ValueError("no")
    return {"done": True}


async def test_deliveries_are_signed_retried_and_not_duplicated(
    dsn: str, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    settings = fast_settings(dsn, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1")
    async with Queue(settings=settings) as queue:
        tasks = [
            await queue.enqueue("job", {}, callback_url=url),
            await queue.enqueue("job", {"fail": True}, callback_url=url, max_retries=0),
            await queue.enqueue("job", {}, callback_url=url, queue="later"),
        ]
        await queue.cancel(tasks[2].id)  # a cancelled task is final too
        async with running_worker(app, settings):
            for t in tasks:
                await queue.wait(t.id, timeout_s=30)

            async def delivered() -> bool:
                return len(state.accepted) == 3

            await wait_for(delivered, timeout=90, what="three deliveries")
            # a finished task written to again (here by hand) is not delivered again
            async with queue.pool.connection() as conn:
                await conn.execute(
                    "UPDATE pgqueue.tasks SET tags = tags || '{again}' WHERE id = ANY(%s)",
                    ([t.id for t in tasks],),
                )

            # The receiver answering comes before the worker records the delivery's outcome.
            async def recorded() -> bool:
                page = await queue.list(queue="pgqueue.webhooks")
                return all(t.status is not Status.RUNNING for t in page.items)

            await wait_for(recorded, timeout=30, what="the deliveries' outcomes recorded")
            deliveries = await queue.list(queue="pgqueue.webhooks")
    assert state.bad_signatures == 0
    assert set(state.accepted.values()) == {1}  # no event delivered twice
    assert set(state.attempts.values()) == {2}  # each failed once, then retried
    by_task = {b["task"]["id"]: b for b in state.bodies.values()}
    assert {(by_task[str(t.id)]["event"], by_task[str(t.id)]["task"]["status"]) for t in tasks} == {
        ("completed", "completed"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
    }
    for event_id, body in state.bodies.items():
        assert body["type"] == "task" and str(body["event_id"]) == event_id
    assert [t.status for t in deliveries.items] == [Status.COMPLETED] * 3


async def test_address_rules(queue: Queue, settings: Settings, dsn: str) -> None:
    for url in (
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "ftp://example.com/x",
        "http://example.com/" + "a" * 2048,
    ):
        with pytest.raises(InvalidInput, match="callback_url"):
            await queue.enqueue("job", {}, callback_url=url)
    with pytest.raises(InvalidInput, match=r"tasks\[1\].callback_url"):
        await queue.enqueue_many(
            [{"kind": "job"}, {"kind": "job", "callback_url": "http://192.168.0.1/"}]
        )
    with pytest.raises(InvalidInput, match="reserved"):
        await queue.enqueue("job", {}, queue="pgqueue.webhooks")
    allowed = fast_settings(dsn, webhook_allow_hosts="127.0.0.1, localhost")
    async with Queue(settings=allowed) as q:
        t = await q.enqueue("job", {}, callback_url="http://localhost:9/x")
        assert t.callback_url == "http://localhost:9/x"


async def test_http_refuses_private_targets(alice: httpx.AsyncClient) -> None:
    r = await alice.post("/tasks", json={"kind": "job", "callback_url": "http://10.0.0.1/"})
    assert r.status_code == 400 and "callback_url" in r.json()["detail"]
    r = await alice.post("/tasks", json={"kind": "job", "queue": "pgqueue.webhooks"})
    assert r.status_code == 400 and "queue" in r.json()["detail"]


async def test_tasks_that_end_without_running_are_delivered(
    dsn: str, receiver: tuple[Receiver, str]
) -> None:
    """Created cancelled (its dependency had failed), cancelled while blocked, cancelled
    down the graph: final states all, each delivered once like any other (SPEC §13)."""
    state, url = receiver
    settings = fast_settings(dsn, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1")
    async with Queue(settings=settings) as queue:
        gone = await queue.cancel((await queue.enqueue("job", {}, queue="held")).id)
        born_cancelled = await queue.enqueue("job", {}, depends_on=[gone.id], callback_url=url)
        assert born_cancelled.status == Status.CANCELLED
        held = await queue.enqueue("job", {}, queue="held")  # no worker serves "held"
        blocked = await queue.enqueue("job", {}, depends_on=[held.id], callback_url=url)
        below = await queue.enqueue("job", {}, depends_on=[blocked.id], callback_url=url)
        assert (blocked.status, below.status) == (Status.BLOCKED, Status.BLOCKED)
        await queue.cancel(blocked.id)
        async with running_worker(app, settings):

            async def delivered() -> bool:
                return len(state.accepted) == 3

            await wait_for(delivered, timeout=90, what="three deliveries")
    assert state.bad_signatures == 0 and set(state.accepted.values()) == {1}
    by_task = {b["task"]["id"]: b for b in state.bodies.values()}
    assert set(by_task) == {str(born_cancelled.id), str(blocked.id), str(below.id)}
    for body in by_task.values():
        assert (body["event"], body["task"]["status"]) == ("cancelled", "cancelled")
    assert by_task[str(born_cancelled.id)]["task"]["error"]["type"] == "dependency_failed"
    assert by_task[str(below.id)]["task"]["error"]["dependency"] == str(blocked.id)


def remote_worker_process(api: Api, **env: str) -> subprocess.Popen[bytes]:
    """``pgqueue worker --url --token``: no PGQUEUE_* from the test's environment (no DSN)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "worker",
         "tests.workflows.test_webhooks:app", "--url", api.url, "--token", api.tokens.worker,
         "--concurrency", "2"],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


async def test_remote_worker_delivers(api: Api, receiver: tuple[Receiver, str]) -> None:
    """A deployment whose only worker is remote (HTTP, no database credentials) gets its
    webhooks: the remote worker runs the built-in handler with its own secret."""
    state, url = receiver
    proc = remote_worker_process(
        api, PGQUEUE_WEBHOOK_SECRET=SECRET, PGQUEUE_WEBHOOK_ALLOW_HOSTS="127.0.0.1"
    )
    try:
        async with api.client(api.tokens.alice) as alice:
            done = await alice.submit("job", {}, callback_url=url)
            failed = await alice.submit("job", {"fail": True}, max_retries=0, callback_url=url)
            for t in (done, failed):
                await alice.wait(t.id, timeout_s=30)

            async def delivered() -> bool:
                assert proc.poll() is None, "the remote worker exited"
                return len(state.accepted) == 2

            await wait_for(delivered, timeout=90, what="two deliveries by the remote worker")
    finally:
        assert stop_processes([proc]) == [0]
    assert state.bad_signatures == 0
    assert set(state.accepted.values()) == {1} and set(state.attempts.values()) == {2}
    by_task = {b["task"]["id"]: b["event"] for b in state.bodies.values()}
    assert by_task == {str(done.id): "completed", str(failed.id): "failed"}


async def test_a_worker_without_secret_takes_no_deliveries(api: Api, dsn: str) -> None:
    """Unsigned it could only claim deliveries to fail them: it leaves them to one that can."""
    bare = fast_settings(dsn)
    assert with_webhooks(app, None, bare)[1] is None
    async with api.client(api.tokens.worker) as client:
        assert "pgqueue.webhooks" not in RemoteWorker(app, client, settings=bare).queues
        signing = fast_settings(dsn, webhook_secret=SECRET)
        assert "pgqueue.webhooks" in RemoteWorker(app, client, settings=signing).queues
        off = fast_settings(dsn, webhook_secret=SECRET, webhooks=False)
        assert "pgqueue.webhooks" not in RemoteWorker(app, client, settings=off).queues
