"""Request bodies: how deep their JSON may nest (SPEC §4, bad input is a 400, never a 500).

Litestar decodes a JSON body into plain Python values before converting it into the handler's
Struct, and msgspec's decoder recurses once per nesting level: a body nested about a thousand
deep raised ``RecursionError`` (a 500), and anything a little shallower was stored and could
fail later wherever it is decoded or encoded again at a deeper stack (a worker, another
caller's listing). So every JSON body is held to ``MAX_JSON_DEPTH`` levels here, the one place
all HTTP bodies pass: an answer well inside what every reader can handle again.

The check costs nothing for most bodies: a body with no more ``[`` and ``{`` in all than the
limit cannot nest deeper than it (two ``bytes.count`` calls); only other bodies are walked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from litestar import Request
from litestar.exceptions import InternalServerException

from pgqueue.errors import InvalidInput

MAX_JSON_DEPTH = 128
"""Arrays and objects nested in each other, the body itself counting as the first level."""


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path (``tasks[3].payload.a``) of the first container nested deeper than ``limit``,
    or None. Recurses at most ``limit`` levels, so it cannot itself run out of stack."""
    path = _too_deep(value, limit)
    if path is None:
        return None
    text = ""
    for n, key in enumerate(reversed(path)):
        if n == _PATH_SHOWN:  # the field is named by its start; the rest is the nesting
            return text + "…"
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text or "body"


_PATH_SHOWN = 6


def _too_deep(value: Any, budget: int) -> list[str | int] | None:
    items: Iterable[tuple[str | int, Any]]
    if type(value) is dict:
        items = cast("dict[str, Any]", value).items()  # decoded JSON: str keys
    elif type(value) is list:
        items = enumerate(cast("list[object]", value))
    else:
        return None
    if budget == 0:
        return []
    for key, child in items:
        if type(child) is dict or type(child) is list:
            path = _too_deep(child, budget - 1)
            if path is not None:
                path.append(key)
                return path
    return None


def check_depth(body: bytes, value: Any) -> None:
    """``InvalidInput`` naming the field when ``value`` (decoded from ``body``) nests too deep."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    where = too_deep(value)
    if where is not None:
        raise InvalidInput(where, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


class JsonRequest(Request[Any, Any, Any]):
    """Litestar's request, with ``json()`` held to ``MAX_JSON_DEPTH`` (the app's request class).

    A body too deep for the decoder itself (``RecursionError``) is the same 400; it names the
    body, since nothing was decoded to say which field it was.
    """

    _depth_checked = False

    async def body(self) -> bytes:
        """The whole body; a client that hangs up halfway through it is a 400, not a 500."""
        try:
            return await super().body()
        except InternalServerException as exc:
            if exc.detail != "client disconnected prematurely":
                raise
            raise InvalidInput("body", "the client disconnected before sending all of it") from None

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:
            raise InvalidInput("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        if not self._depth_checked:
            check_depth(await self.body(), value)
            self._depth_checked = True
        return value
