"""A wheel that works: built from the one sql/, installed alone, migrating and running tasks."""

from __future__ import annotations

import signal
import subprocess
import tarfile
import zipfile
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.helpers import ROOT
from tests.packaging.conftest import Built, Processes, clean_env, free_port, wait_ready

pytestmark = pytest.mark.slow

SQL = ROOT / "sql"


def test_wheel_and_sdist_carry_the_sql_and_the_metadata(built: Built) -> None:
    files = sorted(p.relative_to(SQL).as_posix() for p in SQL.rglob("*.sql"))
    assert any(f.startswith("migrations/") for f in files)
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = wheel.read(metadata_name).decode()
        for f in files:  # every file of sql/, byte for byte
            assert wheel.read(f"pgqueue/_sql/{f}") == (SQL / f).read_bytes()
    assert not any(n.startswith("pgqueue/_sql/") and n.endswith(".py") for n in names)
    # every file of the package: modules and data (the dashboard's pgqueue/api/ui/ too)
    package = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "pgqueue").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert sorted(set(package) - names) == []
    assert "pgqueue/py.typed" in names
    assert {n.split("/")[0] for n in names} == {"pgqueue", metadata_name.split("/")[0]}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata
    assert "Project-URL: Source, " in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert "Requires-Dist: opentelemetry-sdk" in metadata  # the otel extra
    with tarfile.open(built.sdist) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        members = set(sdist.getnames())
    for f in files:  # the sdist has sql/ where the checkout has it; the wheel built from it
        assert f"{top}/sql/{f}" in members


def test_installed_wheel_migrates_serves_and_completes_a_task(
    venv_bin: Path, fresh_dsn: str, tmp_path: Path, processes: Processes
) -> None:
    env = clean_env(venv_bin, {"PGQUEUE_DSN": fresh_dsn})
    where = subprocess.run(
        [
            str(venv_bin / "python"),
            "-c",
            "import pgqueue, pgqueue.db.sql_files as f; print(pgqueue.__file__); print(f.sql_dir())",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site = venv_bin.parent / "lib"
    assert Path(where[0]).is_relative_to(site), where  # not the checkout
    assert Path(where[1]).is_relative_to(site) and where[1].endswith("pgqueue/_sql"), where

    migrated = subprocess.run(
        ["pgqueue", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_tasks.sql" in migrated.stdout

    port = free_port()
    processes.start("serve", ["pgqueue", "serve", "--insecure", "--port", str(port)], env, tmp_path)
    processes.start("worker", ["pgqueue", "worker", "pgqueue.demo:app"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz", processes)

    answer = httpx.post(
        f"{base}/tasks?wait=60", json={"kind": "demo.echo", "payload": {"via": "http"}}, timeout=90
    )
    assert answer.status_code == 201, answer.text
    task = answer.json()
    assert (task["status"], task["result"]) == ("completed", {"via": "http"}), processes.logs()

    cli = subprocess.run(
        ["pgqueue", "enqueue", "demo.echo", '{"via": "cli"}', "--wait", "60"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=90,
    )
    assert cli.returncode == 0, cli.stderr
    done = msgspec.json.decode(cli.stdout.splitlines()[-1])
    assert (done["status"], done["result"]) == ("completed", {"via": "cli"})

    assert processes.stop("worker") == 0, processes.logs()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    assert processes.stop("serve") in (0, -signal.SIGTERM), processes.logs()
