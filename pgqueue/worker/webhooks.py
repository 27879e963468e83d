"""The built-in webhook delivery handler every worker runs unless webhooks are off (SPEC
§13; the rules are in pgqueue/webhooks.py)."""

from __future__ import annotations

import logging
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from pgqueue.errors import InvalidInput
from pgqueue.outcomes import Permanent
from pgqueue.settings import Settings
from pgqueue.webhooks import GIVE_UP_S, KIND, QUEUE, allowed_hosts, check_target, signature
from pgqueue.worker.context import Context
from pgqueue.worker.handlers import App, Handler

log = logging.getLogger(__name__)

_TIMEOUT_S = 10.0


def with_webhooks(
    app: App, queues: list[str] | None, settings: Settings
) -> tuple[App, list[str] | None]:
    """The app a worker runs (local or remote): ``app`` plus the built-in delivery handler
    and its queue, unless webhooks are off for this worker or it has no secret to sign with
    (it would only claim deliveries to fail them; they wait for a worker that has one).
    ``app`` itself is not changed."""
    if not settings.webhooks or KIND in app.handlers:
        return app, queues
    if not settings.webhook_secret:
        log.info("PGQUEUE_WEBHOOK_SECRET is not set: this worker does not deliver webhooks")
        return app, queues
    served = App(app.name)
    served.handlers = dict(app.handlers)
    served.handlers[KIND] = Handler(
        kind=KIND,
        fn=_deliverer(settings),
        queue=QUEUE,
        max_retries=1000,  # bounded by the 24 h below, not by a count
        timeout_s=_TIMEOUT_S * 2,
        backoff_base_s=5.0,
        backoff_max_s=3600.0,
        permanent=(),
        payload_type=None,
        is_async=True,
    )
    if queues is not None and QUEUE not in queues:
        queues = [*queues, QUEUE]
    return served, queues


class _Delivery(msgspec.Struct, frozen=True):
    task_id: str
    event_id: int
    event: str
    url: str
    task: Any


def _deliverer(settings: Settings) -> Any:
    secret = settings.webhook_secret
    allow = allowed_hosts(settings)
    # httpx's default TLS context (certifi), built on the first delivery and then shared: a
    # new client builds one otherwise, which cost more than the whole delivery to a receiver
    # nearby (docs/benchmarks.md, Workflows)
    tls: list[ssl.SSLContext] = []

    async def deliver(ctx: Context, payload: Any) -> dict[str, Any]:
        """POST one final event; raise (retryable) on a non-2xx answer or a network error."""
        job = msgspec.convert(payload, _Delivery)
        age = (datetime.now(UTC) - ctx.task.created_at).total_seconds()
        if age > GIVE_UP_S:
            raise Permanent(f"not delivered within 24 hours to {job.url}")
        try:
            await check_target(job.url, allow, "url")
        except InvalidInput as exc:
            raise Permanent(str(exc)) from None
        body = msgspec.json.encode(
            {"type": "task", "event": job.event, "event_id": job.event_id, "task": job.task}
        )
        headers = {
            "Content-Type": "application/json",
            "Pgqueue-Event-Id": str(job.event_id),
            "Pgqueue-Signature": signature(secret, int(time.time()), body),
            "User-Agent": "pgqueue-webhooks",
        }
        if not tls:
            tls.append(httpx.create_ssl_context())
        async with httpx.AsyncClient(
            timeout=_TIMEOUT_S, follow_redirects=False, verify=tls[0]
        ) as client:
            answer = await client.post(job.url, content=body, headers=headers)
        if not 200 <= answer.status_code < 300:
            raise RuntimeError(f"{job.url} answered {answer.status_code}")
        return {"status_code": answer.status_code}

    return deliver
