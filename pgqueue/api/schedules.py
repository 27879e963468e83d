"""``/schedules``: recurring tasks over HTTP (SPEC §4), a thin layer over
``pgqueue.schedules.service.Schedules``, which the CLI uses too.

Only admins may change schedules (a schedule enqueues work on behalf of nobody in
particular, so a user token must not plant one); admins and workers may read them, and a
user token is refused (403): templates and fire times are other tenants' business (SPEC §4).
"""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from pgqueue.api.auth import Role, require
from pgqueue.api.services import PrincipalDep, ServicesDep
from pgqueue.schedules.models import Schedule, SchedulePatch, ScheduleSpec
from pgqueue.schedules.service import Schedules


def _schedules(services: ServicesDep) -> Schedules:
    return Schedules(services.pool, services.settings)


class SchedulesController(Controller):
    path = "/schedules"
    tags = ("schedules",)

    @post("/", status_code=HTTP_201_CREATED, summary="Create a recurring schedule")
    async def create(
        self, data: JSONBody[ScheduleSpec], services: ServicesDep, principal: PrincipalDep
    ) -> Schedule:
        """400 naming the field for a bad cron, time zone or task template; 409 if it exists."""
        require(principal, Role.ADMIN)
        return await _schedules(services).create(data)

    @get("/", summary="All schedules with their next and last fire times")
    async def list_all(self, services: ServicesDep, principal: PrincipalDep) -> list[Schedule]:
        require(principal, Role.ADMIN, Role.WORKER)
        return await _schedules(services).list()

    @get("/{name:str}", summary="One schedule")
    async def get_one(
        self, name: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> Schedule:
        require(principal, Role.ADMIN, Role.WORKER)
        return await _schedules(services).get(name)

    @patch("/{name:str}", status_code=HTTP_200_OK, summary="Change a schedule")
    async def update(
        self,
        name: FromPath[str],
        data: JSONBody[SchedulePatch],
        services: ServicesDep,
        principal: PrincipalDep,
    ) -> Schedule:
        """The fields given replace; ``{"enabled": false}`` pauses, ``true`` resumes."""
        require(principal, Role.ADMIN)
        return await _schedules(services).update(name, data)

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, summary="Delete a schedule")
    async def remove(
        self, name: FromPath[str], services: ServicesDep, principal: PrincipalDep
    ) -> None:
        require(principal, Role.ADMIN)
        await _schedules(services).delete(name)
