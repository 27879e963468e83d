"""``pgqueue.db.schedules`` and ``pgqueue.schedules`` import each other's modules (the row
Struct lives in the package, the package's scheduler calls the db functions): each must
import first in a fresh interpreter without a circular-import error."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["pgqueue.db.schedules", "pgqueue.schedules.scheduler"])
def test_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
