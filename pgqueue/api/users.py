"""``/users/{user}/limits`` and ``/users/{user}/usage`` (budgets and caps, SPEC §12), and
``GET /tasks/{id}/why``.

Admins set limits; a user may read their own limits and usage (anyone else's is a 404, like a
task that is not theirs). The rules live in SQL (``sql/functions/limits.sql``); these handlers
only check who asks and call ``pgqueue.db.limits``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody, QueryParameter

from pgqueue.api.auth import Principal, Role, require
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.api.tasks import readable
from pgqueue.db import limits
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.limits import UserLimits, UserLimitsOut, UserName, UserSpend, Why


def _user(name: str) -> str:
    try:
        return msgspec.convert(name, UserName)
    except msgspec.ValidationError as exc:
        raise InvalidInput("user", f"{name[:300]!r} is not a user id: {exc}") from None


def _may_read(principal: Principal, user: str) -> None:
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.USER and principal.user_id == user:
        return
    raise NotFound(f"user {user} has no limits you may read")


class UsersController(Controller):
    path = "/users"
    tags = ("limits",)

    @put("/{user:str}/limits", summary="Set a user's budgets and cap (admin)")
    async def set_limits(
        self,
        user: FromPath[str],
        data: JSONBody[UserLimits],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> UserLimitsOut:
        """Replaces all three limits (an absent or null one is removed). A budget at or below
        the spend stops the user's running tasks; a raised one resumes their claims at once."""
        require(principal, Role.ADMIN)
        name = _user(user)
        async with services.pool.connection() as conn:
            return await limits.set_user_limits(conn, name, data)

    @get("/{user:str}/limits", summary="A user's budgets and cap")
    async def get_limits(
        self, user: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> UserLimitsOut:
        name = _user(user)
        _may_read(principal, name)
        async with services.pool.connection() as conn:
            return await limits.get_user_limits(conn, name)

    @get("/{user:str}/usage", summary="A user's spend today, this month and per day")
    async def get_usage(
        self,
        user: FromPath[str],
        services: ServicesDep,
        principal: PrincipalDep,
        days: Annotated[int, QueryParameter(ge=1, le=366)] = 31,
    ) -> UserSpend:
        name = _user(user)
        _may_read(principal, name)
        async with services.pool.connection() as conn:
            return await limits.get_user_usage(conn, name, days)


class WhyController(Controller):
    path = "/tasks"
    tags = ("tasks",)

    @get("/{task_id:str}/why", summary="Why a task is not running")
    async def why(
        self, task_id: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> Why:
        task = await readable(services, principal, task_id)
        return await services.queue.why(task.id)
