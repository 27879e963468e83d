"""``pgqueue.App``: the registry of handlers a worker can run, declared with ``@app.task``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, get_type_hints

import msgspec

from pgqueue.errors import InvalidInput

if TYPE_CHECKING:
    from pgqueue.worker.context import Context

HandlerFn = Callable[["Context", Any], Awaitable[Any]] | Callable[["Context", Any], Any]


class Handler(msgspec.Struct, frozen=True, kw_only=True):
    """One registered kind: the function and its defaults."""

    kind: str
    fn: HandlerFn
    queue: str = "default"
    max_retries: int | None = None  # applied at enqueue when the producer knows the App
    timeout_s: float | None = None  # used when the task has no timeout of its own
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    permanent: tuple[type[BaseException], ...] = ()
    payload_type: Any = None  # when annotated, payloads are validated (invalid = permanent)
    is_async: bool = True

    def decode_payload(self, payload: Any) -> Any:
        """The payload as the handler's annotated type; InvalidInput when it does not fit."""
        if self.payload_type is None:
            return payload
        try:
            return msgspec.convert(payload, self.payload_type)
        except msgspec.ValidationError as exc:
            raise InvalidInput("payload", str(exc)) from None

    def enqueue_defaults(self) -> dict[str, Any]:
        """The fields a producer inherits from this handler when it does not set them."""
        defaults: dict[str, Any] = {"queue": self.queue}
        for name in ("max_retries", "timeout_s", "backoff_base_s", "backoff_max_s"):
            value = getattr(self, name)
            if value is not None:
                defaults[name] = value
        return defaults


class App:
    """A set of handlers, by kind. Workers run an App; producers may use it for defaults."""

    def __init__(self, name: str = "pgqueue") -> None:
        self.name = name
        self.handlers: dict[str, Handler] = {}

    def task(
        self,
        kind: str,
        *,
        queue: str = "default",
        max_retries: int | None = None,
        timeout_s: float | None = None,
        backoff_base_s: float | None = None,
        backoff_max_s: float | None = None,
        permanent: Iterable[type[BaseException]] = (),
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register the decorated function as the handler of ``kind``.

        ``permanent`` lists exception types that fail the task for good instead of retrying.
        """

        def register(fn: HandlerFn) -> HandlerFn:
            self.register(
                Handler(
                    kind=kind,
                    fn=fn,
                    queue=queue,
                    max_retries=max_retries,
                    timeout_s=timeout_s,
                    backoff_base_s=backoff_base_s,
                    backoff_max_s=backoff_max_s,
                    permanent=tuple(permanent),
                    payload_type=_payload_type(fn),
                    is_async=inspect.iscoroutinefunction(fn),
                )
            )
            return fn

        return register

    def register(self, handler: Handler) -> None:
        if handler.kind in self.handlers:
            raise ValueError(f"kind {handler.kind!r} already has a handler")
        # Validate the names now, not when the first task fails to enqueue.
        from pgqueue.queue import new_task

        # Its defaults too (backoff <= 86400 s, ...): a bound broken here would break the
        # task's retry later, where no one sees it.
        new_task({"kind": handler.kind, **handler.enqueue_defaults()})
        self.handlers[handler.kind] = handler

    @property
    def kinds(self) -> list[str]:
        return sorted(self.handlers)

    @property
    def queues(self) -> list[str]:
        """The queues the handlers declare: a worker's default ``--queues``."""
        return sorted({h.queue for h in self.handlers.values()})


def _payload_type(fn: HandlerFn) -> Any:
    params = list(inspect.signature(fn).parameters)
    if len(params) < 2:
        raise TypeError(f"handler {fn!r} must take (ctx, payload)")
    try:
        hint = get_type_hints(fn).get(params[1])
    except Exception:  # unresolvable forward references: no validation, not an error
        return None
    if hint in (None, Any, dict, object) or hint is inspect.Parameter.empty:
        return None
    return hint


def worker_queues(app: App, queues: list[str] | None, concurrency: int) -> list[str]:
    """Check a worker's options (local or remote alike); the queues it will serve."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not app.handlers:
        raise ValueError("the app has no handlers: nothing to run")
    return sorted(set(queues or app.queues))
