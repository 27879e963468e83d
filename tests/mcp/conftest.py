"""The API fixtures (a real server, tokens of each role) for the MCP tests."""

from tests.api.conftest import admin, alice, api, api_settings, bob, tokens, worker

__all__ = ["admin", "alice", "api", "api_settings", "bob", "tokens", "worker"]
