"""The HTTP client is for agents without database credentials: importing it must not load
the database driver nor the server's web framework (they may not even be installed)."""

from __future__ import annotations

import subprocess
import sys

_CHECK = (
    "import pgqueue.client, sys; "
    "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool', "
    "'litestar')); "
    "assert not loaded, loaded; "
    "from pgqueue import Client, Page; "
    "assert 'psycopg' not in sys.modules"
)


def test_importing_the_client_loads_no_driver_and_no_web_framework() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_queue_is_still_importable_from_the_package() -> None:
    check = "import pgqueue, sys; q = pgqueue.Queue; assert 'psycopg' in sys.modules, q"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
