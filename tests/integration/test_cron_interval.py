"""Cron and interval tasks end to end: stored and echoed as sent, changed within their kind, valid without an
end, their next fires shown (upcoming, preview), errors named, and fired on time by the real engine; after
downtime only the latest missed occurrence is sent."""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import admin
from service.store import database
from service.store.queries import SQL
from service.store.stores import Stores
from tests.integration.conftest import (
    UTC,
    Api,
    Service,
    engine_settings,
    fetch,
    next_whole_second,
    runs_settled,
    schedule_body,
    sent_msg_ids,
    start_service,
    wall_at,
)
from tests.standin import StandIn
from tests.waiting import eventually


def cron(expression: str, **fields: Any) -> dict[str, Any]:
    return {"cron": {"expression": expression, **fields}}


def interval(start: dt.datetime, every: int, unit: str, **fields: Any) -> dict[str, Any]:
    return {"interval": {"start": wall_at(start), "every": every, "unit": unit, **fields}}


async def final_fire_at(database_url: str, schedule_id: str) -> Any:
    [row] = await fetch(database_url, "SELECT final_fire_at::text AS final FROM schedules WHERE id = $1", uuid.UUID(schedule_id))
    return row["final"]


async def test_cron_task_is_stored_echoed_changed_within_its_kind_and_never_expires(api: Api, database_url: str) -> None:
    trigger = cron("0 9 * * mon-fri")
    created = await api.create(schedule_body(trigger=trigger))
    assert created.status == 200, created.json
    schedule_id = created.json["schedule_id"]
    expected = {"cron": {"expression": "0 9 * * mon-fri", "zone_type": 1}}  # as sent, zone_type added
    assert (await api.get(schedule_id)).json["trigger"] == expected
    assert (await api.list()).json["schedules"][0]["trigger"] == expected
    # No end: no last fire. Stored as 'infinity', the task is valid whatever the instant.
    assert await final_fire_at(database_url, schedule_id) == "infinity"
    [valid] = await fetch(database_url, "SELECT schedule_is_valid(state, final_fire_at, '200000-01-01 00:00:00+00'::timestamptz) AS v FROM schedules")
    assert valid["v"] is True

    start = dt.datetime.now(UTC) + dt.timedelta(days=2)
    changed = cron("@hourly", start=wall_at(start), end=wall_at(start + dt.timedelta(days=1)), zone_type=1)
    updated = await api.update(schedule_id, {"trigger": changed})
    assert updated.status == 200 and updated.json["trigger"] == changed
    assert await final_fire_at(database_url, schedule_id) != "infinity"

    to_interval = await api.update(schedule_id, {"trigger": interval(start, 1, "day")})
    assert (to_interval.status, to_interval.error_code) == (400, 28100)
    assert to_interval.json["error"]["message"] == "trigger: a cron task cannot become interval; delete it and create a new one"
    to_zone_2 = await api.update(schedule_id, {"trigger": cron("@daily", zone_type=2)})
    assert to_zone_2.json["error"]["message"] == "trigger.cron.zone_type: cannot change from 1 to 2 on an existing task"
    assert (await api.get(schedule_id)).json["trigger"] == changed


async def test_interval_task_is_stored_as_sent_and_changed_within_its_kind(api: Api) -> None:
    start = (dt.datetime.now(UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    trigger = interval(start, 15, "minute")
    created = await api.create(schedule_body(trigger=trigger))
    assert created.status == 200, created.json
    schedule_id = created.json["schedule_id"]
    assert (await api.get(schedule_id)).json["trigger"] == trigger  # no zone_type: interval has none

    changed = interval(start + dt.timedelta(hours=1), 2, "hour", end=wall_at(start + dt.timedelta(days=3)))
    updated = await api.update(schedule_id, {"trigger": changed})
    assert updated.status == 200 and updated.json["trigger"] == changed
    to_cron = await api.update(schedule_id, {"trigger": cron("* * * * *")})
    assert to_cron.json["error"]["message"] == "trigger: a interval task cannot become cron; delete it and create a new one"

    upcoming = await api.call("GET", f"/v4/schedules/{schedule_id}/upcoming", params={"count": "3"})
    assert upcoming.status == 200
    first = start + dt.timedelta(hours=1)
    assert upcoming.json == {
        "schedule_id": schedule_id,
        "time_zone": "UTC",
        "count": 3,
        "fires": [
            {"utc": (first + dt.timedelta(hours=2 * k)).strftime("%Y-%m-%dT%H:%M:%SZ"), "time": wall_at(first + dt.timedelta(hours=2 * k))}
            for k in range(3)
        ],
    }


@pytest.mark.parametrize(
    "trigger,message",
    [
        (cron("0 0 30 2 *"), "trigger.cron.expression: day of month: 30 never falls in February, so the expression never fires"),
        (cron("0 9 * * MON-XYZ"), 'trigger.cron.expression: day of week: "XYZ" is not a number nor one of SUN, MON, TUE, WED, THU, FRI, SAT'),
        (cron("0 9 * * *", start="2030-01-01 00:00:00", end="2029-01-01 00:00:00"), 'trigger.cron.end: must be after start ("2030-01-01 00:00:00"), got "2029-01-01 00:00:00"'),
        (cron("0 9 * * *", end="2020-01-01 00:00:00"), 'trigger.cron: no occurrence is left between now and end ("2020-01-01 00:00:00")'),
        ({"interval": {"start": "2020-01-01 00:00:00", "every": 5, "unit": "minute"}}, "trigger.interval.start: must be in the future (it is the first fire)"),
        ({"interval": {"start": "2099-01-01 00:00:00", "every": 5, "unit": "minute"}}, 'trigger.interval.start: the first fire must be at most one year ahead, got "2099-01-01 00:00:00"'),
        ({"interval": {"start": "2099-01-01 00:00:00", "every": 1001, "unit": "week"}}, 'trigger.interval.every: must be 1..1000, got 1001; trigger.interval.unit: must be minute, hour or day, got "week"'),
        ({"cron": {"expression": "@daily"}, "interval": {"start": "2099-01-01 00:00:00", "every": 1, "unit": "day"}}, "trigger: must hold exactly one of single, periodical, cron, interval"),
    ],
)  # fmt: skip
async def test_invalid_triggers_name_the_field_on_create_and_preview(api: Api, trigger: dict[str, Any], message: str) -> None:
    created = await api.create(schedule_body(trigger=trigger))
    previewed = await api.call("POST", "/v4/schedules/preview", json={"trigger": trigger})
    for reply in (created, previewed):
        assert (reply.status, reply.error_code) == (400, 28100)
        assert reply.json["error"]["message"].startswith(message)
    assert (await api.list()).json["total_count"] == 0


async def test_upcoming_and_preview(service: Service, database_url: str) -> None:
    api = await service.new_app(time_zone="Asia/Kolkata")
    # An interval seen before it is saved: start + k·every, as UTC and as the app's wall time (UTC+05:30).
    start = (dt.datetime.now(UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    local_start = start.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).replace(tzinfo=None)
    trigger = {"interval": {"start": local_start.strftime("%Y-%m-%d %H:%M:%S"), "every": 90, "unit": "minute"}}
    previewed = await api.call("POST", "/v4/schedules/preview", json={"trigger": trigger}, params={"count": "2"})
    assert previewed.status == 200, previewed.json
    assert previewed.json == {
        "time_zone": "Asia/Kolkata",
        "count": 2,
        "fires": [
            {"utc": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "time": local_start.strftime("%Y-%m-%d %H:%M:%S")},
            {"utc": (start + dt.timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "time": (local_start + dt.timedelta(minutes=90)).strftime("%Y-%m-%d %H:%M:%S")},
        ],
    }  # fmt: skip
    # Previewed, not stored; the default count is 10.
    assert (await api.list()).json["total_count"] == 0
    assert (await api.call("POST", "/v4/schedules/preview", json={"trigger": trigger})).json["count"] == 10

    # A zone_type 2 cron task: each occurrence's waves, earliest (UTC+14) first.
    created = await api.create(schedule_body(trigger=cron("0 12 * * *", zone_type=2)))
    schedule_id = created.json["schedule_id"]
    upcoming = (await api.call("GET", f"/v4/schedules/{schedule_id}/upcoming", params={"count": "100"})).json
    assert upcoming["count"] == 100 and upcoming["time_zone"] == "Asia/Kolkata"
    instants = [fire["utc"] for fire in upcoming["fires"]]
    assert instants == sorted(instants) and all(fire["wave"] for fire in upcoming["fires"])
    for fire in upcoming["fires"]:  # the wave's local time is 12:00
        utc = dt.datetime.strptime(fire["utc"], "%Y-%m-%dT%H:%M:%SZ")
        sign, hours, minutes = fire["wave"][0], int(fire["wave"][1:3]), int(fire["wave"][4:])
        offset = dt.timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
        assert (utc + offset).time() == dt.time(12, 0)

    # Disabled: no fires; enabled again, they are back.
    await api.update(schedule_id, {"enabled": False})
    paused = (await api.call("GET", f"/v4/schedules/{schedule_id}/upcoming")).json
    assert (paused["count"], paused["fires"]) == (0, [])
    await api.update(schedule_id, {"enabled": True})
    assert (await api.call("GET", f"/v4/schedules/{schedule_id}/upcoming")).json["count"] == 10

    # Errors: count out of range names it; an unknown, malformed or other app's task is 404 28104.
    for count in ("0", "101", "abc", "", "1.5"):
        for reply in (
            await api.call("GET", f"/v4/schedules/{schedule_id}/upcoming", params={"count": count}),
            await api.call("POST", "/v4/schedules/preview", json={"trigger": trigger}, params={"count": count}),
        ):
            assert (reply.status, reply.error_code) == (400, 28100)
            assert reply.json["error"]["message"] == f'count: must be an integer 1..100, got "{count}"'
    other = await service.new_app()
    for reply in (
        await other.call("GET", f"/v4/schedules/{schedule_id}/upcoming"),
        await api.call("GET", f"/v4/schedules/{uuid.uuid4()}/upcoming"),
        await api.call("GET", "/v4/schedules/not-a-uuid/upcoming"),
    ):
        assert (reply.status, reply.error_code) == (404, 28104)
    # The body of a preview is {"trigger": ...} and nothing else.
    bad = await api.call("POST", "/v4/schedules/preview", json={"trigger": trigger, "name": "x"})
    assert bad.json["error"]["message"] == "name: is not a known field"
    # A single zone_type 2 trigger with every wave past answers as a create would.
    past = await api.call("POST", "/v4/schedules/preview", json={"trigger": {"single": {"time": "2020-01-01 00:00:00", "zone_type": 2}}})
    assert (past.status, past.error_code) == (404, 28105)
    for client in (api, other):
        client.check_against_spec()


async def test_open_ended_tasks_count_against_the_cap_and_outlive_the_expire_sweep(service: Service, database_url: str) -> None:
    api = await service.new_app(max_schedules=2)
    start = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    kept = (await api.create(schedule_body(trigger=cron("*/5 * * * *")))).json["schedule_id"]
    paused = (await api.create(schedule_body(trigger=interval(start, 1, "hour")))).json["schedule_id"]
    await api.update(paused, {"enabled": False})
    full = await api.create(schedule_body(trigger=cron("@daily")))
    assert (full.status, full.error_code) == (400, 28100)
    # The engine's sweep expires disabled tasks whose last fire passed, and fully planned ones: neither has one.
    await fetch(database_url, SQL["expire_lapsed_schedules"])
    listed = (await api.list()).json
    assert listed["total_count"] == 2 and {task["schedule_id"] for task in listed["schedules"]} == {kept, paused}
    api.check_against_spec()


def tagged(trigger: dict[str, Any], task: str) -> dict[str, Any]:
    """A create body whose push says which task sent it (the stand-in reads custom_args.task)."""
    body = schedule_body(trigger=trigger)
    body["push"]["custom_args"] = {"task": task}
    return body


async def recorded(api: Api, schedule_id: str, count: int) -> list[str]:
    """The task's msg-ids once at least `count` sends are recorded."""
    ids: list[str] = await eventually(
        lambda: sent_msg_ids(api, schedule_id), until=lambda ids: len(ids) >= count, what=f"{count} sends recorded"
    )
    return ids


@pytest.mark.timeout(150)
async def test_cron_and_interval_tasks_fire_on_time(dispatching_service: Service, standin: StandIn) -> None:
    """A cron task due at the next minute boundary and an interval of one minute, through the real engine:
    each fire on time, its msg-id recorded, and the tasks still valid afterwards (no end). About a minute."""
    api = await dispatching_service.new_app()
    start = next_whole_second(1.5)
    # `start` keeps the cron task's first fire at least 3 s away, time enough to plan it ahead.
    not_before = dt.datetime.now(UTC) + dt.timedelta(seconds=3)
    boundary = not_before.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    every_minute = (await api.create(tagged(cron("* * * * *", start=wall_at(not_before)), "cron"))).json["schedule_id"]
    minutely = (await api.create(tagged(interval(start, 1, "minute"), "interval"))).json["schedule_id"]
    due = {"interval": [start, start + dt.timedelta(minutes=1)], "cron": [boundary]}

    # The interval's second fire (start + 1 min) comes before the cron task's second (boundary + 1 min).
    deliveries = await standin.wait_for(3, timeout=75)
    for task, instants in due.items():
        arrived = sorted((delivery for delivery in deliveries if delivery.task == task), key=lambda d: d.received_at)
        assert len(arrived) >= len(instants), (task, deliveries)
        for instant, delivery in zip(instants, arrived, strict=False):
            lateness = delivery.received_at - instant.timestamp()
            assert 0 <= lateness < 0.5, f"{task} due {instant}: lateness {lateness * 1000:.0f} ms"
        schedule_id = minutely if task == "interval" else every_minute
        ids = await recorded(api, schedule_id, len(instants))
        assert ids[: len(instants)] == [delivery.msg_id for delivery in arrived[: len(instants)]]
        assert (await api.get(schedule_id)).status == 200
    api.check_against_spec()


async def test_after_downtime_only_the_latest_missed_occurrence_is_sent(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    """Ten minutes without an engine: of the every-minute cron task's and the one-minute interval's missed fires,
    each sends only its latest (within MISFIRE_GRACE); the others are recorded missed. Both ended just before
    the engine came back, so no new fire can land in the test's window."""
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app = await admin.register_app(stores.schedules, "downtime")
    finally:
        await stores.close()
    now = dt.datetime.now(UTC).replace(microsecond=0)
    down_since = now - dt.timedelta(minutes=10)
    end = wall_at(now - dt.timedelta(seconds=1))
    first_cron = down_since.replace(second=0) + dt.timedelta(minutes=1)
    tasks = {  # trigger, first fire, last fire
        "cron": (cron("* * * * *", end=end, zone_type=1), first_cron, (now - dt.timedelta(seconds=1)).replace(second=0)),
        "interval": (interval(down_since, 1, "minute", end=end), down_since, down_since + dt.timedelta(minutes=9)),
    }
    push = {"to": "all", "body": {"platform": "all", "notification": {"alert": "late"}}}
    connection = await asyncpg.connect(database_url)
    try:
        await database.register_json_codecs(connection)
        for kind, (trigger, first, last) in tasks.items():
            await connection.execute(
                "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, zone_type, time_zone) "
                "VALUES (gen_random_uuid(), $1, $2, true, $3, $4, $5, $6, $2, 1, 'UTC')",
                app.app.app_key, kind, trigger, push, first, last,
            )  # fmt: skip
    finally:
        await connection.close()

    await start_service(engine_settings(database_url, tmp_path, standin.url, misfire_grace=300), aiohttp_server, session)
    await standin.wait_for(2, timeout=10)
    await eventually(lambda: runs_settled(database_url, 19), what="every run's outcome recorded")
    # Proves a negative, so a bounded wait: nothing else is sent.
    await asyncio.sleep(0.5)
    assert len(standin.deliveries) == 2
    rows = await fetch(
        database_url,
        "SELECT s.kind, r.due_at, r.state FROM runs r JOIN schedules s ON s.id = r.schedule_id ORDER BY s.kind, r.due_at",
    )
    for kind in tasks:
        runs = [(row["due_at"], row["state"]) for row in rows if row["kind"] == kind]
        assert [state for _, state in runs] == ["missed"] * (len(runs) - 1) + ["sent"], kind
        assert len(runs) >= 9 and runs[-1][0] == tasks[kind][2], kind


async def test_preview_is_not_a_schedule_id(api: Api) -> None:
    """Other methods on /v4/schedules/preview answer 405 with only POST allowed, not a schedule's methods."""
    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        reply = await api.call(method, "/v4/schedules/preview")
        assert (reply.status, reply.error_code, reply.headers["Allow"]) == (405, 28100, "POST"), method
