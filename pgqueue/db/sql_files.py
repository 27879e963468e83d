"""Where the SQL files live: the one place that knows.

`sql/` sits at the top of the repository so operators read it as plain SQL. A source
checkout (or an editable install) reads it there; an installed wheel carries a copy as
package data under ``pgqueue/_sql``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def sql_dir() -> Path:
    """The directory holding ``migrations/``, ``functions/``, ``views/`` and ``queries/``."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "sql", package / "_sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(f"pgqueue's sql/ directory was not found next to {package}")
