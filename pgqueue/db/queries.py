"""Named queries, loaded once from ``sql/queries/*.sql``.

Each block starts with ``-- name: <noun>_<verb>`` followed by comment lines that describe it.
Statements use psycopg's ``%(name)s`` placeholders. Python code refers to them as
``QUERIES["task_claim"]``; there is no SQL text in Python outside this loader and migrate.
"""

from __future__ import annotations

import re
from functools import cache
from typing import LiteralString, cast

from pgqueue.db.sql_files import sql_dir

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split one file into its named statements (the text before the first name is a preamble)."""
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        # Loaded from our own files, never from user input: safe to treat as literal SQL.
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries


@cache
def load() -> dict[str, LiteralString]:
    """All named queries of ``sql/queries``."""
    queries: dict[str, LiteralString] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, sql in parse(path.read_text()).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (again in {path.name})")
            queries[name] = sql
    return queries


class _Queries:
    """``QUERIES["task_get"]``: a lazily loaded, read-only view of the named queries."""

    def __getitem__(self, name: str) -> LiteralString:
        return load()[name]

    def __contains__(self, name: object) -> bool:
        return name in load()


QUERIES = _Queries()
