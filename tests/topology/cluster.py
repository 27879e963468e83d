"""A primary and a streaming standby, started from the server binaries on this machine.

Two clusters made the way an operator makes them: ``initdb`` for the primary,
``pg_basebackup -R`` for the standby, ``pg_ctl promote`` on failover. As root the binaries
run as the ``postgres`` user (``initdb`` refuses root). Elsewhere the tests skip and say
which binaries they need.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import psycopg
from psycopg import sql

from tests.topology.pgbouncer import free_port

BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)
NEEDED = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
HOW_TO_ENABLE = (
    "the failover tests need PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup, "
    "postgres) on PATH or in /usr/lib/postgresql/<version>/bin: `apt-get install postgresql`"
)


def bin_dir() -> Path | None:
    """Where initdb and friends are (a directory holding all of them)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all((directory / name).exists() for name in NEEDED):
            return directory
    return None


def _run_as() -> list[str]:
    """The prefix that runs a server binary as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # KeyError: no postgres user to run the server as
    return ["runuser", "-u", "postgres", "--"]


class Node:
    """One cluster: its data directory and port."""

    def __init__(self, bindir: Path, root: Path, name: str) -> None:
        self.bindir = bindir
        self.data = root / name
        self.log = root / f"{name}.log"
        self.socket_dir = root
        self.port = free_port()
        self.name = name

    def run(self, tool: str, *args: str, timeout: float = 120) -> str:
        argv = [*_run_as(), str(self.bindir / tool), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def configure(self, settings: dict[str, str]) -> None:
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def promote(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def running(self) -> bool:
        argv = [*_run_as(), str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0


class Pair:
    """A primary and its standby; ``dsn`` is the multi-host DSN clients use."""

    def __init__(self, primary: Node, standby: Node, dbname: str) -> None:
        self.primary = primary
        self.standby = standby
        self.dbname = dbname

    @property
    def dsn(self) -> str:
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            f"user=postgres dbname={self.dbname} target_session_attrs=read-write connect_timeout=3"
        )

    def node_dsn(self, node: Node) -> str:
        return f"host=127.0.0.1 port={node.port} user=postgres dbname={self.dbname}"


@contextlib.contextmanager
def primary_and_standby(
    *, synchronous: bool, dbname: str = "pgqueue"
) -> Generator[Pair, None, None]:
    """Start a primary and a streaming standby (synchronous or not); stop both after."""
    bindir = bin_dir()
    if bindir is None:
        raise RuntimeError(HOW_TO_ENABLE)
    with tempfile.TemporaryDirectory(prefix="pgqueue-failover-") as tmp:
        root = Path(tmp)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        primary = Node(bindir, root, "primary")
        standby = Node(bindir, root, "standby")
        nodes = [primary]
        try:
            primary.run(
                "initdb",
                "-D",
                str(primary.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            with (primary.data / "pg_hba.conf").open("a") as hba:
                hba.write("host replication postgres 127.0.0.1/32 trust\n")
            primary.configure(
                {
                    "port": str(primary.port),
                    "listen_addresses": "127.0.0.1",
                    "unix_socket_directories": str(root),
                    "wal_level": "replica",
                    "max_wal_senders": "4",
                    "hot_standby": "on",
                    "shared_buffers": "32MB",
                    "fsync": "off",  # a process kill, not a power cut: the OS keeps what was written
                    "synchronous_standby_names": "standby" if synchronous else "",
                    "wal_sender_timeout": "5s",
                }
            )
            primary.start()
            standby.run(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
            )
            standby.configure(
                {
                    "port": str(standby.port),
                    "primary_conninfo": (
                        f"host=127.0.0.1 port={primary.port} user=postgres application_name=standby"
                    ),
                    "synchronous_standby_names": "",
                    "wal_receiver_timeout": "5s",
                }
            )
            nodes.append(standby)
            standby.start()
            with psycopg.connect(primary.dsn, autocommit=True) as conn:
                _wait_replicating(conn, "sync" if synchronous else "async")
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            yield Pair(primary, standby, dbname)
        finally:
            for node in nodes:
                if node.running():
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        node.stop("immediate")


def _wait_replicating(conn: psycopg.Connection[tuple[object, ...]], state: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        row = conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'"
        ).fetchone()
        if row is not None and row[0] == state:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"standby not replicating ({state}) after 60 s: {row}")
        time.sleep(0.1)
