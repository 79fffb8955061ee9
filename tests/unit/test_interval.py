"""Interval trigger maths and validation on explicit datetimes: fires at start + k·every (no drift), elapsed
minutes and hours across DST, days keeping start's wall-clock time across DST in two zones, leap day, end,
and the no-backlog rule after downtime."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest

from service.domain import dispatch, errors, interval, models, schedules, timing, types

UTC = dt.timezone.utc
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")


def trigger(start: str, every: int, unit: str, end: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"start": start, "every": every, "unit": unit}
    if end is not None:
        fields["end"] = end
    return {"interval": fields}


def upcoming(wire: dict[str, Any], zone: dt.tzinfo, now: dt.datetime, count: int) -> list[str]:
    fires = dispatch.upcoming(wire, zone, (), now, count)
    return [fire.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for fire in fires]


class TestFires:
    def test_counted_from_start_never_from_the_last_fire(self) -> None:
        # Asked at any instant, the fires are start + k·15 min: 10:07:30 finds 10:15, not 10:22:30.
        wire = trigger("2027-03-01 10:00:00", 15, "minute")
        assert upcoming(wire, UTC, dt.datetime(2027, 3, 1, 10, 7, 30, tzinfo=UTC), 3) == [
            "2027-03-01 10:15 UTC", "2027-03-01 10:30 UTC", "2027-03-01 10:45 UTC"
        ]
        # A year of fires later, still on the grid.
        assert upcoming(wire, UTC, dt.datetime(2028, 3, 1, 10, 7, 30, tzinfo=UTC), 1) == ["2028-03-01 10:15 UTC"]

    def test_start_itself_is_the_first_fire(self) -> None:
        wire = trigger("2027-03-01 10:00:00", 2, "hour")
        assert upcoming(wire, UTC, dt.datetime(2027, 3, 1, 9, tzinfo=UTC), 2) == ["2027-03-01 10:00 UTC", "2027-03-01 12:00 UTC"]

    @pytest.mark.parametrize(
        "zone,start,now,expected",
        [
            # Elapsed hours: across New York's spring-forward the wall clock skips 02:30, the spacing does not.
            (NEW_YORK, "2027-03-14 00:30:00", dt.datetime(2027, 3, 14, 5, tzinfo=UTC),
             ["2027-03-14 00:30 EST", "2027-03-14 01:30 EST", "2027-03-14 03:30 EDT", "2027-03-14 04:30 EDT"]),
            # ... and across Berlin's fall-back the wall clock shows 02:30 twice.
            (BERLIN, "2027-10-31 01:30:00", dt.datetime(2027, 10, 30, 23, tzinfo=UTC),
             ["2027-10-31 01:30 CEST", "2027-10-31 02:30 CEST", "2027-10-31 02:30 CET", "2027-10-31 03:30 CET"]),
        ],
    )  # fmt: skip
    def test_minutes_and_hours_count_elapsed_time(self, zone: dt.tzinfo, start: str, now: dt.datetime, expected: list[str]) -> None:
        assert upcoming(trigger(start, 1, "hour"), zone, now, 4) == expected

    @pytest.mark.parametrize(
        "zone,start,now,expected",
        [
            # Days keep start's wall time; the day it does not exist fires at the end of the gap.
            (NEW_YORK, "2027-03-13 02:30:00", dt.datetime(2027, 3, 13, 0, tzinfo=UTC),
             ["2027-03-13 02:30 EST", "2027-03-14 03:00 EDT", "2027-03-15 02:30 EDT"]),
            (BERLIN, "2027-03-27 02:30:00", dt.datetime(2027, 3, 26, 0, tzinfo=UTC),
             ["2027-03-27 02:30 CET", "2027-03-28 03:00 CEST", "2027-03-29 02:30 CEST"]),
            # The day it happens twice fires once, at the first.
            (NEW_YORK, "2027-11-06 01:30:00", dt.datetime(2027, 11, 6, 0, tzinfo=UTC),
             ["2027-11-06 01:30 EDT", "2027-11-07 01:30 EDT", "2027-11-08 01:30 EST"]),
            (SYDNEY, "2027-04-03 02:30:00", dt.datetime(2027, 4, 2, 0, tzinfo=UTC),
             ["2027-04-03 02:30 AEDT", "2027-04-04 02:30 AEDT", "2027-04-05 02:30 AEST"]),
        ],
    )  # fmt: skip
    def test_days_keep_the_wall_clock_time_of_start(self, zone: dt.tzinfo, start: str, now: dt.datetime, expected: list[str]) -> None:
        assert upcoming(trigger(start, 1, "day"), zone, now, 3) == expected

    def test_every_seventh_day_over_a_leap_day(self) -> None:
        wire = trigger("2028-02-22 09:00:00", 7, "day")
        assert upcoming(wire, BERLIN, dt.datetime(2028, 2, 1, tzinfo=UTC), 3) == [
            "2028-02-22 09:00 CET", "2028-02-29 09:00 CET", "2028-03-07 09:00 CET"
        ]

    def test_end_bounds_the_fires_and_is_the_last(self) -> None:
        spec = interval.Interval.from_wire(trigger("2027-03-01 10:00:00", 25, "minute", end="2027-03-01 11:20:00")["interval"])
        fires = dispatch.upcoming(trigger("2027-03-01 10:00:00", 25, "minute", end="2027-03-01 11:20:00"), UTC, (), dt.datetime(2027, 3, 1, tzinfo=UTC), 10)
        assert [fire.due_at.strftime("%H:%M") for fire in fires] == ["10:00", "10:25", "10:50", "11:15"]
        assert interval.last_fire(spec, UTC) == fires[-1]
        day_spec = interval.Interval.from_wire(trigger("2027-03-13 02:30:00", 1, "day", end="2027-03-14 02:45:00")["interval"])
        # The 14th's 02:30 does not exist and fires at 03:00 EDT, after end (02:45 in the gap is 03:00 too): included.
        assert interval.last_fire(day_spec, NEW_YORK) == types.Fire(dt.datetime(2027, 3, 14, 7, 0, tzinfo=UTC))


class TestPlan:
    NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

    def plan(self, wire: dict[str, Any], fresh: bool = True) -> types.FirePlan:
        return schedules.plan_trigger(models.Trigger.model_validate(wire), NEW_YORK, self.NOW, (), fresh=fresh)

    def test_no_end_is_valid_forever(self) -> None:
        plan = self.plan(trigger("2027-03-01 08:00:00", 1, "minute"))  # 13:00 UTC
        assert (plan.next_fire_at, plan.final_fire_at) == (dt.datetime(2027, 3, 1, 13, 0, tzinfo=UTC), timing.NO_END)

    def test_start_must_be_in_the_future(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r'^trigger.interval.start: must be in the future \(it is the first fire\), got "2027-03-01 07:00:00" \(America/New_York time is 2027-03-01 07:00:00\)$'):
            self.plan(trigger("2027-03-01 07:00:00", 1, "minute"))

    def test_a_re_enabled_task_goes_on_from_its_next_fire(self) -> None:
        plan = self.plan(trigger("2027-02-01 07:00:00", 1, "day"), fresh=False)
        assert plan.next_fire_at == dt.datetime(2027, 3, 2, 12, 0, tzinfo=UTC)  # 07:00 EST tomorrow

    def test_start_more_than_a_year_ahead(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r'^trigger.interval.start: the first fire must be at most one year ahead, got "2028-03-02 00:00:00"$'):
            self.plan(trigger("2028-03-02 00:00:00", 1, "day"))

    @pytest.mark.parametrize(
        "fields,message",
        [
            ({"every": 0}, "trigger.interval.every: must be 1..1000, got 0"),
            ({"every": 1001}, "trigger.interval.every: must be 1..1000, got 1001"),
            ({"unit": "week"}, 'trigger.interval.unit: must be minute, hour or day, got "week"'),
            ({"unit": "Minute"}, 'trigger.interval.unit: must be minute, hour or day, got "Minute"'),
            ({"end": "2027-03-02 00:00:00"}, 'trigger.interval.end: must be after start ("2027-03-02 00:00:00"), got "2027-03-02 00:00:00"'),
            ({"zone_type": 1}, "trigger.interval.zone_type: is not a known field"),
            ({"every": "5"}, "trigger.interval.every: must be an integer"),
        ],
    )  # fmt: skip
    def test_invalid_fields(self, fields: dict[str, Any], message: str) -> None:
        wire = trigger("2027-03-02 00:00:00", 5, "minute")
        wire["interval"].update(fields)
        with pytest.raises(errors.InvalidParameter) as caught:
            models.parse(models.TriggerPreview, {"trigger": wire})
        assert caught.value.message == message

    def test_the_wire_form_has_no_zone_type(self) -> None:
        wire = trigger("2027-03-02 00:00:00", 5, "minute")
        assert models.Trigger.model_validate(wire).to_wire() == wire
        assert dispatch.zone_type(wire) == 1


class TestAfterDowntime:
    def test_only_the_latest_missed_fire_may_be_sent_and_the_grid_holds(self) -> None:
        start = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
        wire = trigger("2027-03-01 12:00:00", 1, "minute")
        # The engine comes back 5.5 minutes after the fire it was due to plan next (12:03).
        next_fire_at, now = start + dt.timedelta(minutes=3), start + dt.timedelta(minutes=8, seconds=30)
        plan = dispatch.plan_due(wire, UTC, (), next_fire_at, now)
        assert [fire.due_at.minute for fire in plan.fires] == [3, 4, 5, 6, 7, 8]
        assert [fire.due_at.minute for fire in plan.fires if fire not in plan.superseded] == [8]
        assert plan.next_fire_at == start + dt.timedelta(minutes=9)  # start + 9·1 min, not now + 1 min
