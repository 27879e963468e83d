"""The HTTP and WebSocket API (SPEC §4, §5): a Litestar app over ``pgqueue.Queue``."""

from __future__ import annotations

from pgqueue.api.app import create_app

__all__ = ["create_app"]
