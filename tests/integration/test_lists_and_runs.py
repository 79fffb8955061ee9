"""Issue 12's extensions: description and max_failures, next_run_at / last_run / consecutive_failures, sorted and
filtered lists, and a task's runs; max_failures tripping through the real engine and the stand-in."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import pytest

from service import metrics
from tests.integration.conftest import (
    UTC,
    Api,
    Service,
    fetch,
    future_time,
    next_whole_second,
    schedule_body,
    sent_msg_ids,
    wall_at,
)
from tests.standin import StandIn
from tests.waiting import eventually


def instant(wall: str) -> str:
    """A UTC wall time as the extensions show instants."""
    return wall.replace(" ", "T") + "Z"


async def test_description_and_max_failures_on_create_detail_and_put(api: Api) -> None:
    body = schedule_body(description="Morning digest for 任务 users", max_failures=3)
    schedule_id = (await api.create(body)).json["schedule_id"]
    detail = (await api.get(schedule_id)).json
    assert (detail["description"], detail["max_failures"], detail["consecutive_failures"]) == (
        "Morning digest for 任务 users", 3, 0,
    )
    assert detail["next_run_at"] == instant(body["trigger"]["single"]["time"])
    assert (detail["last_run"], detail["disabled_reason"]) == (None, None)
    # A PUT without them keeps them; one with them replaces them.
    assert (await api.update(schedule_id, {"name": "renamed"})).json["description"] == "Morning digest for 任务 users"
    updated = (await api.update(schedule_id, {"description": "", "max_failures": 0})).json
    assert (updated["description"], updated["max_failures"], updated["name"]) == ("", 0, "renamed")
    assert (await api.get(schedule_id)).json == updated
    # Disabled: no next run.
    assert (await api.update(schedule_id, {"enabled": False})).json["next_run_at"] is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"description": "x" * 1001}, "description: must be at most 1000 characters, got 1001"),
        ({"description": 5}, "description: must be a string"),
        ({"description": None}, "description: must not be null"),
        ({"max_failures": -1}, "max_failures: must be an integer from 0 (never) to 1000, got -1"),
        ({"max_failures": 1001}, "max_failures: must be an integer from 0 (never) to 1000, got 1001"),
        ({"max_failures": 10**30}, "max_failures: must be an integer from 0 (never) to 1000"),
        ({"max_failures": 1.5}, "max_failures: must be an integer"),
        ({"max_failures": True}, "max_failures: must be an integer"),
        ({"max_failures": "3"}, "max_failures: must be an integer"),
    ],
)
async def test_bad_extension_fields_are_28100_naming_them(api: Api, change: dict[str, Any], message: str) -> None:
    created = await api.create(schedule_body(**change))
    assert (created.status, created.error_code) == (400, 28100)
    assert created.json["error"]["message"].startswith(message)
    schedule_id = (await api.create(schedule_body())).json["schedule_id"]
    updated = await api.update(schedule_id, change)
    assert (updated.status, updated.error_code) == (400, 28100)
    assert updated.json["error"]["message"].startswith(message)
    # The bound counts characters, not bytes: 1,000 two-byte characters are fine.
    assert (await api.create(schedule_body(description="é" * 1000))).status == 200


async def ids(api: Api, **params: str) -> list[str]:
    reply = await api.call("GET", "/v4/schedules", params=params)
    assert reply.status == 200, reply.json
    return [item["schedule_id"] for item in reply.json["schedules"]]


async def test_sorts_with_ties_and_nulls(api: Api, database_url: str) -> None:
    # Names with a tie, times out of creation order, one disabled (no next run).
    plan = [("b_task", 3), ("a_task", 5), ("b_task", 1), ("C_task", 4), ("a_task", 2)]
    created = []
    for name, hours in plan:
        created.append((await api.create(schedule_body(name=name, time=future_time(hours * 3600)))).json["schedule_id"])
    await api.update(created[3], {"enabled": False})
    by_id = sorted(created)
    assert await ids(api) == created  # the v4 default: oldest created first
    assert await ids(api, sort="created") == created
    assert await ids(api, sort="-created") == created[::-1]
    # Byte-wise: "C" < "a" < "b"; ties by id, in the sort's direction.
    tie_a = sorted([created[1], created[4]])
    tie_b = sorted([created[0], created[2]])
    assert await ids(api, sort="name") == [created[3], *tie_a, *tie_b]
    assert await ids(api, sort="-name") == [*tie_b[::-1], *tie_a[::-1], created[3]]
    # next_run: soonest first, the disabled one (null) last; descending, it comes first.
    assert await ids(api, sort="next_run") == [created[2], created[4], created[0], created[1], created[3]]
    assert await ids(api, sort="-next_run") == [created[3], created[1], created[0], created[4], created[2]]
    # last_run: never ran (null) first ascending, last descending; ties by id.
    base = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    for schedule_id, minutes in ((created[0], 10), (created[1], 5), (created[2], 10)):
        await fetch(
            database_url,
            "UPDATE schedules SET last_run_due_at = $2, last_run_state = 'sent', last_run_msg_id = 'm' WHERE id = $1",
            uuid.UUID(schedule_id), base + dt.timedelta(minutes=minutes),
        )
    never = sorted([created[3], created[4]])
    tie = sorted([created[0], created[2]])
    assert await ids(api, sort="last_run") == [*never, created[1], *tie]
    assert await ids(api, sort="-last_run") == [*tie[::-1], created[1], *never[::-1]]
    detail = (await api.get(created[1])).json
    assert detail["last_run"] == {
        "due_at": (base + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"), "outcome": "sent", "msg_id": "m",
    }
    assert len(by_id) == 5


async def test_filters_and_their_total(api: Api) -> None:
    names = ["report_daily", "report_weekly", "reporter", "other", "report_daily"]
    created = [(await api.create(schedule_body(name=name))).json["schedule_id"] for name in names]
    periodical = schedule_body(
        name="report_periodical",
        trigger={"periodical": {"start": future_time(60), "end": future_time(30 * 86400), "time": "09:00:00",
                                "time_unit": "day", "frequency": 1}},
    )
    created.append((await api.create(periodical)).json["schedule_id"])
    await api.update(created[1], {"enabled": False})
    reply = await api.call("GET", "/v4/schedules", params={"name": "report_daily"})
    assert (reply.json["total_count"], reply.json["total_pages"]) == (2, 1)
    assert [item["schedule_id"] for item in reply.json["schedules"]] == [created[0], created[4]]
    assert await ids(api, name_prefix="report_") == [created[0], created[1], created[4], created[5]]
    ties = sorted([created[0], created[4]])
    assert await ids(api, name_prefix="report", sort="name") == [*ties, created[5], created[1], created[2]]
    assert await ids(api, name="report") == []
    assert await ids(api, enabled="false") == [created[1]]
    assert await ids(api, enabled="true", name_prefix="report_") == [created[0], created[4], created[5]]
    assert await ids(api, kind="periodical") == [created[5]]
    assert await ids(api, kind="single", name="other") == [created[3]]
    assert await ids(api, kind="cron") == []
    assert (await api.call("GET", "/v4/schedules", params={"kind": "interval"})).json["total_count"] == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sort": "foo"}, "sort: must be one of created, name, next_run, last_run"),
        ({"sort": ""}, "sort: must be one of"),
        ({"sort": "--name"}, "sort: must be one of"),
        ({"sort": "Name"}, "sort: must be one of"),
        ({"enabled": "maybe"}, 'enabled: must be true or false, got "maybe"'),
        ({"enabled": "1"}, "enabled: must be true or false"),
        ({"enabled": "True"}, "enabled: must be true or false"),
        ({"kind": "x"}, 'kind: must be one of single, periodical, cron, interval, got "x"'),
        ({"name_prefix": ""}, "name_prefix: must be 1..255 UTF-8 bytes"),
        ({"name": ""}, "name: must be 1..255 UTF-8 bytes"),
        ({"name": "x" * 256}, "name: must be 1..255 UTF-8 bytes"),
        ({"name": "a\x00b"}, "name: must not contain the NUL character"),
    ],
)
async def test_bad_list_parameters_are_28100_naming_them(api: Api, params: dict[str, str], message: str) -> None:
    reply = await api.call("GET", "/v4/schedules", params=params)
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"].startswith(message)


async def test_repeated_list_parameter_is_28100(api: Api) -> None:
    reply = await api.call("GET", "/v4/schedules", params=[("sort", "name"), ("sort", "-name")])  # type: ignore[arg-type]
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"] == "sort: must be given at most once, got 2 values"


async def insert_runs(database_url: str, schedule_id: str, rows: list[tuple[dt.datetime, int, str]]) -> None:
    for due_at, offset, state in rows:
        await fetch(
            database_url,
            "INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, attempts, msg_id, error) "
            "VALUES (gen_random_uuid(), $1, $2, $3, $4, 1, CASE WHEN $4 = 'sent' THEN 'msg' END, "
            "CASE WHEN $4 = 'failed' THEN 'HTTP 400: no' END)",
            uuid.UUID(schedule_id), due_at, offset, state,
        )


async def test_runs_history_newest_first_in_pages(api: Api, service: Service, database_url: str) -> None:
    schedule_id = (await api.create(schedule_body())).json["schedule_id"]
    empty = await api.call("GET", f"/v4/schedules/{schedule_id}/runs")
    assert empty.json == {"total_count": 0, "total_pages": 0, "page": 1, "runs": []}
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    await insert_runs(database_url, schedule_id, [(start + dt.timedelta(minutes=n), 0, "sent") for n in range(59)])
    await insert_runs(database_url, schedule_id, [(start + dt.timedelta(minutes=100), 0, "failed")])
    first = (await api.call("GET", f"/v4/schedules/{schedule_id}/runs")).json
    assert (first["total_count"], first["total_pages"], first["page"], len(first["runs"])) == (60, 2, 1, 50)
    newest = first["runs"][0]
    assert {key: newest[key] for key in ("due_at", "wave", "state", "attempts", "msg_id", "error", "dispatched_at")} == {
        "due_at": "2026-01-01T01:40:00Z", "wave": None, "state": "failed", "attempts": 1, "msg_id": None,
        "error": "HTTP 400: no", "dispatched_at": None,
    }
    assert first["runs"][1]["due_at"] == "2026-01-01T00:58:00Z"
    second = (await api.call("GET", f"/v4/schedules/{schedule_id}/runs", params={"page": "2"})).json
    assert [run["due_at"] for run in second["runs"]] == [f"2026-01-01T00:{n:02d}:00Z" for n in range(9, -1, -1)]
    assert (await api.call("GET", f"/v4/schedules/{schedule_id}/runs", params={"page": "9"})).json["runs"] == []
    bad = await api.call("GET", f"/v4/schedules/{schedule_id}/runs", params={"page": "0"})
    assert (bad.status, bad.error_code) == (400, 28100)
    # Another app's, unknown, malformed: 404. Expired: still answers. Deleted: 404.
    other = await service.new_app()
    for caller, path in ((other, schedule_id), (api, str(uuid.uuid4())), (api, "nope")):
        reply = await caller.call("GET", f"/v4/schedules/{path}/runs")
        assert (reply.status, reply.error_code) == (404, 28104)
    await fetch(database_url, "UPDATE schedules SET state = 'expired' WHERE id = $1", uuid.UUID(schedule_id))
    assert (await api.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["total_count"] == 60
    await fetch(database_url, "UPDATE schedules SET state = 'deleted' WHERE id = $1", uuid.UUID(schedule_id))
    assert (await api.call("GET", f"/v4/schedules/{schedule_id}/runs")).status == 404
    other.check_against_spec()


async def test_runs_history_shows_waves(api: Api, database_url: str) -> None:
    schedule_id = (await api.create(schedule_body(zone_type=2, time=future_time(86400)))).json["schedule_id"]
    due = dt.datetime(2026, 1, 1, tzinfo=UTC)
    await insert_runs(database_url, schedule_id, [(due, 480, "sent"), (due + dt.timedelta(hours=1), 420, "missed")])
    runs = (await api.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["runs"]
    assert [(run["wave"], run["state"]) for run in runs] == [("+07:00", "missed"), ("+08:00", "sent")]


async def push_due_now(database_url: str, schedule_id: str, seconds_ago: float) -> None:
    """A run of the task due `seconds_ago`, whose planner's reservation has run out: any engine's claim takes it
    over and sends it at once (the way to give one task several runs within a test)."""
    await fetch(
        database_url,
        "INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, lease_until) "
        "VALUES (gen_random_uuid(), $1, date_trunc('second', clock_timestamp()) - make_interval(secs => $2), 0, "
        "'planned', clock_timestamp() - interval '1 second')",
        uuid.UUID(schedule_id), seconds_ago,
    )


def disabled_by_failures() -> float:
    return metrics.REGISTRY.get_sample_value("push_schedules_disabled_by_failures_total") or 0.0


async def test_max_failures_trips_through_the_engine_and_resets(
    dispatching_service: Service, standin: StandIn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = await dispatching_service.new_app()
    body = schedule_body(time=future_time(7200), max_failures=2)
    rejected = {"fail_times": 99, "status": 400}
    body["push"]["custom_args"] = {"standin": rejected}
    schedule_id = (await api.create(body)).json["schedule_id"]
    tripped_before = disabled_by_failures()

    async def detail() -> dict[str, Any]:
        return (await api.get(schedule_id)).json

    await push_due_now(database_url, schedule_id, 3)
    await eventually(detail, until=lambda d: d["consecutive_failures"] == 1, what="one failure counted")
    assert (await detail())["enabled"] is True
    await push_due_now(database_url, schedule_id, 2)
    caplog.set_level(logging.WARNING, logger="service.engine.recorder")
    tripped = await eventually(detail, until=lambda d: not d["enabled"], what="disabled by max_failures", timeout=15)
    assert tripped["consecutive_failures"] == 2
    assert tripped["disabled_reason"].startswith("disabled after 2 consecutive failed runs (max_failures 2)")
    assert "HTTP 400" in tripped["disabled_reason"]
    assert tripped["next_run_at"] is None
    assert tripped["last_run"]["outcome"] == "failed" and tripped["last_run"]["msg_id"] is None
    assert disabled_by_failures() == tripped_before + 1
    lines = [record for record in caplog.records if getattr(record, "event", None) == "schedule_disabled_by_failures"]
    assert len(lines) == 1 and lines[0].schedule_id == schedule_id and lines[0].max_failures == 2
    # Runs planned for it went, as on a PUT enabled:false; the first planned fire is no longer there.
    assert await fetch(
        database_url, "SELECT 1 FROM runs WHERE schedule_id = $1 AND state IN ('planned', 'pending')",
        uuid.UUID(schedule_id),
    ) == []
    runs = (await api.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["runs"]
    assert [run["state"] for run in runs] == ["failed", "failed"]
    assert runs[0]["error"].startswith("HTTP 400") and runs[0]["dispatched_at"] is not None

    # An enable resets the count and the reason.
    enabled = (await api.update(schedule_id, {"enabled": True})).json
    assert (enabled["enabled"], enabled["consecutive_failures"], enabled["disabled_reason"]) == (True, 0, None)
    assert enabled["next_run_at"] is not None
    await push_due_now(database_url, schedule_id, 1)
    await eventually(detail, until=lambda d: d["consecutive_failures"] == 1, what="a failure after the enable")
    # A sent run resets it, and becomes the last run.
    ok_push = schedule_body()["push"]
    await api.update(schedule_id, {"push": ok_push})
    sends_before = len(standin.deliveries)
    await push_due_now(database_url, schedule_id, 0)
    sent = await eventually(detail, until=lambda d: d["last_run"]["outcome"] == "sent", what="the sent run recorded")
    assert sent["consecutive_failures"] == 0 and sent["enabled"] is True
    assert sent["last_run"]["msg_id"] == standin.deliveries[sends_before].msg_id
    api.check_against_spec()


async def test_next_run_and_last_run_after_a_real_send(dispatching_service: Service, standin: StandIn) -> None:
    api = await dispatching_service.new_app()
    first_wave = next_whole_second(1.5)
    wall = first_wave + dt.timedelta(hours=14)  # zone_type 2: UTC+14 reaches this wall time at first_wave
    schedule_id = (await api.create(schedule_body(time=wall_at(wall), zone_type=2))).json["schedule_id"]
    assert (await api.get(schedule_id)).json["next_run_at"] == first_wave.strftime("%Y-%m-%dT%H:%M:%SZ")
    [delivery] = await standin.wait_for(1, timeout=10)
    await eventually(lambda: sent_msg_ids(api, schedule_id), what="the send's result recorded")
    detail = (await api.get(schedule_id)).json
    assert detail["last_run"] == {
        "due_at": first_wave.strftime("%Y-%m-%dT%H:%M:%SZ"), "outcome": "sent", "msg_id": delivery.msg_id,
    }
    # The next wave (UTC+13:45) is next.
    second_wave = first_wave + dt.timedelta(minutes=15)
    assert detail["next_run_at"] == second_wave.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert detail["consecutive_failures"] == 0
    api.check_against_spec()
