"""The trigger functions (sql/functions/triggers.sql): re-applied after the migrations, with
the settings the migrations gave them, so moving a body out of a migration changed nothing."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from pgqueue.db.migrate import migrate
from pgqueue.db.sql_files import sql_dir

AUDIT = ("on_tasks_insert", "on_tasks_update")


@pytest.mark.parametrize("name", AUDIT)
async def test_audit_triggers_keep_their_settings_after_migrate(
    conn: psycopg.AsyncConnection[Any], name: str
) -> None:
    """0001's enable_nestloop = off and 0009's TimeZone = UTC survive CREATE OR REPLACE,
    also when migrate runs again on a migrated database."""
    await migrate(conn)
    cur = await conn.execute(
        "SELECT proconfig FROM pg_proc WHERE oid = to_regprocedure(%s)", (f"pgqueue.{name}()",)
    )
    row = await cur.fetchone()
    assert row is not None
    assert row[0] == ["enable_nestloop=off", "TimeZone=UTC"]


def test_every_function_is_defined_in_one_functions_file() -> None:
    """Each ``CREATE OR REPLACE FUNCTION`` of sql/functions/ appears in exactly one file."""
    pattern = re.compile(r"^CREATE OR REPLACE FUNCTION (pgqueue\.\w+)\(", re.MULTILINE)
    seen: dict[str, list[str]] = {}
    for path in sorted((sql_dir() / "functions").glob("*.sql")):
        for name in pattern.findall(path.read_text()):
            seen.setdefault(name, []).append(path.name)
    assert {"pgqueue.on_tasks_insert", "pgqueue.claim"} <= set(seen)
    assert {name: files for name, files in seen.items() if len(files) > 1} == {}
