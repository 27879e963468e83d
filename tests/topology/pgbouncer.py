"""A real PgBouncer in ``pool_mode = transaction`` in front of the test server (SPEC §17).

It is configured to expose any reliance on session state at once: after *every* transaction
the server session is reset (``DISCARD ALL`` with ``server_reset_query_always``), so a
session ``SET``, a named prepared statement, a session advisory lock or a ``LISTEN`` made
through it is gone by the next statement — a test that depended on one fails, instead of
passing by luck because PgBouncer handed the same server session back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

HOW_TO_ENABLE = (
    "PgBouncer is not installed: `apt-get install pgbouncer` (Debian/Ubuntu; CI's .ci/run "
    "does it) or put `pgbouncer` on PATH to run the transaction-pooling tests"
)


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user(server_host: str | None) -> str | None:
    """PgBouncer refuses to run as root: the user it should switch to, when we are root.

    A server reached by a Unix socket (the embedded server a fresh machine's tests use keeps
    its socket in its own 0700 data directory) is only reachable by that directory's owner,
    so PgBouncer runs as that owner; otherwise as postgres or nobody."""
    if os.geteuid() != 0:
        return None
    if server_host and server_host.startswith("/"):
        owner = Path(server_host).stat().st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither user postgres nor nobody exists")


@contextlib.contextmanager
def running_pgbouncer(server_dsn: str) -> Generator[str, None, None]:
    """Start PgBouncer for every database of ``server_dsn``'s server; yield its base DSN."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError(HOW_TO_ENABLE)
    server = conninfo_to_dict(server_dsn)
    user = str(server.get("user") or "postgres")
    target = " ".join(
        f"{key}={server[key]}" for key in ("host", "port", "password") if server.get(key)
    )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)  # PgBouncer drops to an unprivileged user and writes its log here
        (work / "users.txt").write_text(f'"{user}" ""\n')
        (work / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {target} user={user}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {work / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 2000\n"
            "default_pool_size = 20\n"
            "max_db_connections = 20\n"
            "server_reset_query = DISCARD ALL\n"
            "server_reset_query_always = 1\n"
            f"logfile = {work / 'pgbouncer.log'}\n"
            f"pidfile = {work / 'pgbouncer.pid'}\n"
        )
        argv = [binary, str(work / "pgbouncer.ini")]
        run_as = _unprivileged_user(str(server.get("host") or "") or None)
        if run_as is not None:
            argv[1:1] = ["-u", run_as]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        dsn = make_conninfo(server_dsn, host="127.0.0.1", port=str(port), user=user)
        try:
            _wait_until_serving(dsn, proc, work / "pgbouncer.log")
            yield dsn
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_until_serving(dsn: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            logged = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pgbouncer exited {proc.returncode}: {output}{logged}")
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return
