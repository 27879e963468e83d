"""Build step: the wheel carries the repository's one ``sql/`` as ``pgqueue/_sql``.

``sql/`` stays at the top of the repository, where operators read it as plain SQL; there is
no second copy in git. Building a wheel (``pip wheel .``, ``python -m build``, also from the
sdist, which carries ``sql/`` through MANIFEST.in) copies it next to the modules, where
``pgqueue/db/sql_files.py`` finds it. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SQL = Path(__file__).resolve().parent / "sql"


class BuildWithSql(build_py):
    """``build_py`` plus a copy of ``sql/**/*.sql`` into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's sql/ itself
        target = Path(self.build_lib) / "pgqueue" / "_sql"
        shutil.rmtree(target, ignore_errors=True)
        for source in sorted(SQL.rglob("*.sql")):
            dest = target / source.relative_to(SQL)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        if not (target / "migrations").is_dir():
            raise FileNotFoundError(f"no migrations under {SQL}: the wheel would not work")


setup(cmdclass={"build_py": BuildWithSql})
