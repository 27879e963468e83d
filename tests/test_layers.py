"""Layer boundaries (docs/architecture.md): db knows no worker or API; worker and API never
import each other. Checked on the source, so a violation fails before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pgqueue"

FORBIDDEN = {
    "db": ("pgqueue.worker", "pgqueue.api", "pgqueue.cli", "pgqueue.queue"),
    "worker": ("pgqueue.api", "pgqueue.cli"),
    "api": ("pgqueue.worker", "pgqueue.cli"),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_import_what_it_must_not(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no files in pgqueue/{layer}"
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert offenders == []
