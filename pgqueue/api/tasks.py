"""``/tasks``: enqueue, read, list, cancel, retry, events — a thin layer over ``Queue``.

Ownership is the only rule added here: a ``user`` token's tasks are its own (``user_id`` is
forced to the token's user), and another user's task is a 404, as if it did not exist. A
``worker`` token names no owner: its task takes the owner of its ``parent_id`` (``Queue``
checks the parent and copies its owner), so a worker cannot make tasks in a user's name.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from pgqueue import otel
from pgqueue.api.auth import Principal, Role
from pgqueue.api.schemas import MAX_WAIT_S, Batch, SignalIn
from pgqueue.api.services import PrincipalDep, Services, ServicesDep
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.pages import Page
from pgqueue.tasks import Event, NewTask, Status, Task

WaitParam = Annotated[
    float | None,
    QueryParameter(ge=0, le=MAX_WAIT_S, description="hold until terminal, ≤ 300 s"),
]


# Trace Context: a malformed value is ignored (not refused), see otel.valid_traceparent.
TraceparentHeader = Annotated[
    str | None,
    HeaderParameter(
        name="traceparent",
        required=False,
        max_length=512,
        description="W3C Trace Context: the enqueue joins the caller's trace",
    ),
]


def owned(task: Task, principal: PrincipalDep) -> Task:
    """The task if the principal may read it; else NotFound, so ids of others' do not leak."""
    if not principal.may_read(task.user_id):
        raise NotFound(f"task {task.id} does not exist")
    return task


async def readable(services: Services, principal: Principal, task_id: str) -> Task:
    return owned(await services.queue.get(task_id), principal)


def _for_principal(task: NewTask, principal: PrincipalDep, field: str = "user_id") -> NewTask:
    """The task as this principal may enqueue it: a user's is theirs, a worker's names no one."""
    if principal.role is Role.USER and task.user_id != principal.user_id:
        return msgspec.structs.replace(task, user_id=principal.user_id)
    if principal.role is Role.WORKER and task.user_id is not None:
        raise InvalidInput(
            field, "a worker token cannot name an owner; the task takes its parent_id's owner"
        )
    return task


class TasksController(Controller):
    path = "/tasks"
    tags = ("tasks",)

    @post("/", status_code=HTTP_201_CREATED, summary="Enqueue a task")
    async def submit(
        self,
        data: JSONBody[NewTask],
        services: ServicesDep,
        principal: PrincipalDep,
        request: Request[Any, Any, Any],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=255)
        ] = None,
        wait: WaitParam = None,
        traceparent: TraceparentHeader = None,
    ) -> Response[Task]:
        """201 + the task; 200 + ``Idempotent-Replayed: true`` when the key already exists.

        A W3C ``traceparent`` header puts the enqueue (and the task's run) in the caller's
        trace (pgqueue/otel.py)."""
        if idempotency_key is not None:
            if data.idempotency_key not in (None, idempotency_key):
                raise InvalidInput(
                    "idempotency_key", "the Idempotency-Key header and the body field differ"
                )
            data = msgspec.structs.replace(data, idempotency_key=idempotency_key)
        data = _for_principal(data, principal)
        # The producer span opens here, in this request's context: the coalescer below
        # writes many requests' tasks from a task of its own.
        with otel.sending([data], parent=otel.valid_traceparent(traceparent)) as send:
            data = send.tasks[0]
            if data.idempotency_key is None:
                # Shares a statement and a commit with concurrent requests (api/coalesce.py).
                task, replayed = await services.enqueuer.submit(data), False
            else:
                enqueued = await services.queue.submit(data)
                task, replayed = enqueued.task, enqueued.replayed
            send.created([task])
        if not replayed:
            services.metrics.enqueued.inc()
        if wait:
            task = await services.wait_task(request.receive, task, wait)
        if replayed:
            return Response(task, status_code=HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
        return Response(task, status_code=HTTP_201_CREATED)

    @post("/batch", status_code=HTTP_201_CREATED, summary="Enqueue up to 10,000 tasks at once")
    async def submit_batch(
        self,
        data: JSONBody[Batch],
        services: ServicesDep,
        principal: PrincipalDep,
        traceparent: TraceparentHeader = None,
    ) -> list[Task]:
        """One statement, one transaction: all are enqueued or none is. Input order kept.

        A user's tasks without a ``user_id`` get theirs from the statement's default, so only
        tasks naming someone else are copied (copying all of them showed in a batch's profile)."""
        owner = principal.user_id if principal.role is Role.USER else None
        tasks = [
            t if t.user_id is None else _for_principal(t, principal, f"tasks[{i}].user_id")
            for i, t in enumerate(data.tasks)
        ]
        with otel.sending(tasks, parent=otel.valid_traceparent(traceparent)) as send:
            created = await services.queue.enqueue_many(send.tasks, user_id=owner)
        services.metrics.enqueued.inc(len(created))
        return created

    @get("/{task_id:str}", summary="Get a task")
    async def get_task(
        self,
        task_id: FromPath[str],
        services: ServicesDep,
        principal: PrincipalDep,
        request: Request[Any, Any, Any],
        wait: WaitParam = None,
    ) -> Task:
        task = await readable(services, principal, task_id)
        if wait and not task.status.terminal:
            task = await services.wait_task(request.receive, task, wait)
        return task

    @get("/", summary="List tasks, newest first (keyset pagination)")
    async def list_tasks(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        status: FromQuery[Status | None] = None,
        queue: Annotated[str | None, QueryParameter(max_length=64)] = None,
        kind: Annotated[str | None, QueryParameter(max_length=128)] = None,
        tag: Annotated[str | None, QueryParameter(max_length=128)] = None,
        user_id: Annotated[str | None, QueryParameter(max_length=128)] = None,
        parent_id: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=20)] = None,
    ) -> Page:
        """``user_id`` filters for admins and workers; a user always lists their own."""
        if not principal.sees_all:
            if user_id not in (None, principal.user_id):
                raise InvalidInput("user_id", "a user token lists its own tasks only")
            user_id = principal.user_id
        return await services.queue.list(
            status=status,
            queue=queue,
            kind=kind,
            tag=tag,
            user_id=user_id,
            parent_id=parent_id,
            limit=limit,
            cursor=cursor,
        )

    @post("/{task_id:str}/cancel", status_code=HTTP_200_OK, summary="Cancel a task")
    async def cancel(
        self, task_id: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> Task:
        """Pending: cancelled now. Running: cancel requested, its worker stops it. Else 409."""
        task = await readable(services, principal, task_id)
        _may_act(task, principal)
        return await services.queue.cancel(task.id)

    @post("/{task_id:str}/retry", status_code=HTTP_200_OK, summary="Retry a task by hand")
    async def retry(
        self, task_id: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> Task:
        """A failed or cancelled task back to pending, checkpoint kept. Else 409."""
        task = await readable(services, principal, task_id)
        _may_act(task, principal)
        return await services.queue.retry(task.id)

    @post("/{task_id:str}/signal", status_code=HTTP_202_ACCEPTED, summary="Signal a task")
    async def signal(
        self,
        task_id: FromPath[str],
        data: JSONBody[SignalIn],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Response[Task]:
        """Send a signal (SPEC §11): stored, and a task waiting for it runs again. 202 + the
        task; the same signal again: 200 with ``Signal-Replayed: true``; the same name with
        another payload, or a finished task: 409. Users signal their own tasks only."""
        task = await readable(services, principal, task_id)
        _may_act(task, principal)
        sent = await services.queue.send_signal(task.id, data.name, data.payload)
        if sent.replayed:
            return Response(sent.task, status_code=HTTP_200_OK, headers={"Signal-Replayed": "true"})
        return Response(sent.task, status_code=HTTP_202_ACCEPTED)

    @get("/{task_id:str}/events", summary="A task's audit trail, oldest first")
    async def events(
        self, task_id: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> list[Event]:
        task = await readable(services, principal, task_id)
        return await services.queue.events(task.id)


def _may_act(task: Task, principal: PrincipalDep) -> None:
    if not principal.may_act_on(task.user_id):
        raise PermissionDeniedException(f"role: a {principal.role} token cannot change tasks")
