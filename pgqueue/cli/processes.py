"""``pgqueue worker --processes P``: run P worker processes and keep them running.

A production worker host wants one command (one container, one systemd unit) that uses its
cores: asyncio runs one core per process. The supervisor starts P copies of the same
``pgqueue worker`` command line (without ``--processes``), restarts one that dies (the
reaper hands its running tasks to the others, as for any crashed worker), and on SIGTERM or
SIGINT forwards SIGTERM to every child, waits for their graceful shutdown and exits 0.

Children are plain OS processes, not forks of this one: each imports the App afresh, so a
child that crashed leaves nothing half-initialised behind in the supervisor.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0  # first restart delay of a child that keeps dying, doubled each time
RESTART_DELAY_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child that ran this long resets its restart delay
PR_SET_PDEATHSIG = 1  # prctl(2)
USAGE_ERROR = 2  # `pgqueue` exits 2 on bad input (no such App, bad DSN setting): not retried


def without_processes_flag(argv: Sequence[str]) -> list[str]:
    """The command line a child runs: the same, without ``--processes N``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def _stop_with_parent() -> None:
    """In a child before exec: get SIGTERM when the supervisor dies (Linux), so a supervisor
    killed with -9 leaves no worker running unsupervised; they shut down gracefully."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Child:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = RESTART_DELAY_S
        self.restart_at = 0.0  # when a dead child is due to be started again
        self.signalled = False  # told to stop: once only (a second SIGTERM could land after
        # the worker's own handler is gone, in its last milliseconds, and kill it)


class Supervisor:
    """Keeps ``processes`` copies of ``pgqueue <argv>`` running until told to stop."""

    def __init__(self, argv: Sequence[str], processes: int, poll_s: float = 0.2) -> None:
        self.argv = [sys.executable, "-m", "pgqueue", *argv]
        self.children = [_Child(slot) for slot in range(processes)]
        self.poll_s = poll_s
        self.stopping = False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit 0 when every child shut down cleanly)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                self._start(child)
            status = self._watch()
            return self._shutdown() if status is None else status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info(
                "supervisor: %s, stopping %d workers", signal.strsignal(signum), len(self.children)
            )
        self.stopping = True
        self._forward(signal.SIGTERM)

    def _forward(self, sig: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None and not child.signalled:
                child.signalled = True
                child.proc.send_signal(sig)

    def _start(self, child: _Child) -> None:
        # preexec_fn is safe here: the supervisor runs no threads that could hold a lock
        child.proc = subprocess.Popen(self.argv, preexec_fn=_stop_with_parent)
        child.started_at = time.monotonic()
        child.signalled = False
        log.info(
            "supervisor: worker process %d/%d started, pid %d",
            child.slot + 1,
            len(self.children),
            child.proc.pid,
        )

    def _watch(self) -> int | None:
        """Restart dead children until stopping; a status to exit with if one cannot run."""
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or self.stopping:
                    continue
                if child.restart_at == 0.0:  # just found dead
                    if code == USAGE_ERROR and now - child.started_at < STABLE_AFTER_S:
                        log.error("supervisor: a worker cannot start (status %d); stopping", code)
                        self.stopping = True
                        self._shutdown()
                        return code
                    if now - child.started_at >= STABLE_AFTER_S:
                        child.delay = RESTART_DELAY_S
                    log.warning(
                        "supervisor: worker pid %d exited with status %d; restarting in %.0fs",
                        child.proc.pid,
                        code,
                        child.delay,
                    )
                    child.restart_at = now + child.delay
                    child.delay = min(child.delay * 2, RESTART_DELAY_MAX_S)
                elif now >= child.restart_at:
                    child.restart_at = 0.0
                    self._start(child)
            time.sleep(self.poll_s)
        return None

    def _shutdown(self) -> int:
        """Wait for every child to end its graceful shutdown; 0 if all of them exited 0."""
        self._forward(signal.SIGTERM)
        failed = 0
        for child in self.children:
            assert child.proc is not None
            code = child.proc.wait()
            # Killed by our SIGTERM: it came before the worker had its handler, i.e. before
            # it claimed anything (the handler is installed first), so nothing was lost.
            clean = code == 0 or (code == -signal.SIGTERM and child.signalled)
            if not clean and child.restart_at == 0.0:
                log.warning("supervisor: worker pid %d exited with status %d", child.proc.pid, code)
                failed += 1
        return 0 if failed == 0 else 1
