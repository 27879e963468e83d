"""The uvicorn WebSocket protocol ``pgqueue serve`` runs: uvicorn's ``websockets-sansio``, plus
one ASGI scope extension through which the hub writes a frame it built once to every
subscriber's transport.

With many subscribers the fan-out's cost was the ASGI send chain, per subscriber and per
message (Litestar's and uvicorn's send coroutines, ``websockets`` framing the same text again,
joining its output), not the socket write itself (docs/benchmarks.md). The extension is
``scope["extensions"]["pgqueue.frame_writer"] = {"write": write}``: ``write(wire)`` writes the
bytes of one complete frame (``frames.Frame.wire``) when the connection is open and its
transport takes data without waiting, and returns False otherwise — then the caller sends the
same message through the ASGI send as before. Nothing but that one method touches uvicorn's
state, and only to read it; a uvicorn that no longer has what it reads gets no extension (the
ASGI path alone), so an upgrade can make the fan-out slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

FRAME_WRITER = "pgqueue.frame_writer"  # the scope extension's name
# What ``write`` reads of uvicorn's protocol (checked per connection before it is offered).
_READS = ("handshake_complete", "close_sent", "initial_response", "disconnected", "writable")


class WriteFrame(Protocol):
    def __call__(self, wire: bytes, /) -> bool: ...


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` with the ``pgqueue.frame_writer`` scope extension."""

    async def run_asgi(self) -> None:
        scope = cast(dict[str, Any], self.scope)
        if all(hasattr(self, name) for name in _READS) and not self.conn.extensions:
            # (no extension negotiated: with ws_per_message_deflate off, none is offered)
            scope.setdefault("extensions", {})[FRAME_WRITER] = {"write": self.write_frame}
        await super().run_asgi()

    def write_frame(self, wire: bytes) -> bool:
        """Write one complete frame if the connection is open and writable; else False."""
        if (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        ):
            self.transport.write(wire)
            return True
        return False


def frame_writer(scope: Mapping[str, object]) -> WriteFrame | None:
    """The connection's frame writer, if the server offers one (``pgqueue serve`` does)."""
    extensions: Any = scope.get("extensions") or {}
    offered: Any = extensions.get(FRAME_WRITER) or {}
    write: Any = offered.get("write")
    return cast(WriteFrame, write) if callable(write) else None
