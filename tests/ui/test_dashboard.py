"""The web dashboard (SPEC §14) in a real Chromium, against a real ``pgqueue serve`` and a
real worker process: sign-in, live updates from /ws, actions, and what a user token sees.

Set ``PGQUEUE_UI_SCREENSHOTS=docs/img`` to write the screenshots of docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Request

from pgqueue.queue import Queue
from tests.api.conftest import free_port, serve_process, wait_healthy
from tests.helpers import ROOT, wait_for
from tests.ui.conftest import Problems, Stack, sign_in

FIRST_VIEW_LIMIT = 200 * 1024  # SPEC §14: the first view transfers at most 200 KB

# Records, in the page, when each task row or task page first showed each status: the
# test's clock for "how long after completed_at did the dashboard show it".
WATCH_STATUSES = """
() => {
  window.__seen = {};
  const note = (id, status) => {
    const seen = (window.__seen[id] ||= {});
    if (!(status in seen)) seen[status] = Date.now();
  };
  const scan = () => {
    for (const tr of document.querySelectorAll("tr[data-task]")) note(tr.dataset.task, tr.dataset.status);
    const main = document.getElementById("main");
    if (main.dataset.taskStatus) note("page", main.dataset.taskStatus);
  };
  new MutationObserver(scan).observe(document.body, {subtree: true, childList: true, attributes: true});
  scan();
}
"""


async def enqueue(http: httpx.AsyncClient, kind: str, **fields: Any) -> dict[str, Any]:
    resp = await http.post("/tasks", json={"kind": kind, **fields})
    assert resp.status_code == 201, resp.text
    task: dict[str, Any] = resp.json()
    return task


async def task_status(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    resp = await http.get(f"/tasks/{task_id}")
    assert resp.status_code == 200, resp.text
    task: dict[str, Any] = resp.json()
    return task


def row(page: Any, task_id: str, status: str | None = None) -> Any:
    selector = f'tr[data-task="{task_id}"]'
    return page.locator(selector + (f'[data-status="{status}"]' if status else ""))


async def progress_value(locator: Any) -> float:
    return float(await locator.evaluate("el => el.value"))


def screenshot_dir(tmp_path: Path) -> Path:
    target = os.environ.get("PGQUEUE_UI_SCREENSHOTS")
    path = (ROOT / target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_sign_in_shows_the_queues_and_the_first_view_is_small(
    stack: Stack, new_page: Any, problems: Problems, record_property: Any
) -> None:
    async with stack.http(stack.tokens.admin) as admin:
        await enqueue(admin, "ui.boom", queue="reports")

    page = await new_page()
    problems.allow(401, r"/queues$")
    await page.goto(f"{stack.url}/ui")
    await page.locator("#token").fill("pgq_not-a-token")
    await page.keyboard.press("Enter")
    await page.locator("#signin-error", has_text="Sign-in refused").wait_for()
    await sign_in(page, stack.url, stack.tokens.admin)
    await page.locator('#queues tr[data-queue="reports"]').wait_for()
    assert await page.locator("#who").inner_text() != "no auth (insecure)"

    # The first view, measured in a fresh browser context: everything fetched until the
    # overview shows the queues, as the bytes that crossed the network (headers included).
    page: Page = await new_page()
    sizes: list[int] = []

    async def finished(request: Request) -> None:
        measured = await request.sizes()
        sizes.append(measured["responseBodySize"] + measured["responseHeadersSize"])

    page.on("requestfinished", lambda request: asyncio.ensure_future(finished(request)))
    await sign_in(page, stack.url, stack.tokens.admin)
    await page.locator('#queues tr[data-queue="reports"]').wait_for()
    await wait_for(lambda: _settled(sizes), timeout=10, what="the first view's requests")
    total = sum(sizes)
    print(f"\ndashboard first view: {total} bytes in {len(sizes)} responses")
    record_property("first_view_bytes", total)
    assert 0 < total <= FIRST_VIEW_LIMIT

    # Signing out forgets the token: the next visit asks again.
    await page.locator("#signout").click()
    await page.locator("#token").wait_for()
    await page.reload()
    await page.locator("#token").wait_for()


async def _settled(sizes: list[int]) -> bool:
    before = len(sizes)
    await asyncio.sleep(0.3)
    return before > 0 and len(sizes) == before


async def test_a_task_goes_pending_running_completed_live(
    stack: Stack, new_page: Any, record_property: Any
) -> None:
    listing = await new_page()
    await sign_in(listing, stack.url, stack.tokens.admin)
    await listing.goto(f"{stack.url}/ui#/tasks")
    await listing.locator("#tasks").wait_for()
    await listing.evaluate(WATCH_STATUSES)
    gates = [stack.gate("one"), stack.gate("two")]
    async with stack.http(stack.tokens.admin) as admin:
        # Due in 2 s, so that the dashboard can show it pending first.
        task = await enqueue(admin, "ui.gated", payload={"gates": gates}, delay_s=2)
        tid = task["id"]

        await row(listing, tid, "pending").wait_for()
        await row(listing, tid, "running").wait_for(timeout=30_000)
        in_row = row(listing, tid).locator("progress")
        await wait_for(lambda: _equals(in_row, 33.3), what="the row's progress at 33.3")

        detail = await new_page(width=390)
        await sign_in(detail, stack.url, stack.tokens.admin)
        await detail.goto(f"{stack.url}/ui#/tasks/{tid}")
        await detail.locator('#main[data-task-status="running"]').wait_for()
        await detail.evaluate(WATCH_STATUSES)
        bar = detail.locator("#task-progress")
        await wait_for(lambda: _equals(bar, 33.3), what="the task page's progress at 33.3")

        stack.open_gate(gates[0])
        await wait_for(lambda: _equals(in_row, 66.7), what="the row's progress at 66.7")
        await wait_for(lambda: _equals(bar, 66.7), what="the task page's progress at 66.7")
        assert "waiting for gate 2" in await detail.locator("#progress-text").inner_text()

        stack.open_gate(gates[1])
        await row(listing, tid, "completed").wait_for()
        await detail.locator('#main[data-task-status="completed"]').wait_for()
        done = await task_status(admin, tid)
    completed_at = datetime.fromisoformat(done["completed_at"]).timestamp() * 1000
    in_list = (await listing.evaluate("id => window.__seen[id].completed", tid)) - completed_at
    on_page = (await detail.evaluate("() => window.__seen.page.completed")) - completed_at
    print(f"\ncompleted_at -> shown: task list {in_list:.0f} ms, task page {on_page:.0f} ms")
    record_property("completed_to_shown_ms", max(in_list, on_page))
    # SPEC §14 asks for "within a second"; the bound is generous for a loaded CI machine,
    # the printed figure is what docs/dashboard.md reports.
    assert -50 < in_list < 3000 and -50 < on_page < 3000

    # The page's other sections caught up too: result, usage, the whole timeline.
    await detail.locator("#block-result", has_text='"gates": 2').wait_for()
    await detail.locator("#block-usage", has_text="120 input tokens").wait_for()
    await detail.locator('#events li[data-event="completed"]').wait_for()
    assert await progress_value(bar) == 100

    # The overview's throughput counts it (from GET /queues, polled).
    await listing.goto(f"{stack.url}/ui#/")
    await listing.locator(".legend", has_text="completed per minute: 1").wait_for()


async def _equals(locator: Any, value: float) -> bool:
    return await progress_value(locator) == value


async def test_cancel_and_retry_from_the_task_page(
    stack: Stack, new_page: Any, problems: Problems
) -> None:
    gate = stack.gate("never")
    async with stack.http(stack.tokens.admin) as admin:
        task = await enqueue(admin, "ui.gated", payload={"gates": [gate]})
        tid = task["id"]
        page = await new_page()
        await sign_in(page, stack.url, stack.tokens.admin)
        await page.goto(f"{stack.url}/ui#/tasks/{tid}")
        await page.locator('#main[data-task-status="running"]').wait_for(timeout=30_000)
        assert await page.locator("#retry").is_hidden()

        await page.locator("#cancel").click()
        await page.locator('#main[data-task-status="cancelled"]').wait_for()
        await page.locator('#events li[data-event="cancelled"]').wait_for()
        assert (await task_status(admin, tid))["status"] == "cancelled"
        assert await page.locator("#cancel").is_hidden()

        await page.locator("#retry").click()
        await page.locator('#main[data-task-status="running"]').wait_for(timeout=30_000)
        stack.open_gate(gate)
        await page.locator('#main[data-task-status="completed"]').wait_for()
        assert (await task_status(admin, tid))["attempts"] >= 2  # 3 if a stall was reaped
        # Leaving the page leaves nothing of it behind (a late answer, its status).
        await page.goto(f"{stack.url}/ui#/tasks")
        await page.locator("#tasks").wait_for()
        assert await page.locator("#main").get_attribute("data-task-status") is None

        # The API's refusals are shown, not swallowed: a worker token may not cancel.
        other = await enqueue(admin, "ui.gated", payload={"gates": [stack.gate("later")]})
        problems.allow(403, r"/cancel$")
        worker_page = await new_page()
        await sign_in(worker_page, stack.url, stack.tokens.worker)
        await worker_page.goto(f"{stack.url}/ui#/tasks/{other['id']}")
        await worker_page.locator('#main[data-task-status="running"]').wait_for(timeout=30_000)
        await worker_page.locator("#cancel").click()
        alert = worker_page.locator("#action-error")
        await alert.filter(has_text="403").wait_for()
        assert "cannot change tasks" in await alert.inner_text()
        assert (await task_status(admin, other["id"]))["status"] == "running"
        stack.open_gate(stack.gate("later"))


async def test_a_failed_task_shows_its_traceback_and_its_family(
    stack: Stack, new_page: Any
) -> None:
    async with stack.http(stack.tokens.alice) as alice:
        task = await enqueue(alice, "ui.boom", max_retries=0)
        child = await enqueue(alice, "ui.boom", max_retries=0, parent_id=task["id"])
    page = await new_page()
    await sign_in(page, stack.url, stack.tokens.alice)
    await page.goto(f"{stack.url}/ui#/tasks/{task['id']}")
    await page.locator('#main[data-task-status="failed"]').wait_for(timeout=30_000)
    traceback = await page.locator("#traceback").inner_text()
    assert "Traceback (most recent call last)" in traceback
    assert "RuntimeError: boom: the handler failed on purpose" in traceback
    assert "boom: the handler failed on purpose" in await page.locator("#block-error").inner_text()
    assert await page.locator("#retry").is_visible()
    assert await page.locator("#cancel").is_hidden()

    # Parent and children are links, both ways.
    await page.locator(f'#children a[href="#/tasks/{child["id"]}"]').click()
    await page.locator('[data-field="id"]', has_text=child["id"]).wait_for()
    await page.locator(f'[data-field="parent_id"] a[href="#/tasks/{task["id"]}"]').click()
    await page.locator(f'#children a[href="#/tasks/{child["id"]}"]').wait_for()


async def test_a_user_token_never_shows_another_users_task(
    stack: Stack, new_page: Any, problems: Problems
) -> None:
    async with stack.http(stack.tokens.bob) as bob, stack.http(stack.tokens.alice) as alice:
        secret = await enqueue(bob, "ui.boom", queue="bobs", tags=["secret"])
        mine = await enqueue(alice, "ui.boom")
        page = await new_page()
        await sign_in(page, stack.url, stack.tokens.alice)
        await page.goto(f"{stack.url}/ui#/tasks")
        await row(page, mine["id"]).wait_for()
        assert secret["id"] not in await page.content()

        # Live: bob's new task is not pushed to alice; hers, enqueued after it, is.
        secret2 = await enqueue(bob, "ui.boom", queue="bobs")
        mine2 = await enqueue(alice, "ui.boom")
        await row(page, mine2["id"]).wait_for()
        await row(page, mine2["id"], "failed").wait_for(timeout=30_000)
        assert await row(page, secret2["id"]).count() == 0

        # Filters cannot reach bob's tasks: the API refuses, the page says why.
        problems.allow(400, r"/tasks\?")
        await page.goto(f"{stack.url}/ui#/tasks?user_id=bob")
        await page.locator(".alert", has_text="user_id").wait_for()
        await page.goto(f"{stack.url}/ui#/tasks?tag=secret")
        await page.locator("#tasks").wait_for()
        await page.get_by_text("No tasks match.").wait_for()

        # Bob's task page is "not found", as the API answers.
        problems.allow(404, secret["id"])
        await page.goto(f"{stack.url}/ui#/tasks/{secret['id']}")
        await page.locator("#not-found").wait_for()

        # Every other view shows what the API gives this token, and never bob's tasks.
        for view, path in (
            ("#/", "/queues"),
            ("#/workers", "/workers"),
            ("#/schedules", "/schedules"),
        ):
            answer = await alice.get(path)
            await page.goto(f"{stack.url}/ui{view}")
            if answer.status_code == 403:
                problems.allow(403, path + "$")
                notice = page.locator('[data-problem="forbidden"]')
                await notice.wait_for()
                assert "not available for this token" in await notice.inner_text()
            else:
                assert answer.status_code == 200
                await page.locator("h1").wait_for()
                await page.wait_for_load_state("networkidle")
            if path == "/queues":
                shown = await page.locator("#queues tbody tr").evaluate_all(
                    "rows => rows.map(r => r.dataset.queue)"
                )
                assert shown == [q["name"] for q in answer.json()]
            content = await page.content()
            assert secret["id"] not in content and secret2["id"] not in content


async def test_every_view_keyboard_narrow_screen_and_screenshots(
    stack: Stack, new_page: Any, problems: Problems, tmp_path: Path
) -> None:
    shots = screenshot_dir(tmp_path)
    async with stack.http(stack.tokens.admin) as admin:
        resp = await admin.post(
            "/schedules",
            json={"name": "nightly-report", "cron": "0 3 * * *", "task": {"kind": "ui.boom"}},
        )
        assert resp.status_code == 201, resp.text
        for n in range(3):
            gate = stack.gate(f"done-{n}")
            stack.open_gate(gate)
            await enqueue(admin, "ui.gated", payload={"gates": [gate]}, tags=["demo"])
        running = await enqueue(admin, "ui.gated", payload={"gates": [stack.gate("held")]})
        await enqueue(admin, "ui.boom", queue="default")
        waiting = await enqueue(admin, "ui.gated", queue="emails", payload={"gates": []})

        page: Page = await new_page()
        await sign_in(page, stack.url, stack.tokens.admin)

        # Keyboard: Tab reaches the navigation (after the page, from the top), with a
        # visible focus ring, and Enter follows it.
        await page.goto(f"{stack.url}/ui#/")
        await page.locator("#queues").wait_for()
        focused = None
        for _ in range(60):
            await page.keyboard.press("Tab")
            focused = await page.evaluate("() => document.activeElement.textContent")
            if focused == "Tasks":
                break
        assert focused == "Tasks"
        outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")
        await page.keyboard.press("Enter")
        await page.locator("#tasks").wait_for()
        assert page.url.endswith("#/tasks")
        await row(page, running["id"], "running").wait_for(timeout=30_000)
        await page.screenshot(path=shots / "tasks.png")

        await page.goto(f"{stack.url}/ui#/tasks/{running['id']}")
        await page.locator("#block-checkpoint").wait_for()
        await page.screenshot(path=shots / "task.png")

        # A task no worker serves: the "why" panel shows the API's reasons, if it has them.
        why = await admin.get(f"/tasks/{waiting['id']}/why")
        async with page.expect_response(lambda r: r.url.endswith("/why")) as asked:
            await page.goto(f"{stack.url}/ui#/tasks/{waiting['id']}")
        assert (await asked.value).status == why.status_code
        await page.locator('#main[data-task-status="pending"]').wait_for()
        if why.status_code == 200:
            for reason in why.json()["reasons"]:
                await page.locator(f'#why li[data-code="{reason["code"]}"]').wait_for()
        else:
            assert why.status_code == 404
            assert await page.locator("#why").is_hidden()

        # Workers: the live worker and its heartbeat age.
        await page.goto(f"{stack.url}/ui#/workers")
        await page.locator("#workers td[data-heartbeat-age]").first.wait_for()
        age = await page.locator("td[data-heartbeat-age]").first.get_attribute("data-heartbeat-age")
        assert age is not None and float(age) < 30

        # Schedules: pause and resume.
        await page.goto(f"{stack.url}/ui#/schedules")
        schedule = page.locator('tr[data-schedule="nightly-report"]')
        await schedule.get_by_role("button", name="Pause nightly-report").click()
        await schedule.get_by_role("button", name="Resume nightly-report").wait_for()
        assert "paused" in await schedule.inner_text()
        resp = await admin.get("/schedules/nightly-report")
        assert resp.json()["enabled"] is False
        await schedule.get_by_role("button", name="Resume nightly-report").click()
        await schedule.get_by_role("button", name="Pause nightly-report").wait_for()

        # Queue settings: pause "emails" and set a limit; the API's 400 is shown.
        await page.goto(f"{stack.url}/ui#/queues/emails")
        await page.locator("#queue-settings").wait_for()
        await page.locator("#q-paused").check()
        await page.locator("#q-limit").fill("4")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_text("Saved.").wait_for()
        queues = {q["name"]: q for q in (await admin.get("/queues")).json()}
        assert queues["emails"]["paused"] is True and queues["emails"]["concurrency_limit"] == 4
        problems.allow(400, r"/queues/emails$")
        await page.locator("#q-more").fill('{"no_such_setting": 1}')
        await page.get_by_role("button", name="Save").click()
        await page.locator("#settings-error", has_text="400").wait_for()

        await page.goto(f"{stack.url}/ui#/")
        await page.locator('#queues tr[data-queue="emails"]', has_text="paused").wait_for()
        await page.screenshot(path=shots / "overview.png")

    # 390 px wide: every view fits the screen (tables scroll inside their own box).
    phone = await new_page(width=390, height=844)
    await sign_in(phone, stack.url, stack.tokens.admin)
    for view in (
        "#/",
        "#/tasks",
        f"#/tasks/{running['id']}",
        "#/workers",
        "#/schedules",
        "#/queues/emails",
    ):
        await phone.goto(f"{stack.url}/ui{view}")
        await phone.locator("h1").wait_for()
        await phone.wait_for_load_state("networkidle")
        width = await phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{view} is {width} px wide"
        if view.startswith("#/tasks/"):
            await phone.screenshot(path=shots / "task-phone.png")
    stack.open_gate(stack.gate("held"))


async def test_the_stream_reconnects_and_shows_what_changed_meanwhile(
    stack: Stack,
    new_page: Any,
    problems: Problems,
    started: list[subprocess.Popen[bytes]],
) -> None:
    """The server restarts while the page is open: a task enqueued while it was down shows
    once the page is back, without a reload."""
    page = await new_page()
    await sign_in(page, stack.url, stack.tokens.admin)
    await page.goto(f"{stack.url}/ui#/tasks")
    await page.locator("#tasks").wait_for()
    async with stack.http(stack.tokens.admin) as admin:
        before = await enqueue(admin, "ui.gated", payload={"gates": []})
    await row(page, before["id"], "completed").wait_for(timeout=30_000)
    # The page keeps the last change's event_id, to resume from it (SPEC §5) on reconnect.
    assert await page.evaluate("() => state.lastEventId")
    server = started[0]
    server.terminate()
    await asyncio.to_thread(server.wait, 20)
    problems.allow_message(r"WebSocket connection to .* failed")
    problems.allow_message(r"Failed to load resource: net::ERR_CONNECTION_REFUSED")
    await page.locator('#live[data-state="off"]').wait_for()

    async with Queue(settings=stack.settings) as queue:
        gate = stack.gate("meanwhile")
        stack.open_gate(gate)
        task = await queue.enqueue("ui.gated", {"gates": [gate]})
    restarted = serve_process(stack.settings, stack.port)
    started.append(restarted)
    await wait_healthy(stack.url, restarted)
    await page.locator('#live[data-state="live"]').wait_for(timeout=30_000)
    await row(page, str(task.id), "completed").wait_for(timeout=30_000)


async def test_a_revoked_token_is_signed_out(
    stack: Stack, new_page: Any, problems: Problems
) -> None:
    page = await new_page()
    await sign_in(page, stack.url, stack.tokens.bob)
    await page.goto(f"{stack.url}/ui#/tasks")
    await page.locator("#tasks").wait_for()
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pgqueue", "token", "revoke", stack.tokens.bob[:10]],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": stack.settings.dsn},
        check=True,
        capture_output=True,
    )
    # The stream closes with 4401 once the server's token cache forgets the token (or the
    # next API call answers 401): either way the page asks for a token again.
    problems.allow(401, r".*")
    await page.locator("#signin-error", has_text="Signed out").wait_for(timeout=30_000)
    assert await page.evaluate("() => sessionStorage.getItem('pgqueue.token')") is None


def dev_process(dsn: str, port: int) -> subprocess.Popen[bytes]:
    """``pgqueue dev`` on this test's database (no embedded server) and on ``port``."""
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_PORT": str(port), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--log-level", "WARNING", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_dev_prints_the_dashboard_url_and_needs_no_token(
    dsn: str, new_page: Any, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    proc = dev_process(dsn, port)
    started.append(proc)
    assert proc.stdout is not None
    lines: list[str] = []

    async def printed_url() -> str | None:
        line = (await asyncio.to_thread(proc.stdout.readline)).decode()  # type: ignore[union-attr]
        lines.append(line)
        if not line and proc.poll() is not None:
            raise AssertionError(f"pgqueue dev exited: {''.join(lines)}")
        return line.split("dashboard on ", 1)[1].strip() if "dashboard on " in line else None

    url = await wait_for(printed_url, timeout=60, what="pgqueue dev to print the dashboard URL")
    assert url == f"http://127.0.0.1:{port}/ui"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def redirected() -> httpx.Response | None:
            try:
                return await http.get("/")
            except httpx.TransportError:
                return None

        resp = await wait_for(redirected, timeout=30, what="pgqueue dev to answer")
        assert resp.status_code == 307 and resp.headers["location"].endswith("/ui")
        await http.post("/tasks", json={"kind": "demo.echo", "payload": {"hi": 1}})

    page = await new_page()
    await page.goto(url)
    await page.locator('#queues tr[data-queue="default"]').wait_for()
    assert await page.locator("#who").inner_text() == "no auth (insecure)"
    assert await page.locator("#token").count() == 0


pytestmark = pytest.mark.timeout(180)
