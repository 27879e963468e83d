"""compose.yaml and the Dockerfile, proven without a container engine.

The commands come from the files themselves: each service's argv is the Dockerfile's
ENTRYPOINT plus the service's ``command``, its environment the Dockerfile's ENV plus the
service's ``environment``, its health check the service's ``healthcheck`` or else the
Dockerfile's HEALTHCHECK. They run in a fresh venv holding only the wheel, against a fresh
database, in ``depends_on`` order with its conditions (``service_completed_successfully``:
wait for exit 0; ``service_healthy``: run the health check until it passes).

What a container would give differently is replaced, and only that: the ``postgres``
service is this test's database (its DSN replaces the one naming host ``postgres``), and the
API listens on 127.0.0.1 at a free port instead of 0.0.0.0:8000 (the file's port mapping is
checked to point at the image's port).
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from tests.helpers import ROOT
from tests.packaging.conftest import Processes, clean_env, free_port, wait_ready

pytestmark = pytest.mark.slow


class Image:
    """The final stage of the Dockerfile: what every pgqueue container starts from."""

    def __init__(self, text: str) -> None:
        lines = _logical_lines(text)
        final = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")][-1]
        self.env: dict[str, str] = {}
        self.entrypoint: list[str] = []
        self.healthcheck: list[str] = []
        self.user = ""
        for line in lines[final + 1 :]:
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    self.env[key] = value
            elif word == "ENTRYPOINT":
                self.entrypoint = json.loads(rest)
            elif word == "HEALTHCHECK":
                self.healthcheck = json.loads(rest.partition(" CMD ")[2])
            elif word == "USER":
                self.user = rest.strip()


def _logical_lines(text: str) -> list[str]:
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _order(services: dict[str, Any]) -> list[str]:
    """Services in depends_on order (each after everything it depends on)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {path}"
        if name in done:
            return
        for dep in services[name].get("depends_on", {}):
            visit(dep, (*path, name))
        done.append(name)

    for name in services:
        visit(name, ())
    return done


def _healthcheck(service: dict[str, Any], image: Image) -> list[str] | None:
    check = service.get("healthcheck")
    if check is None:
        return image.healthcheck
    if check.get("disable"):
        return None
    test = check["test"]
    if test[0] == "CMD":
        return list(test[1:])
    assert test[0] == "CMD-SHELL", test
    return ["sh", "-c", test[1]]


def _healthy(argv: list[str], env: dict[str, str], cwd: Path, procs: Processes) -> None:
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{argv}: {done.stderr}\n{procs.logs()}")
        time.sleep(0.5)


def test_compose_stack_runs_as_written(
    venv_bin: Path, fresh_dsn: str, tmp_path: Path, processes: Processes
) -> None:
    image = Image((ROOT / "Dockerfile").read_text())
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    assert image.entrypoint == ["pgqueue"] and image.healthcheck
    assert image.user and image.user != "root"
    port = free_port()
    image_port = image.env["PGQUEUE_PORT"]

    started: dict[str, subprocess.Popen[bytes]] = {}
    envs: dict[str, dict[str, str]] = {}
    database = ""
    for name in _order(services):
        service = services[name]
        if service.get("image", "").startswith("postgres"):
            database = name  # this test's fresh database stands in for it
            continue
        assert service.get("build") == ".", f"{name} must run the image of the Dockerfile"
        for dep, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if dep == database:
                assert condition == "service_healthy"
            elif condition == "service_completed_successfully":
                code = started[dep].wait(timeout=120)
                assert code == 0, f"{dep} exited {code}\n{processes.logs()}"
            elif condition == "service_healthy":
                check = _healthcheck(services[dep], image)
                assert check is not None, f"{dep} has no health check to wait for"
                _healthy(check, envs[dep], tmp_path, processes)
        environment = {k: v for k, v in image.env.items() if k != "PATH"}
        environment.update({k: str(v) for k, v in service.get("environment", {}).items()})
        assert conninfo_to_dict(environment["PGQUEUE_DSN"])["host"] == database
        environment.update(PGQUEUE_DSN=fresh_dsn, PGQUEUE_HOST="127.0.0.1", PGQUEUE_PORT=str(port))
        for mapping in service.get("ports", []):
            assert str(mapping).rpartition(":")[2] == image_port
        envs[name] = clean_env(venv_bin, environment)
        argv = image.entrypoint + list(service["command"])
        started[name] = processes.start(name, argv, envs[name], tmp_path)

    assert set(started) == {"migrate", "api", "worker"}
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz", processes)
    for name in ("api", "worker"):
        check = _healthcheck(services[name], image)
        assert check is not None
        _healthy(check, envs[name], tmp_path, processes)

    answer = httpx.post(
        f"{base}/tasks?wait=60",
        json={"kind": "demo.agent", "payload": {"goal": "compose", "steps": 2, "step_s": 0.05}},
        timeout=90,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "completed", processes.logs()

    assert processes.stop("worker") == 0, processes.logs()
    assert processes.stop("api") in (0, -signal.SIGTERM), processes.logs()
    # the worker's own check now fails: it tells a dead worker host from a live one
    check = _healthcheck(services["worker"], image)
    assert check is not None
    failed = subprocess.run(check, env=envs["worker"], cwd=tmp_path, capture_output=True)
    assert failed.returncode == 1
