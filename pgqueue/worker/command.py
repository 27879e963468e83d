"""The built-in ``command`` kind: run a program for a task (SPEC §6).

Payload: ``{"argv": [...], "env"?, "cwd"?, "stdin"?, "timeout_s"?, "retry_on_failure"?}``.
Only an argv list, never a shell string: nothing is interpreted, quoting cannot go wrong, and
a payload cannot smuggle in a second command. Registered only on workers started with
``--allow-command`` (``register_command``): anyone who may enqueue can make such a worker
run any program, so the other workers do not list the kind and never claim these tasks.

How it runs:
- in a process group of its own (``start_new_session``), so a timeout or cancel reaches
  every process it started: SIGTERM to the group, a grace period, then SIGKILL. Processes the
  program leaves behind in its group when it exits are stopped the same way;
- environment: a clean one, not the worker's — only ``PATH``, ``HOME`` and ``LANG`` are
  taken from the worker (and what ``register_command(pass_env=...)`` names), then the task's
  ``env``, then ``PGQUEUE_TASK_ID``, ``PGQUEUE_TASK_ATTEMPT`` and ``PGQUEUE_QUEUE`` so the
  program can find its own task. Whoever may enqueue chooses the program, so the worker's
  secrets (``PGQUEUE_DSN`` with its password, cloud credentials...) must not reach it;
- output is read as it comes (a full pipe would block the program) but only
  ``OUTPUT_CAP`` bytes of stdout and ``STDERR_TAIL`` of stderr are kept (the tail);
- stdout that is JSON becomes the result; anything else is ``{"stdout": <tail>}`` with the
  last ``TEXT_TAIL`` bytes, so that it fits the result limit (PGQUEUE_MAX_RESULT_BYTES,
  1 MiB by default: a result over it is failed as ``unrecordable_outcome``);
- the exit code is recorded (negative: killed by that signal). Non-zero is a retryable
  failure whose message ends with the stderr tail, or a permanent one when the payload says
  ``"retry_on_failure": false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from pgqueue.outcomes import Permanent
from pgqueue.worker.context import Context
from pgqueue.worker.handlers import App, Handler

KIND = "command"
OUTPUT_CAP = 1024 * 1024  # stdout kept (the tail): JSON results larger than this are cut
TEXT_TAIL = 64 * 1024  # of stdout that is not JSON, what the result keeps
STDERR_TAIL = 8 * 1024  # stderr kept for the error message
GRACE_S = 5.0  # between SIGTERM and SIGKILL
# The worker's variables a program gets by default: enough to find programs and to decode
# text, nothing that could hold a secret.
BASE_ENV = ("PATH", "HOME", "LANG")
_CHUNK = 64 * 1024


class CommandPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    argv: Annotated[list[str], msgspec.Meta(min_length=1)]
    env: dict[str, str] | None = None
    cwd: str | None = None
    stdin: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    retry_on_failure: bool = True


class CommandFailed(Exception):
    """The program exited non-zero; retryable. ``exit_code`` is recorded on the task."""

    def __init__(self, argv0: str, exit_code: int, stderr_tail: str) -> None:
        how = f"was killed by signal {-exit_code}" if exit_code < 0 else f"exited with {exit_code}"
        tail = f"; stderr:\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"{argv0} {how}{tail}")
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class CommandFailedPermanently(CommandFailed, Permanent):
    """The program exited non-zero and the task said not to retry."""


class _Tail:
    """Keeps the last ``cap`` bytes of a stream and how many bytes went by."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self.total += len(chunk)
            self.data += chunk
            if len(self.data) > self.cap:
                del self.data[: len(self.data) - self.cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return self.data.decode(errors="replace")


def register_command(
    app: App, *, queue: str = "default", grace_s: float = GRACE_S, pass_env: Iterable[str] = ()
) -> None:
    """Let this App's worker run ``command`` tasks (what ``--allow-command`` does).

    ``pass_env`` names more of the worker's environment variables that programs may see,
    beside ``BASE_ENV``.
    """
    inherited = (*BASE_ENV, *pass_env)

    async def run_command(ctx: Context, payload: CommandPayload) -> Any:
        return await run(ctx, payload, grace_s=grace_s, pass_env=inherited)

    app.register(
        Handler(
            kind=KIND,
            fn=run_command,
            queue=queue,
            payload_type=CommandPayload,
            is_async=True,
        )
    )


async def run(
    ctx: Context,
    payload: CommandPayload,
    *,
    grace_s: float = GRACE_S,
    pass_env: Iterable[str] = BASE_ENV,
) -> Any:
    """Run the program to its end; the result, or CommandFailed. Cancel-safe (see module)."""
    env = {
        **{name: os.environ[name] for name in pass_env if name in os.environ},
        **(payload.env or {}),
        "PGQUEUE_TASK_ID": str(ctx.task_id),
        "PGQUEUE_TASK_ATTEMPT": str(ctx.attempt),
        "PGQUEUE_QUEUE": ctx.queue,
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            *payload.argv,
            stdin=asyncio.subprocess.PIPE
            if payload.stdin is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=payload.cwd,
            env=env,
            start_new_session=True,  # its own process group: signals reach its children too
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        # A missing program or cwd will not appear by retrying: fail now, and say which.
        raise Permanent(f"cannot start {payload.argv[0]!r}: {exc}") from exc
    ctx.log.info("task %s: started %s (pid %d)", ctx.task_id, payload.argv[0], proc.pid)
    stdout, stderr = _Tail(OUTPUT_CAP), _Tail(STDERR_TAIL)
    assert proc.stdout is not None
    assert proc.stderr is not None
    readers = [
        asyncio.create_task(stdout.drain(proc.stdout)),
        asyncio.create_task(stderr.drain(proc.stderr)),
    ]
    try:
        async with asyncio.timeout(payload.timeout_s):
            if payload.stdin is not None:
                await _feed(proc, payload.stdin.encode())
            code = await proc.wait()
    finally:
        # Normal end, timeout or cancel alike: nothing of the task may outlive it.
        try:
            await _stop_group(proc.pid, grace_s)
            with contextlib.suppress(TimeoutError):
                # The group is gone, so the pipes are closed unless a process escaped the
                # group (setsid) holding them: do not wait for it forever.
                await asyncio.wait_for(asyncio.gather(*readers), timeout=grace_s)
        finally:
            for reader in readers:
                reader.cancel()
    ctx.exit_code = code
    if code != 0:
        error = CommandFailed if payload.retry_on_failure else CommandFailedPermanently
        raise error(payload.argv[0], code, stderr.text().strip())
    return _result(stdout)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    proc.stdin.close()


def _result(stdout: _Tail) -> Any:
    if not stdout.truncated and stdout.data.strip():
        try:
            return msgspec.json.decode(stdout.data)
        except msgspec.DecodeError:
            pass
    text = bytes(stdout.data[-TEXT_TAIL:]).decode(errors="replace")
    result: dict[str, Any] = {"stdout": text}
    if stdout.total > TEXT_TAIL:
        result["stdout_bytes"] = stdout.total  # only the tail was kept
    return result


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user: still there
        return True
    return True


async def _stop_group(pgid: int, grace_s: float) -> None:
    """SIGTERM every process of the group, wait up to ``grace_s`` for them, then SIGKILL."""
    if not _group_alive(pgid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    try:
        # No event says "a process group became empty": poll it.
        while _group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:  # also when cancelled again while waiting: SIGKILL is never skipped
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
