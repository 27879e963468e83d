"""Enqueue: a producer's input validated, then inserted (one task, or a batch in one
statement), with the idempotency, ownership and dependency rules of SPEC §1, §3 and §10.

``Queue`` (``pgqueue.queue``) runs these on its pool or on a caller's connection; the
scheduler runs them on the connection it fires schedules in.
"""

from pgqueue.enqueue.batch import enqueue_many
from pgqueue.enqueue.connect import Connect, connect
from pgqueue.enqueue.single import submit
from pgqueue.enqueue.validate import Enqueued, new_task, validation_field

__all__ = [
    "Connect",
    "Enqueued",
    "connect",
    "enqueue_many",
    "new_task",
    "submit",
    "validation_field",
]
