"""The installed wheel, in a virtualenv of its own, run as separate processes.

Builds the sdist and, from it, the wheel (``python -m build``: what a release does), then
installs the wheel into a fresh venv (its dependencies from the package index or pip's
cache). Commands run from a temporary directory with no PYTHONPATH, so nothing of the
source tree is importable: what passes here works for someone who ran ``pip install pgqueue``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.helpers import ROOT


class Built:
    def __init__(self, wheel: Path, sdist: Path) -> None:
        self.wheel = wheel
        self.sdist = sdist


def build_stage_copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """The Dockerfile's first stage ``COPY src... dest`` lines: what the wheel is built from."""
    stages = dockerfile.split("\nFROM ")  # [comments before the first FROM, stage 1, ...]
    copies: list[tuple[list[str], str]] = []
    for line in stages[1].splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            copies.append((sources, dest))
    return copies


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """sdist and wheel, built from exactly what the Dockerfile's build stage copies in."""
    src = tmp_path_factory.mktemp("src")
    copies = build_stage_copies((ROOT / "Dockerfile").read_text())
    assert copies, "the Dockerfile's build stage copies nothing"
    for sources, dest in copies:
        for name in sources:
            # Docker's rule: into the directory `dest/` (or for several sources), else as `dest`
            target = src / dest / name if dest.endswith("/") or len(sources) > 1 else src / dest
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(ROOT / name, target)
    out = tmp_path_factory.mktemp("dist")
    run_checked([sys.executable, "-m", "build", "--outdir", str(out), str(src)])
    (wheel,) = out.glob("pgqueue-*.whl")
    (sdist,) = out.glob("pgqueue-*.tar.gz")
    return Built(wheel, sdist)


@pytest.fixture(scope="session")
def venv_bin(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a fresh virtualenv with only the wheel (and its dependencies)."""
    venv = tmp_path_factory.mktemp("venv")
    run_checked([sys.executable, "-m", "venv", str(venv)])
    run_checked(
        [str(venv / "bin" / "pip"), "install", "-q", str(built.wheel)], clean_env(venv / "bin")
    )
    return venv / "bin"


def run_checked(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a build step; on failure show its output (quiet otherwise: pip is chatty)."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(
            f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def clean_env(bin_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This machine's environment without any pgqueue setting or Python path, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PGQUEUE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@pytest.fixture
def fresh_dsn(server_dsn: str) -> Iterator[str]:
    """An empty database: nothing migrated, as on a new deployment."""
    name = f"pgqueue_pkg_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Started processes with their output in files, shown when a test fails."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.started.append((name, proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {name}:\n{log.read_text()[-3000:]}" for name, _, log in self.started)

    def stop(self, name: str, timeout: float = 60) -> int:
        """SIGTERM one process and return its exit status."""
        for n, proc, _ in self.started:
            if n == name:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                return proc.wait(timeout=timeout)
        raise KeyError(name)

    def kill_all(self) -> None:
        for _, proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def wait_ready(url: str, procs: Processes, timeout: float = 60) -> httpx.Response:
    """GET ``url`` until it answers 200; fail with the processes' output otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = httpx.get(url, timeout=5)
            if last.status_code == 200:
                return last
        for name, proc, _ in procs.started:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(f"{name} exited {proc.returncode}\n{procs.logs()}")
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout}s (last: {last!r})\n{procs.logs()}")
