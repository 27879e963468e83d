"""The API fixtures (a real server on a free port, tokens per role) for workflow tests."""

from tests.api.conftest import admin, alice, api, api_settings, bob, tokens, worker

__all__ = ["admin", "alice", "api", "api_settings", "bob", "tokens", "worker"]
