"""``pgqueue watch ID`` and ``enqueue --wait``: a bar on a terminal, lines in a pipe, and the
exit status of SPEC §8, against a real worker."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
from typing import Any

import msgspec
import pytest

from pgqueue import demo
from pgqueue.queue import Queue
from pgqueue.tasks import Status
from tests.helpers import ROOT, fast_settings, running_worker, wait_for

pytestmark = pytest.mark.slow

AGENT = {"goal": "watch", "steps": 3, "step_s": 0.3}


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=dsn, PYTHONPATH=str(ROOT), COLUMNS="100")
    return env


async def _pgqueue(dsn: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue",
        "--log-level",
        "WARNING",
        *args,
        env=_env(dsn),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_enqueue_wait_in_a_pipe_prints_plain_lines_and_exits_0(dsn: str) -> None:
    async with running_worker(demo.app, fast_settings(dsn)):
        code, out, err = await _pgqueue(
            dsn, "enqueue", "demo.agent", msgspec.json.encode(AGENT).decode(), "--wait", "60"
        )
    assert code == 0, err
    task = msgspec.json.decode(out.splitlines()[-1])
    assert task["status"] == "completed"
    assert "\x1b" not in err and "\r" not in err  # no terminal control in a log
    lines = err.splitlines()
    assert lines[0].startswith(f"task {task['id']} (demo.agent on default)")
    assert any(re.search(r" started \(running, attempt 1\)$", line) for line in lines)
    for n, percent in ((1, 33), (2, 67), (3, 100)):
        assert any(f"progress (running, attempt 1) {percent}% step {n}/3" in x for x in lines)
    assert lines[-1] == f"task {task['id']}: completed"


async def test_watch_on_a_terminal_draws_a_bar_that_reaches_100(dsn: str, queue: Queue) -> None:
    task = await queue.enqueue("demo.agent", {**AGENT, "step_s": 0.5})
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue",
        "--log-level",
        "WARNING",
        "watch",
        str(task.id),
        env=_env(dsn),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    screen: list[bytes] = []
    reader = asyncio.create_task(asyncio.to_thread(_read_all, master, screen))

    async def drawn_pending() -> bool:
        return b"pending" in b"".join(screen)

    try:
        # the bar is up before the task starts, so every step can be seen
        await wait_for(drawn_pending, timeout=60, what="the first frame")
        async with running_worker(demo.app, fast_settings(dsn)):
            code = await asyncio.wait_for(proc.wait(), timeout=90)
    finally:
        await asyncio.wait_for(reader, timeout=30)
        os.close(master)
    text = b"".join(screen).decode(errors="replace")
    assert code == 0, text
    frames = text.split("\r\x1b[2K")[1:]  # each redraw erases the line first
    assert "pending" in frames[0]
    # percent, status, the latest event (progress or the checkpoint right after it), message
    assert any(re.search(r"█+░+ +(33|67)% running · \w+ · step [12]/3", f) for f in frames), frames
    assert "█" * 10 in frames[-1] and "100% completed" in frames[-1], frames[-1]
    assert f"task {task.id}: completed" in text


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed, the process has ended
            return
        if not data:
            return
        into.append(data)


async def test_watch_exits_1_when_the_task_fails(dsn: str, queue: Queue) -> None:
    task = await queue.enqueue("demo.fail", {"permanent": True})
    async with running_worker(demo.app, fast_settings(dsn)):
        code, out, err = await _pgqueue(dsn, "watch", str(task.id))
    assert code == 1, err
    assert msgspec.json.decode(out)["status"] == "failed"
    assert err.splitlines()[-1] == f"task {task.id}: failed: Permanent: asked to fail for good"


async def test_watch_exits_2_when_the_task_is_cancelled(dsn: str, queue: Queue) -> None:
    task = await queue.enqueue("demo.agent", {"goal": "x", "steps": 100, "step_s": 0.2})
    async with running_worker(demo.app, fast_settings(dsn)):
        watching = asyncio.create_task(_pgqueue(dsn, "watch", str(task.id)))

        async def progressing() -> Any:
            return (await queue.get(task.id)).progress

        await wait_for(progressing, timeout=30, what="the task's first progress")
        await queue.cancel(task.id)
        code, out, err = await watching
    assert code == 2, err
    assert msgspec.json.decode(out)["status"] == "cancelled"
    assert "cancel_requested" in err and err.endswith(f"task {task.id}: cancelled\n")


async def test_watch_exits_3_when_the_wait_runs_out(dsn: str, queue: Queue) -> None:
    task = await queue.enqueue("demo.echo", {})  # no worker: it stays pending
    code, out, err = await _pgqueue(dsn, "watch", str(task.id), "--timeout", "0.5")
    assert code == 3, err
    assert msgspec.json.decode(out)["status"] == Status.PENDING
    code, _, err = await _pgqueue(dsn, "watch", "not-a-uuid")
    assert code == 2 and "id" in err


def test_control_characters_of_a_message_never_reach_the_terminal() -> None:
    from pgqueue.cli.watch import printable

    assert printable("step 1\x1b[2J\r\nnext\x07") == "step 1 [2J  next "
