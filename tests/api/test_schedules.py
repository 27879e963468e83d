"""``/schedules`` over real HTTP: create, read, change, delete, and every error path."""

from __future__ import annotations

from typing import Any

import httpx


async def test_schedule_lifecycle(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    body = {
        "name": "nightly-report",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "task": {"kind": "report.build", "payload": {"scope": "all"}, "queue": "reports"},
    }
    r = await admin.post("/schedules", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["enabled"] is True and created["timezone"] == "Europe/Berlin"
    assert created["next_fire_at"].endswith("Z")  # stored and shown in UTC

    listed = (await admin.get("/schedules")).json()
    assert [s["name"] for s in listed] == ["nightly-report"]
    assert (await admin.get("/schedules/nightly-report")).json()["cron"] == "30 2 * * *"
    # templates and fire times are not a user's business (SPEC §4)
    assert (await alice.get("/schedules")).status_code == 403
    assert (await alice.get("/schedules/nightly-report")).status_code == 403

    r = await admin.patch("/schedules/nightly-report", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = await admin.patch("/schedules/nightly-report", json={"cron": "0 * * * *"})
    assert r.json()["cron"] == "0 * * * *"

    assert (await admin.delete("/schedules/nightly-report")).status_code == 204
    assert (await admin.get("/schedules/nightly-report")).status_code == 404


async def test_schedule_errors(admin: httpx.AsyncClient, alice: httpx.AsyncClient) -> None:
    good = {"name": "s1", "cron": "* * * * *", "task": {"kind": "k"}}
    r = await alice.post("/schedules", json=good)
    assert r.status_code == 403  # a user token may not plant recurring work
    assert (await admin.post("/schedules", json=good)).status_code == 201
    r = await admin.post("/schedules", json=good)
    assert r.status_code == 409 and "s1" in r.json()["detail"]

    invalid: list[tuple[dict[str, Any], str]] = [
        ({"cron": "every day"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"task": {"kind": "k", "priority": 5000}}, "priority"),
        ({"task": {"payload": {}}}, "kind"),
        ({"surprise": 1}, "surprise"),
    ]
    for change, field in invalid:
        r = await admin.post("/schedules", json={**good, "name": "s2", **change})
        assert r.status_code == 400, (change, r.text)
        assert field in r.json()["detail"], (change, r.json())

    assert (await admin.patch("/schedules/nope", json={"enabled": True})).status_code == 404
    assert (await admin.delete("/schedules/nope")).status_code == 404
    assert (await alice.delete("/schedules/s1")).status_code == 403
    async with httpx.AsyncClient(base_url=str(admin.base_url)) as anonymous:
        assert (await anonymous.get("/schedules")).status_code == 401
