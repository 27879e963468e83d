"""Where the SQL files live: the one place that knows.

`sql/` sits at the top of the repository so operators read it as plain SQL; it is the only
copy in git. A built wheel (or sdist-built wheel) carries it as package data under
``pgqueue/_sql``, copied there by the build step in ``setup.py``. A source checkout or an
editable install has no ``_sql`` and reads the checkout's ``sql/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def sql_dir() -> Path:
    """The directory holding ``migrations/``, ``functions/``, ``views/`` and ``queries/``."""
    package = Path(__file__).resolve().parent.parent
    # The package's own copy first: an installed wheel must not pick up some other `sql/`
    # that happens to sit next to it in site-packages.
    for candidate in (package / "_sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"pgqueue's SQL files were not found in {package / '_sql'} (an installed wheel) "
        f"nor in {package.parent / 'sql'} (a source checkout)"
    )
