"""Periodical tasks end to end: stored and shown as sent, updated as a whole, fired by the engine."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.integration.conftest import (
    UTC,
    Api,
    Service,
    future_time,
    next_whole_second,
    schedule_body,
    sent_msg_ids,
    wall_at,
)
from tests.standin import StandIn
from tests.waiting import eventually


def periodical(start: dt.datetime, end: dt.datetime, time: str, **fields: Any) -> dict[str, Any]:
    trigger = {"start": wall_at(start), "end": wall_at(end), "time": time, "time_unit": "day", "frequency": 1}
    trigger.update(fields)
    return {"periodical": trigger}


async def test_create_show_and_update_a_periodical_task(api: Api) -> None:
    now = dt.datetime.now(UTC)
    trigger = periodical(now, now + dt.timedelta(days=60), "09:30:00", time_unit="Week", frequency=2, point=["MON", "thu"])
    created = await api.create(schedule_body(trigger=trigger))
    assert created.status == 200, created.json
    schedule_id = created.json["schedule_id"]
    expected = {"periodical": {**trigger["periodical"], "zone_type": 1}}
    assert (await api.get(schedule_id)).json["trigger"] == expected  # as sent, time_unit's case kept
    assert (await api.list()).json["schedules"][0]["trigger"] == expected

    changed = periodical(now, now + dt.timedelta(days=90), "18:00:00", time_unit="month", point=["01", "31"], zone_type=1)
    updated = await api.update(schedule_id, {"trigger": changed})
    assert updated.status == 200 and updated.json["trigger"] == changed

    to_single = await api.update(schedule_id, {"trigger": {"single": {"time": future_time(), "zone_type": 1}}})
    assert (to_single.status, to_single.error_code) == (400, 28100)
    assert to_single.json["error"]["message"] == "trigger: a periodical task cannot become single; delete it and create a new one"
    to_zone_2 = await api.update(schedule_id, {"trigger": periodical(now, now + dt.timedelta(days=9), "18:00:00", zone_type=2)})
    assert to_zone_2.json["error"]["message"] == "trigger.periodical.zone_type: cannot change from 1 to 2 on an existing task"
    assert (await api.get(schedule_id)).json["trigger"] == changed


async def test_periodical_with_no_occurrence_left_is_refused(api: Api) -> None:
    tomorrow = (dt.datetime.now(UTC) + dt.timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    # Daily at 12:00, between 10:00 and 11:00 tomorrow: its first fire would be after end.
    reply = await api.create(schedule_body(trigger=periodical(tomorrow, tomorrow + dt.timedelta(hours=1), "12:00:00")))
    assert (reply.status, reply.error_code) == (400, 28100)
    assert reply.json["error"]["message"].startswith("trigger.periodical: no occurrence is left between now and end")
    assert (await api.list()).json["total_count"] == 0


async def test_one_day_span_fires_its_occurrence_then_expires(dispatching_service: Service, standin: StandIn) -> None:
    api = await dispatching_service.new_app()
    first = next_whole_second(1.5)
    # start a few seconds before the first occurrence; the span is one day, so that occurrence is the last.
    trigger = periodical(first - dt.timedelta(seconds=3), first + dt.timedelta(days=1) - dt.timedelta(seconds=4), first.strftime("%H:%M:%S"))
    schedule_id = (await api.create(schedule_body(trigger=trigger))).json["schedule_id"]
    [delivery] = await standin.wait_for(1, timeout=10)
    assert 0 <= delivery.received_at - first.timestamp() < 0.5
    await eventually(lambda: sent_msg_ids(api, schedule_id), what="the send's result recorded")
    assert (await api.msg_ids(schedule_id)).json["msgids"] == [delivery.msg_id]
    assert (await api.get(schedule_id)).status == 404  # its last occurrence fired: expired


async def test_periodical_zone_type_2_first_wave_and_stays_valid(dispatching_service: Service, standin: StandIn) -> None:
    api = await dispatching_service.new_app()
    first_wave = next_whole_second(1.5)
    wall = first_wave + dt.timedelta(hours=14)  # the UTC+14 wave of today's occurrence is seconds away
    trigger = periodical(wall - dt.timedelta(seconds=5), wall + dt.timedelta(days=2), wall.strftime("%H:%M:%S"), zone_type=2)
    schedule_id = (await api.create(schedule_body(trigger=trigger))).json["schedule_id"]
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.headers["X-Push-Utc-Offset"] == "+14:00"
    assert 0 <= delivery.received_at - first_wave.timestamp() < 0.5
    await eventually(lambda: sent_msg_ids(api, schedule_id), what="the send's result recorded")
    assert (await api.msg_ids(schedule_id)).json["count"] == 1
    assert (await api.get(schedule_id)).status == 200
