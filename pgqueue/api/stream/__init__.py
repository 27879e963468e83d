"""``WS /ws``: live task updates (SPEC §5), one LISTEN connection per process fanned out here.

The ``Hub`` is woken by every ``pgqueue_events`` notification from the process's Listener.
When someone follows a change it names, it reads the audit trail after its position (ONE
query per batch of notifications, never one per subscriber, and one for the rows of the tasks
concerned), encodes each change ONCE into one ASGI event carrying its ``event_id``, and offers
it to each interested subscriber whose principal may read the task (authorization per
message). Each change is its own frame; changes are never merged. A connection's first
subscribe joins the router from a snapshot (a resume's ``since``, or now), so it gets every
change after that point exactly once (docs/architecture.md, "Gap-free stream positions").

An idle subscriber (nothing buffered, no send under way) gets the frame written at once,
when the transport takes it without waiting. Otherwise the frame goes to its bounded buffer
(default 10,000 messages: it holds references to the event shared by all subscribers, so it
costs pointers, not copies; it must exceed the largest burst, e.g. a 10,000-task batch),
drained by a task that exists only while something is buffered. An idle connection has no
task, queue or timer of its own (the hub pings the silent ones every heartbeat interval), so
10,000 of them cost their sockets and little else. The hub never awaits a subscriber: a
full buffer closes that connection (code 1013, "try again later"); the client reconnects and
resumes from its last ``event_id`` (or resubscribes, getting the current state first). So a
slow or dead client can neither grow memory nor delay anyone else, and the database is never
waited on for it. Connections are borrowed from the pool only for the batch reads, never
held by a stream.

What one connection may cost is bounded (SPEC §5 "Bounds"): at most ``MAX_TASK_IDS`` task
ids and ``MAX_QUEUES`` queues; an op that would pass either is refused whole. Every reply is
proportional to the op that caused it (an ack names what the op changed and the totals, never
the whole set). Bad ops are answered at most ``ERROR_REPLIES`` at a time (refilled per
second), and a connection that keeps sending them is closed with 1008. Every connection's
token is checked again against the Authenticator's cache every ``auth_check_s``: a revoked
token's socket is closed with 4401 once the cache lets go of it.

The package, in the order a change travels: ``incoming`` (the client's ops), ``hub`` (who is
connected, subscribe and unsubscribe), ``subscriptions`` (who follows what), ``router``
(reads the trail, hands changes out), ``subscriber`` (one connection's buffer and bounds),
``frames`` (what goes on the wire), ``endpoint`` (the ``/ws`` handler).
"""

from pgqueue.api.stream.endpoint import stream
from pgqueue.api.stream.hub import Hub
from pgqueue.api.stream.subscriber import BAD_OPS, ERROR_REPLIES, MAX_QUEUES, MAX_TASK_IDS

__all__ = ["BAD_OPS", "ERROR_REPLIES", "MAX_QUEUES", "MAX_TASK_IDS", "Hub", "stream"]
