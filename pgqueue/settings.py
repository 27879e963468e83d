"""Settings, built once from ``PGQUEUE_*`` environment variables (or CLI flags) and passed down.

Nothing reads the environment at import time: ``Settings.from_env()`` is called by entry
points (CLI, tests), which then hand the object to what they start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from pgqueue.tasks import BackoffSeconds  # the bound of per-task overrides holds here too

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of pgqueue; each is also the ``PGQUEUE_<NAME>`` environment variable."""

    dsn: str = ""  # empty: `pgqueue dev` starts an embedded PostgreSQL
    # The direct connection each process LISTENs on (empty: the DSN). Set it when the DSN is
    # a PgBouncer in transaction mode, whose server sessions change between transactions.
    listen_dsn: str = ""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    heartbeat_s: Seconds = 10.0
    stall_s: Seconds = 30.0
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    idempotency_ttl_s: Seconds = 86400.0
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024 * 1024
    # Largest HTTP request body; larger ones are a 413 before they are read whole, so a few
    # concurrent maximal batches keep a server's memory bounded (SPEC §4).
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024
    # When set, GET /metrics needs `Authorization: Bearer <this>` (scrapers carry no API token).
    metrics_token: str = ""
    # A task's result, on every path (local worker, HTTP complete); 0: max_payload_bytes.
    # (0 rather than None: settings travel to `serve`'s processes as environment strings.)
    max_result_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    retention_days: Annotated[float, msgspec.Meta(ge=0)] = 7.0  # 0 keeps finished tasks forever
    poll_s: Seconds = 5.0  # fallback poll when no NOTIFY arrives
    # How often each process runs the reaper. stall_s + reap_s bounds how long a crashed
    # worker's task waits (40 s < the 60 s SPEC promise); 10 s keeps an idle process quiet.
    reap_s: Seconds = 10.0
    backoff_base_s: BackoffSeconds = 1.0
    backoff_max_s: BackoffSeconds = 300.0
    pool_size: Annotated[int, msgspec.Meta(ge=1)] = 10
    data_dir: str = ".pgqueue"  # embedded PostgreSQL data for `pgqueue dev`
    # Webhooks (SPEC §13, pgqueue/webhooks.py): the signing key, hosts allowed although they
    # are loopback/private (comma-separated), and whether this worker delivers them.
    webhook_secret: str = ""
    webhook_allow_hosts: str = ""
    webhooks: bool = True

    @property
    def listen_target(self) -> str:
        """Where this process LISTENs: ``listen_dsn``, else the DSN."""
        return self.listen_dsn or self.dsn

    @property
    def result_limit(self) -> int:
        """The one result-size limit (pgqueue.tasks.result_json applies it)."""
        return self.max_result_bytes or self.max_payload_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``PGQUEUE_*`` variables; ``overrides`` (CLI flags) win over the environment.

        Raises ``msgspec.ValidationError`` naming the variable when a value is invalid.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(f"PGQUEUE_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(
                f"invalid setting: {exc} (environment variables are PGQUEUE_<NAME>)"
            ) from None
