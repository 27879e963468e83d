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


# Modules outside pgqueue/db that still run named queries themselves. Issue 10 moves every one
# behind a typed function of pgqueue/db/; this list only shrinks (a module taken off it must
# stay off, and no module may join it).
QUERIES_ALLOWED: set[str] = set()


def touches_queries(path: Path) -> bool:
    """Imports ``pgqueue.db.queries`` or names ``QUERIES`` anywhere in the module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "pgqueue.db.queries":
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "pgqueue.db"
            and any(alias.name == "queries" for alias in node.names)
        ):
            return True
        if isinstance(node, ast.Import) and any(a.name == "pgqueue.db.queries" for a in node.names):
            return True
        if isinstance(node, ast.Name) and node.id == "QUERIES":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "QUERIES":
            return True
    return False


def test_only_db_runs_named_queries() -> None:
    """SQL calls live in pgqueue/db/: callers use its typed functions, never ``QUERIES``."""
    touching = {
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "db" and touches_queries(path)
    }
    assert touching - QUERIES_ALLOWED == set(), "new modules run named queries outside db/"
    assert QUERIES_ALLOWED - touching == set(), "converted: take them off QUERIES_ALLOWED"
