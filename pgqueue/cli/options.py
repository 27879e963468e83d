"""Flags shared by subcommands: every setting of ``Settings`` is also a CLI flag."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import msgspec

from pgqueue.errors import InvalidInput
from pgqueue.settings import Settings
from pgqueue.tasks import TaskId

_HELP = {
    "dsn": "PostgreSQL DSN (PGQUEUE_DSN)",
    "listen_dsn": "direct PostgreSQL DSN for LISTEN when the DSN is a pooler (PGQUEUE_LISTEN_DSN)",
    "host": "HTTP bind address (PGQUEUE_HOST)",
    "port": "HTTP port (PGQUEUE_PORT)",
}


def add_settings_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add ``--<name>`` flags for the given settings (all of them when none are named)."""
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in names or tuple(fields):
        flag = "--" + name.replace("_", "-")
        help_text = _HELP.get(name, f"(PGQUEUE_{name.upper()}, default {fields[name].default})")
        parser.add_argument(flag, dest=f"setting_{name}", default=None, help=help_text)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    return Settings.from_env(**overrides, **extra)


def database_settings(args: argparse.Namespace) -> Settings:
    """``settings_from_args`` for a command that talks to the database: a DSN is required."""
    settings = settings_from_args(args)
    if not settings.dsn:
        raise InvalidInput("dsn", "set PGQUEUE_DSN or pass --dsn")
    return settings


def task_id_arg(text: str) -> TaskId:
    """A task id given on the command line (the ``id`` argument)."""
    try:
        return TaskId(uuid.UUID(text))
    except ValueError:
        raise InvalidInput("id", f"{text!r} is not a task id (a UUID)") from None
