"""The README's Python example runs as written (docs that drift from the code are bugs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pgqueue.tasks import Status
from tests.helpers import fast_settings, running_worker

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


async def test_readme_python_example_runs(dsn: str) -> None:
    (example,) = python_blocks()
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    async with running_worker(namespace["app"], fast_settings(dsn)):
        task = await namespace["produce"](dsn)
    assert task.status is Status.COMPLETED
    assert task.queue == "emails"
    assert task.result == {"ok": True}
    assert task.progress["percent"] == 50
    assert task.checkpoint["token"] == "sent-headers"
    assert task.usage == {"input_tokens": 1200, "output_tokens": 300, "cost": 0.004}
