"""The built-in ``command`` kind with real subprocesses and a real worker (SPEC §6)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import pgqueue
from pgqueue.queue import Queue
from pgqueue.settings import Settings
from pgqueue.tasks import Status, Task
from pgqueue.worker.command import OUTPUT_CAP, TEXT_TAIL, register_command
from pgqueue.worker.loop import Worker
from tests.helpers import fast_settings, running_worker, wait_for, worker_process

PY = sys.executable

# A program that starts a grandchild ignoring SIGTERM, writes both pids, then sleeps: only a
# SIGKILL to the whole process group stops everything it started.
TREE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def command_app() -> pgqueue.App:
    app = pgqueue.App()
    register_command(app, grace_s=1.0)
    return app


@pytest.fixture
def fast(dsn: str) -> Settings:
    return fast_settings(dsn)


@pytest.fixture
async def worker(fast: Settings) -> AsyncIterator[Worker]:
    async with running_worker(command_app(), fast, concurrency=4) as w:
        yield w


async def run(queue: Queue, payload: dict[str, Any], **fields: Any) -> Task:
    task = await queue.enqueue("command", payload, **fields)
    return await queue.wait(task.id, timeout_s=60)


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped (it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def read_if_written(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def pids_from(path: Path) -> list[int]:
    async def written() -> str | None:
        return read_if_written(path)

    text = await wait_for(written, what=f"{path} to be written")
    assert text is not None
    return [int(p) for p in text.split()]


@pytest.mark.usefixtures("worker")
async def test_json_stdout_becomes_the_result(queue: Queue) -> None:
    done = await run(queue, {"argv": [PY, "-c", "import json; print(json.dumps({'ok': [1, 2]}))"]})
    assert done.status is Status.COMPLETED
    assert done.result == {"ok": [1, 2]}
    assert done.exit_code == 0


@pytest.mark.usefixtures("worker")
async def test_other_stdout_is_kept_as_text(queue: Queue) -> None:
    done = await run(queue, {"argv": ["echo", "hello", "world"]})
    assert done.status is Status.COMPLETED
    assert done.result == {"stdout": "hello world\n"}


@pytest.mark.usefixtures("worker")
async def test_stdin_env_cwd_and_task_identity_reach_the_program(
    queue: Queue, tmp_path: Path
) -> None:
    script = (
        "import json, os, sys; print(json.dumps({'stdin': sys.stdin.read(), 'cwd': os.getcwd(),"
        " 'greeting': os.environ['GREETING'], 'task': os.environ['PGQUEUE_TASK_ID'],"
        " 'attempt': os.environ['PGQUEUE_TASK_ATTEMPT']}))"
    )
    task = await queue.enqueue(
        "command",
        {
            "argv": [PY, "-c", script],
            "stdin": "piped in",
            "env": {"GREETING": "hi"},
            "cwd": str(tmp_path),
        },
    )
    done = await queue.wait(task.id, timeout_s=60)
    assert done.result == {
        "stdin": "piped in",
        "cwd": str(tmp_path),
        "greeting": "hi",
        "task": str(task.id),
        "attempt": "1",
    }


@pytest.mark.usefixtures("worker")
async def test_the_program_gets_a_clean_environment(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: the worker's PGQUEUE_DSN (and any other secret) is not inherited; PATH, HOME,
    LANG, the task's env and its identity are all the program sees."""
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql://worker:s3cret@db/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    script = "import json, os; print(json.dumps(dict(os.environ)))"
    done = await run(queue, {"argv": [PY, "-c", script], "env": {"GREETING": "hi"}})
    env = msgspec.convert(done.result, dict[str, str])  # json.dumps(os.environ)
    assert "PGQUEUE_DSN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["GREETING"] == "hi" and env["LANG"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"]
    # nothing else: the three basics, the task's env, the task's identity (and whatever
    # the interpreter itself sets at start-up, such as LC_CTYPE)
    allowed = {"PATH", "HOME", "LANG", "GREETING", "PGQUEUE_TASK_ID", "PGQUEUE_TASK_ATTEMPT"}
    assert set(env) - allowed - {"PGQUEUE_QUEUE", "LC_CTYPE"} == set()


@pytest.mark.usefixtures("worker")
async def test_non_zero_exit_is_retried_and_records_exit_code_and_stderr_tail(
    queue: Queue,
) -> None:
    argv = ["sh", "-c", "echo starting; echo 'first line' >&2; echo 'it broke' >&2; exit 3"]
    done = await run(queue, {"argv": argv}, max_retries=1)
    assert done.status is Status.FAILED
    assert done.attempts == 2  # retried once, as a retryable failure
    assert done.exit_code == 3
    assert done.error is not None
    assert done.error["type"] == "CommandFailed"
    assert done.error["retryable"] is True
    assert done.error["message"].endswith("sh exited with 3; stderr:\nfirst line\nit broke")
    events = [e.event for e in await queue.events(done.id)]
    assert events.count("retry_scheduled") == 1


@pytest.mark.usefixtures("worker")
async def test_retry_on_failure_false_fails_at_once(queue: Queue) -> None:
    done = await run(queue, {"argv": ["false"], "retry_on_failure": False}, max_retries=3)
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.exit_code == 1
    assert done.error is not None
    assert done.error["retryable"] is False


@pytest.mark.usefixtures("worker")
async def test_a_missing_program_fails_permanently(queue: Queue) -> None:
    done = await run(queue, {"argv": ["/no/such/program"]}, max_retries=3)
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None
    assert "/no/such/program" in done.error["message"]


@pytest.mark.usefixtures("worker")
async def test_an_invalid_payload_is_permanent(queue: Queue) -> None:
    done = await run(queue, {"argv": "rm -rf /"}, max_retries=3)  # a shell string: refused
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None
    assert done.error["type"] == "invalid_payload"


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("where", ["payload", "task"])
async def test_timeout_kills_the_whole_process_group(
    queue: Queue, tmp_path: Path, where: str
) -> None:
    pidfile = tmp_path / "pids"
    payload: dict[str, Any] = {"argv": [PY, "-c", TREE, str(pidfile)]}
    fields: dict[str, Any] = {"max_retries": 0}
    if where == "payload":
        payload["timeout_s"] = 2.0
    else:
        fields["timeout_s"] = 2.0
    task = await queue.enqueue("command", payload, **fields)
    leader, grandchild = await pids_from(pidfile)
    done = await queue.wait(task.id, timeout_s=60)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error["type"] == "timeout"
    # The grandchild ignored SIGTERM: it is gone only because the group got SIGKILL.
    assert gone(leader)
    assert gone(grandchild)


@pytest.mark.usefixtures("worker")
async def test_cancel_stops_the_program_and_its_children(queue: Queue, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    task = await queue.enqueue("command", {"argv": [PY, "-c", TREE, str(pidfile)]})
    leader, grandchild = await pids_from(pidfile)
    await queue.cancel(task.id)
    done = await queue.wait(task.id, timeout_s=60)
    assert done.status is Status.CANCELLED
    assert gone(leader)
    assert gone(grandchild)


@pytest.mark.usefixtures("worker")
async def test_leftover_processes_are_stopped_when_the_program_exits(
    queue: Queue, tmp_path: Path
) -> None:
    """A program that backgrounds a child and exits does not leave it running."""
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}; echo '{{}}'"]
    done = await run(queue, {"argv": argv})
    assert done.status is Status.COMPLETED
    assert done.result == {}
    assert gone(int(pidfile.read_text()))


@pytest.mark.usefixtures("worker")
async def test_output_is_capped_to_its_tail(queue: Queue) -> None:
    size = 3 * OUTPUT_CAP
    script = f"import sys; sys.stdout.write('x' * {size - 3} + 'END')"
    done = await run(queue, {"argv": [PY, "-c", script]})
    assert done.status is Status.COMPLETED
    assert done.result["stdout_bytes"] == size
    assert len(done.result["stdout"]) == TEXT_TAIL
    assert done.result["stdout"].endswith("END")


async def test_workers_without_allow_command_never_claim_command_tasks(
    fast: Settings, queue: Queue
) -> None:
    app = pgqueue.App()

    @app.task("noop")
    async def noop(ctx: pgqueue.Context, payload: Any) -> None:
        return None

    command = await queue.enqueue("command", {"argv": ["true"]})
    async with running_worker(app, fast):
        other = await queue.enqueue("noop")
        assert (await queue.wait(other.id, timeout_s=60)).status is Status.COMPLETED
        still = await queue.get(command.id)
    assert still.status is Status.PENDING
    assert still.attempts == 0


@pytest.mark.slow
async def test_pgqueue_worker_allow_command_runs_them(fast: Settings, queue: Queue) -> None:
    """``pgqueue worker APP --allow-command`` in a real process runs command tasks."""
    process = worker_process(fast, "tests.worker.apps:app", "--allow-command")
    try:
        task = await queue.enqueue("command", {"argv": [PY, "-c", "print(6 * 7)"]})
        done = await queue.wait(task.id, timeout_s=60)
        assert done.status is Status.COMPLETED
        assert done.result == 42
        assert done.exit_code == 0
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
