"""Every v4 endpoint on a real PostgreSQL: successes and every error row of the contract."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
import zoneinfo

import asyncpg
import pytest

from tests.bulk import bulk_schedules
from tests.integration.conftest import Api, Service, fetch, future_time, schedule_body, sent_msg_ids
from tests.waiting import eventually

# The keys the extensions of issue 12 add to every schedule answered (after EngageLab's five).
EXTENSION_KEYS = {
    "description", "max_failures", "consecutive_failures", "disabled_reason", "next_run_at", "last_run", "params"
}


async def test_create_then_get_echoes_the_object(api: Api) -> None:
    body = schedule_body(zone_type=None)
    body["push"]["body"]["notification"]["android"] = {"unknown_inner": [1, 2]}
    created = await api.create(body)
    assert created.status == 200
    assert created.json["name"] == "schedule push example"
    schedule_id = created.json["schedule_id"]
    assert uuid.UUID(schedule_id).version == 4
    fetched = await api.get(schedule_id)
    assert fetched.status == 200
    expected_trigger = {"single": {"time": body["trigger"]["single"]["time"], "zone_type": 1}}
    # The v4 keys, exactly; then the extensions' keys (issue 12) with their defaults.
    assert fetched.json == {
        "schedule_id": schedule_id,
        "name": body["name"],
        "enabled": True,
        "trigger": expected_trigger,
        "push": body["push"],
        "description": "",
        "max_failures": 0,
        "consecutive_failures": 0,
        "disabled_reason": None,
        "next_run_at": body["trigger"]["single"]["time"].replace(" ", "T") + "Z",  # the app's zone is UTC
        "last_run": None,
        "params": {},
    }


async def test_create_accepts_json_sent_as_form_content_type(api: Api) -> None:
    import json

    reply = await api.call(
        "POST",
        "/v4/schedules",
        data=json.dumps(schedule_body()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200


@pytest.mark.parametrize(
    "raw,message",
    [
        ("{not json", "body: request data is not JSON"),
        ("", "body: request data is not JSON"),
        ("[1,2]", "body: must be a JSON object"),
    ],
)
async def test_create_rejects_non_json(api: Api, raw: str, message: str) -> None:
    reply = await api.call("POST", "/v4/schedules", data=raw)
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"name": None}, "name: must be a string"),
        ({"colour": "red"}, "colour: is not a known field"),
        ({"enabled": False}, "enabled: must be true when a task is created"),
        ({"trigger": {"single": {"time": "2014-2-15 13:16:59", "zone_type": 1}}}, 'trigger.single.time: must be yyyy-mm-dd hh:mm:ss, got "2014-2-15 13:16:59"'),
        ({"trigger": {"single": {"time": "2030-02-30 10:00:00"}}}, 'trigger.single.time: is not a real calendar time, got "2030-02-30 10:00:00"'),
        ({"trigger": {"single": {"time": "2027-01-01 10:00:00", "zone_type": 3}}}, "trigger.single.zone_type: must be 1 (app time zone) or 2 (terminal time zone), got 3"),
        ({"trigger": {"periodical": {"start": "2026-01-01 00:00:00", "end": "2026-02-01 00:00:00", "time": "10:00:00", "time_unit": "day", "frequency": 0}}}, "trigger.periodical.frequency: must be 1..100 (every Nth day, week or month), got 0"),
        ({"push": {"to": "all"}}, "push.body: is required"),
    ],
)
async def test_create_rejects_bad_fields_naming_them(api: Api, change: dict, message: str) -> None:
    body = schedule_body()
    for key, value in change.items():
        if value is None:
            del body[key]
            message = f"{key}: is required"
        else:
            body[key] = value
    reply = await api.create(body)
    assert (reply.status, reply.json) == (400, {"error": {"code": 28100, "message": message}})
    assert (await api.list()).json["total_count"] == 0


async def test_create_rejects_past_and_over_the_horizon(api: Api) -> None:
    past = await api.create(schedule_body(time=future_time(-5)))
    assert past.status == 400 and "must be in the future" in past.json["error"]["message"]
    far = await api.create(schedule_body(time=future_time(367 * 86400)))
    assert far.status == 400 and "at most one year ahead" in far.json["error"]["message"]
    assert (await api.list()).json["total_count"] == 0


async def test_time_is_read_in_the_app_time_zone(service: Service, database_url: str) -> None:
    tokyo = await service.new_app(time_zone="Asia/Tokyo")
    # 30 minutes ahead on a Tokyo clock is accepted; the same wall time read as UTC would be 9 h in the past.
    local = future_time(1800, zoneinfo.ZoneInfo("Asia/Tokyo"))
    created = await tokyo.create(schedule_body(time=local))
    assert created.status == 200
    [row] = await fetch(database_url, "SELECT next_fire_at FROM schedules WHERE id = $1", uuid.UUID(created.json["schedule_id"]))
    due = row["next_fire_at"]
    expected = dt.datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert due == expected
    tokyo.check_against_spec()


async def test_zone_type_2_with_every_wave_past_is_28105(api: Api, database_url: str) -> None:
    # 27 hours ago is past even at UTC-12.
    reply = await api.create(schedule_body(time=future_time(-27 * 3600), zone_type=2))
    assert (reply.status, reply.error_code) == (404, 28105)
    # Half past: 13 hours ago has come at UTC+14..UTC-12? No: it is still ahead west of UTC-13 -> some remain.
    partly = await api.create(schedule_body(time=future_time(-3 * 3600), zone_type=2))
    assert partly.status == 200
    states = await fetch(
        database_url, "SELECT state, count(*) FROM runs WHERE schedule_id = $1 GROUP BY state", uuid.UUID(partly.json["schedule_id"])
    )
    skipped = {row["state"]: row["count"] for row in states}["skipped"]
    assert 0 < skipped < 40  # the waves east of UTC-03:00 were recorded as skipped, not sent
    detail = await api.get(partly.json["schedule_id"])
    assert detail.json["trigger"]["single"]["zone_type"] == 2


async def test_cid_returns_the_first_result(api: Api) -> None:
    first = await api.create(schedule_body(cid="8103a4c628a0b98974ec1949-711261d4"))
    again = await api.create(schedule_body(name="another name", cid="8103a4c628a0b98974ec1949-711261d4"))
    assert first.status == again.status == 200
    assert again.json == first.json
    other = await api.create(schedule_body(cid="a-different-cid"))
    assert other.json["schedule_id"] != first.json["schedule_id"]
    assert (await api.list()).json["total_count"] == 2


async def test_cap_holds_under_concurrent_creates(service: Service) -> None:
    capped = await service.new_app(max_schedules=20)
    replies = await asyncio.gather(*(capped.create(schedule_body(name=f"race_{n}")) for n in range(60)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses.count(200) == 20
    assert statuses.count(400) == 40
    refused = next(reply for reply in replies if reply.status == 400)
    assert refused.json["error"] == {"code": 28100, "message": "schedule: the app already has 20 valid tasks, its cap is 20"}
    assert (await capped.list()).json["total_count"] == 20
    capped.check_against_spec()


async def test_cap_counts_valid_tasks_only(service: Service) -> None:
    capped = await service.new_app(max_schedules=2)
    first = await capped.create(schedule_body(time=future_time(1.5)))
    await capped.create(schedule_body())
    assert (await capped.create(schedule_body())).status == 400
    # Once the first task's time has passed it is expired: it frees its place and leaves the list. The engine
    # (the local backend) fires it at that time: once its msg-id is recorded, the time has passed.
    expired_id = first.json["schedule_id"]
    await eventually(lambda: sent_msg_ids(capped, expired_id), what="the first task fired")
    assert (await capped.create(schedule_body())).status == 200
    assert (await capped.get(expired_id)).status == 404
    assert (await capped.delete(expired_id)).status == 404
    put = await capped.update(expired_id, {"name": "late"})
    assert (put.status, put.error_code) == (400, 28100)
    assert put.json["error"]["message"] == "schedule: has expired and can no longer be updated"
    # It keeps its msg-ids: the engine fired it through the local backend when it fell due.
    ids = (await capped.msg_ids(expired_id)).json
    assert ids["count"] == 1 and ids["msgids"] == ids["MsgIds"] and ids["msgids"][0].startswith("local-")
    listed = await capped.list()
    assert expired_id not in [item["schedule_id"] for item in listed.json["schedules"]]
    capped.check_against_spec()


async def test_a_deleted_task_frees_its_place_under_the_cap(service: Service) -> None:
    """A create below its app's bound does not count the app (sql/0011); a deletion leaves the bound high, so the
    create past it must count and find the place free."""
    capped = await service.new_app(max_schedules=2)
    first = await capped.create(schedule_body())
    assert (await capped.create(schedule_body())).status == 200
    assert (await capped.create(schedule_body())).status == 400
    assert (await capped.delete(first.json["schedule_id"])).status == 200
    assert (await capped.create(schedule_body())).status == 200
    refused = await capped.create(schedule_body())
    assert refused.json["error"] == {"code": 28100, "message": "schedule: the app already has 2 valid tasks, its cap is 2"}


async def test_the_cap_holds_for_tasks_inserted_outside_the_api(service: Service, database_url: str) -> None:
    """The bound that spares a create the count grows with every insert into schedules (sql/0011's trigger), not
    only with the API's creates: tasks loaded in bulk still count against the cap."""
    capped = await service.new_app(max_schedules=5)
    for _ in range(2):
        assert (await capped.create(schedule_body())).status == 200
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    await bulk_schedules(database_url, capped.auth.app_key, tomorrow, 3)
    refused = await capped.create(schedule_body())
    assert refused.json["error"] == {"code": 28100, "message": "schedule: the app already has 5 valid tasks, its cap is 5"}


async def test_a_create_waits_for_an_insert_of_its_app_still_in_flight(service: Service, database_url: str) -> None:
    """An insert not yet committed holds its app's row (the foreign key's KEY SHARE lock), which a create's FOR
    UPDATE waits for: the create then reads the bound that insert raised. Read before the commit, the bound (2)
    would let a sixth task in."""
    capped = await service.new_app(max_schedules=5)
    for _ in range(2):
        assert (await capped.create(schedule_body())).status == 200
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, "
                "zone_type, time_zone) "
                "SELECT gen_random_uuid(), $1, 'bulk', true, '{}', '{}', $2, $2, 'single', 1, 'UTC' "
                "FROM generate_series(1, 3)",
                capped.auth.app_key, tomorrow,
            )  # fmt: skip
            create = asyncio.create_task(capped.create(schedule_body()))
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%create_schedule%'"
            await eventually(lambda: connection.fetchval(waiting), what="the create waits for the insert's commit")
        refused = await create
    finally:
        await connection.close()
    assert refused.json["error"] == {"code": 28100, "message": "schedule: the app already has 5 valid tasks, its cap is 5"}


async def test_list_pages_oldest_first(api: Api) -> None:
    created = [(await api.create(schedule_body(name=f"task_{n}"))).json["schedule_id"] for n in range(53)]
    first = await api.list()
    assert (first.json["total_count"], first.json["total_pages"], first.json["page"]) == (53, 2, 1)
    assert [item["schedule_id"] for item in first.json["schedules"]] == created[:50]
    assert set(first.json["schedules"][0]) == {"schedule_id", "name", "enabled", "trigger", "push"} | EXTENSION_KEYS
    second = await api.list("2")
    assert [item["schedule_id"] for item in second.json["schedules"]] == created[50:]
    beyond = await api.list("7")
    assert beyond.json == {"total_count": 53, "total_pages": 2, "page": 7, "schedules": []}


async def test_list_when_empty(api: Api) -> None:
    assert (await api.list()).json == {"total_count": 0, "total_pages": 0, "page": 1, "schedules": []}


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "", "٣"])
async def test_list_page_must_be_a_positive_integer(api: Api, page: str) -> None:
    reply = await api.list(page)
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"].startswith("page: must be a positive integer")


async def test_get_unknown_and_malformed_ids(api: Api) -> None:
    for schedule_id in (str(uuid.uuid4()), "not-a-uuid", "1234"):
        reply = await api.get(schedule_id)
        assert (reply.status, reply.error_code) == (404, 28104)


async def test_msg_ids_both_spellings(api: Api, database_url: str) -> None:
    schedule_id = (await api.create(schedule_body(zone_type=2))).json["schedule_id"]
    empty = {"count": 0, "msgids": [], "MsgIds": []}
    assert (await api.msg_ids(schedule_id)).json == empty
    assert (await api.msg_ids(schedule_id, "msg_ids")).json == empty
    # Sent runs are the engine's to write; here two are written directly to check the read side and its order.
    now = dt.datetime.now(dt.timezone.utc)
    for msg_id, offset, sent_at in (("2234567", 480, now), ("12345567", 540, now - dt.timedelta(seconds=5))):
        await fetch(
            database_url,
            "INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, msg_id, sent_at) "
            "VALUES (gen_random_uuid(), $1, $2, $3, 'sent', $4, $5)",
            uuid.UUID(schedule_id), sent_at, offset, msg_id, sent_at,
        )
    expected = {"count": 2, "msgids": ["12345567", "2234567"], "MsgIds": ["12345567", "2234567"]}
    assert (await api.msg_ids(schedule_id)).json == expected
    assert (await api.msg_ids(schedule_id, "msg_ids")).json == expected
    assert (await api.msg_ids("nope")).status == 404


async def test_update_one_field_keeps_the_others(api: Api) -> None:
    body = schedule_body()
    schedule_id = (await api.create(body)).json["schedule_id"]
    reply = await api.update(schedule_id, {"name": "renamed_任务"})
    assert reply.status == 200
    assert {key: value for key, value in reply.json.items() if key not in EXTENSION_KEYS} == {
        "schedule_id": schedule_id,
        "name": "renamed_任务",
        "enabled": True,
        "trigger": body["trigger"],
        "push": body["push"],
    }
    assert (await api.get(schedule_id)).json == reply.json


async def test_update_whole_push_trigger_and_disable(api: Api) -> None:
    schedule_id = (await api.create(schedule_body())).json["schedule_id"]
    new_push = {"to": "all", "body": {"platform": ["android", "ios"], "message": {"msg_content": "hello"}}, "extra_field": 1}
    new_time = future_time(7200)
    reply = await api.update(
        schedule_id, {"enabled": False, "push": new_push, "trigger": {"single": {"time": new_time, "zone_type": 1}}}
    )
    assert reply.status == 200
    assert reply.json["enabled"] is False
    assert reply.json["push"] == new_push
    assert reply.json["trigger"] == {"single": {"time": new_time, "zone_type": 1}}
    assert (await api.get(schedule_id)).json == reply.json


@pytest.mark.parametrize(
    "update,message",
    [
        ({}, "must hold at least one of name, enabled, trigger, push, description, max_failures, params"),
        ({"push": {"alert": "web scheduled task"}}, "push.to: is required"),
        ({"trigger": {"single": {"time": "2014-02-15 13:16:59", "zone_type": 1}}}, "trigger.single.time: must be in the future"),
        ({"trigger": {"single": {"time": "2027-01-01 10:00:00", "zone_type": 2}}}, "trigger.single.zone_type: cannot change from 1 to 2"),
        ({"trigger": {"periodical": {"start": "2026-01-01 00:00:00", "end": "2026-02-01 00:00:00", "time": "10:00:00", "time_unit": "day", "frequency": 1}}}, "trigger: a single task cannot become periodical"),
        ({"name": "bad-name"}, "name: may hold only letters"),
        ({"schedule_id": "x"}, "schedule_id: is not a known field"),
    ],
)
async def test_update_rules(api: Api, update: dict, message: str) -> None:
    body = schedule_body()
    schedule_id = (await api.create(body)).json["schedule_id"]
    reply = await api.update(schedule_id, update)
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"].startswith(message)
    unchanged = await api.get(schedule_id)
    assert unchanged.json["name"] == body["name"] and unchanged.json["push"] == body["push"]


async def test_update_zone_type_2_cannot_become_1(api: Api) -> None:
    schedule_id = (await api.create(schedule_body(zone_type=2))).json["schedule_id"]
    reply = await api.update(schedule_id, {"trigger": {"single": {"time": future_time(7200)}}})
    assert (reply.status, reply.error_code) == (400, 28100)
    assert "cannot change from 2 to 1" in reply.json["error"]["message"]


async def test_update_unknown(api: Api) -> None:
    reply = await api.update(str(uuid.uuid4()), {"name": "x"})
    assert (reply.status, reply.error_code) == (404, 28104)


async def test_delete_then_get(api: Api) -> None:
    schedule_id = (await api.create(schedule_body())).json["schedule_id"]
    deleted = await api.delete(schedule_id)
    assert deleted.status == 200
    assert deleted.body == b""
    for reply in (await api.get(schedule_id), await api.delete(schedule_id), await api.msg_ids(schedule_id)):
        assert (reply.status, reply.error_code) == (404, 28104)
    put = await api.update(schedule_id, {"name": "back"})
    assert (put.status, put.error_code) == (404, 28104)
    assert (await api.list()).json["total_count"] == 0


@pytest.mark.parametrize(
    "raw,message",
    [
        ('{"name": "a", "push": {"custom_args": NaN}}', "body: request data is not JSON (NaN is not a JSON number)"),
        ("[" * 5000 + "]" * 5000, "body: request data is not JSON (nested too deeply)"),
        (b'{"name": "\\u00e9\xff"}', "body: request data is not JSON (not UTF-8)"),
    ],
)
async def test_bodies_postgres_could_not_store_are_refused(api: Api, raw: str | bytes, message: str) -> None:
    reply = await api.call("POST", "/v4/schedules", data=raw)
    assert (reply.status, reply.json) == (400, {"error": {"code": 28100, "message": message}})


async def test_nul_and_lone_surrogates_are_refused_by_field(api: Api) -> None:
    import json

    body = schedule_body()
    body["push"]["custom_args"] = {"note": "a\u0000b"}
    reply = await api.create(body)
    assert reply.json["error"] == {"code": 28100, "message": "push.custom_args.note: must not contain the NUL character (\\u0000)"}
    text = json.dumps(schedule_body()).replace('"schedule push example"', '"push \\ud800"')
    reply = await api.call("POST", "/v4/schedules", data=text)
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"] == "name: must be valid Unicode, got a lone surrogate"
    assert (await api.list()).json["total_count"] == 0


async def test_huge_page_number_is_an_empty_page(api: Api) -> None:
    reply = await api.list("9223372036854775807")
    assert reply.status == 200
    assert reply.json["schedules"] == [] and reply.json["page"] == 9223372036854775807
    beyond = await api.list("99999999999999999999999")
    assert (beyond.status, beyond.error_code) == (400, 28100)


async def test_default_cap_of_1000_holds_under_concurrent_creates(service: Service) -> None:
    """More concurrent creates than the default cap allows: exactly 1000 land."""
    default_cap = 1000
    app = await service.new_app()
    replies = await asyncio.gather(*(app.create(schedule_body(name=f"burst_{n}")) for n in range(default_cap + 60)))
    assert sum(reply.status == 200 for reply in replies) == default_cap
    assert all(reply.error_code == 28100 for reply in replies if reply.status != 200)
    assert (await app.list()).json["total_count"] == default_cap


def _next_spring_forward_gap(zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first local wall time in the coming year that does not exist in `zone` (clocks jump forward)."""
    start = dt.datetime.now(zone).replace(minute=30, second=0, microsecond=0, tzinfo=None) + dt.timedelta(days=1)
    for hour in range(366 * 24):
        candidate = start + dt.timedelta(hours=hour)
        round_trip = candidate.replace(tzinfo=zone).astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None)
        if round_trip != candidate:
            return candidate
    raise AssertionError("no spring-forward gap within a year")


async def test_dst_gap_in_an_app_zone(service: Service, database_url: str) -> None:
    zone = zoneinfo.ZoneInfo("America/New_York")
    app = await service.new_app(time_zone="America/New_York")
    gap = _next_spring_forward_gap(zone)  # e.g. 02:30 on the March transition night
    created = await app.create(schedule_body(time=gap.strftime("%Y-%m-%d %H:%M:%S")))
    assert created.status == 200
    [row] = await fetch(database_url, "SELECT next_fire_at FROM schedules WHERE id = $1", uuid.UUID(created.json["schedule_id"]))
    due = row["next_fire_at"]
    # It fires at the first valid instant: 03:00 local, the end of the gap.
    assert due.astimezone(zone).strftime("%H:%M:%S") == "03:00:00"
    assert due.astimezone(zone).date() == gap.date()
    # The stored trigger is still what the client sent.
    assert (await app.get(created.json["schedule_id"])).json["trigger"]["single"]["time"] == gap.strftime("%Y-%m-%d %H:%M:%S")
    app.check_against_spec()
