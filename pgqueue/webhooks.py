"""Webhooks (SPEC §13): a task's final state POSTed to its ``callback_url``.

When a task with a ``callback_url`` ends, the statement that ended it enqueues one delivery
task (kind ``pgqueue.webhook``, reserved queue ``pgqueue.webhooks``; see
``pgqueue.webhooks_for`` in sql/functions/workflows.sql). So deliveries are ordinary tasks:
at-least-once, visible, retried with backoff on any non-2xx answer or network error, given up
after 24 hours. Every worker runs the built-in handler (pgqueue/worker/webhooks.py) unless
started with webhooks off (``PGQUEUE_WEBHOOKS=false``); it signs with PGQUEUE_WEBHOOK_SECRET.

Addresses: http(s) only, at most 2,048 characters, and no loopback, link-local, private or
otherwise non-global target unless its host is in ``PGQUEUE_WEBHOOK_ALLOW_HOSTS`` — checked
at enqueue (a 400) and again, on the resolved addresses, before each delivery (a name that
resolved to a public address at enqueue may not point inside the network later).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from pgqueue.errors import InvalidInput
from pgqueue.settings import Settings

QUEUE = "pgqueue.webhooks"
KIND = "pgqueue.webhook"
MAX_URL = 2048
GIVE_UP_S = 24 * 3600.0


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """``PGQUEUE_WEBHOOK_ALLOW_HOSTS``: comma-separated host names or addresses."""
    return frozenset(
        h.strip().lower() for h in settings.webhook_allow_hosts.split(",") if h.strip()
    )


def _host(url: str, field: str) -> str:
    if len(url) > MAX_URL:
        raise InvalidInput(field, f"is {len(url)} characters, more than {MAX_URL}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise InvalidInput(field, f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput(field, "must be an http:// or https:// URL with a host")
    return host.lower()


def _refused(address: str) -> bool:
    """Not a global unicast address: loopback, link-local, private, reserved, multicast..."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_target(url: str, allow: Iterable[str], field: str = "callback_url") -> None:
    """``InvalidInput`` naming ``field`` unless ``url`` may receive webhooks (module doc)."""
    host = _host(url, field)
    if host in set(allow):
        return
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            addresses = ["127.0.0.1"]
        else:
            try:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                    timeout=5.0,
                )
            except (OSError, TimeoutError):
                raise InvalidInput(field, f"host {host!r} does not resolve") from None
            addresses = [str(info[4][0]) for info in infos]
    bad = [a for a in addresses if _refused(a)]
    if bad:
        raise InvalidInput(
            field,
            f"host {host!r} is a loopback, link-local or private address ({bad[0]}); "
            "list it in PGQUEUE_WEBHOOK_ALLOW_HOSTS to allow it",
        )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Pgqueue-Signature`` header: ``t=<unix s>,v1=<hex HMAC-SHA256("<t>.<body>")>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """For receivers: is ``header`` a valid signature of ``body``, made within tolerance?"""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)
