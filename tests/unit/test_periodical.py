"""Periodical trigger maths and validation on explicit datetimes: each unit, frequency 1 and >1, month ends,
leap days, DST both ways, zone_type 2 waves, and the no-backlog rule after downtime."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest

from service.domain import dispatch, errors, models, periodical, schedules, timing

UTC = dt.timezone.utc
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
GRACE = dt.timedelta(minutes=5)


def trigger(**fields: Any) -> dict[str, Any]:
    base = {"start": "2026-01-01 00:00:00", "end": "2026-12-31 23:59:59", "time": "09:00:00", "time_unit": "day", "frequency": 1}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def walls(**fields: Any) -> list[str]:
    spec = periodical.Periodical.from_wire(trigger(**fields))
    return [occurrence.strftime("%Y-%m-%d %H:%M") for occurrence in spec.occurrences()]


class TestOccurrences:
    def test_daily(self) -> None:
        assert walls(start="2026-03-01 00:00:00", end="2026-03-04 12:00:00") == [
            "2026-03-01 09:00", "2026-03-02 09:00", "2026-03-03 09:00", "2026-03-04 09:00"
        ]

    def test_start_after_the_time_of_day_begins_next_day(self) -> None:
        assert walls(start="2026-03-01 10:00:00", end="2026-03-03 09:00:00") == ["2026-03-02 09:00", "2026-03-03 09:00"]

    def test_every_third_day_counted_from_start(self) -> None:
        assert walls(start="2026-03-01 00:00:00", end="2026-03-10 23:00:00", frequency=3) == [
            "2026-03-01 09:00", "2026-03-04 09:00", "2026-03-07 09:00", "2026-03-10 09:00"
        ]

    def test_weekly_points(self) -> None:
        # 2026-11-23 is a Monday.
        assert walls(start="2026-11-23 00:00:00", end="2026-12-06 00:00:00", time_unit="WEEK", point=["MON", "fri"]) == [
            "2026-11-23 09:00", "2026-11-27 09:00", "2026-11-30 09:00", "2026-12-04 09:00"
        ]

    def test_every_second_week(self) -> None:
        assert walls(start="2026-11-25 00:00:00", end="2026-12-31 00:00:00", time_unit="week", frequency=2, point=["MON"]) == [
            "2026-12-07 09:00", "2026-12-21 09:00"
        ]

    def test_month_end_day_missing_from_a_month_does_not_fire(self) -> None:
        assert walls(start="2026-01-01 00:00:00", end="2026-06-30 23:00:00", time_unit="month", point=["31"]) == [
            "2026-01-31 09:00", "2026-03-31 09:00", "2026-05-31 09:00"
        ]

    def test_every_second_month(self) -> None:
        assert walls(start="2026-01-15 00:00:00", end="2026-07-01 00:00:00", time_unit="Month", frequency=2, point=["01", "15"]) == [
            "2026-01-15 09:00", "2026-03-01 09:00", "2026-03-15 09:00", "2026-05-01 09:00", "2026-05-15 09:00"
        ]

    def test_leap_day(self) -> None:
        got = walls(start="2027-06-01 00:00:00", end="2028-05-31 00:00:00", time_unit="month", point=["29"])
        assert "2028-02-29 09:00" in got and not any(day.startswith("2027-02") for day in got)
        assert len(got) == 12  # June 2027 .. May 2028, February 2028 included (leap year)

    def test_last_occurrence(self) -> None:
        spec = periodical.Periodical.from_wire(trigger(start="2026-01-01 00:00:00", end="2026-03-31 08:00:00", time_unit="month", point=["31"]))
        assert spec.last_occurrence() == dt.datetime(2026, 1, 31, 9, 0)  # March 31 09:00 is after end


class TestFires:
    def test_dst_spring_forward_moves_to_the_end_of_the_gap(self) -> None:
        spec = periodical.Periodical.from_wire(trigger(start="2026-03-07 00:00:00", end="2026-03-09 23:00:00", time="02:30:00"))
        fires = periodical.fires_between(spec, NEW_YORK, (), dt.datetime(2026, 3, 7, tzinfo=UTC), dt.datetime(2026, 3, 10, tzinfo=UTC))
        assert [fire.due_at.astimezone(NEW_YORK).strftime("%d %H:%M %Z") for fire in fires] == ["07 02:30 EST", "08 03:00 EDT", "09 02:30 EDT"]

    def test_dst_fall_back_takes_the_first_occurrence(self) -> None:
        spec = periodical.Periodical.from_wire(trigger(start="2026-10-31 00:00:00", end="2026-11-02 23:00:00", time="01:30:00"))
        fires = periodical.fires_between(spec, NEW_YORK, (), dt.datetime(2026, 10, 31, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC))
        assert [fire.due_at for fire in fires] == [
            dt.datetime(2026, 10, 31, 5, 30, tzinfo=UTC),
            dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, the first of the two 01:30s
            dt.datetime(2026, 11, 2, 6, 30, tzinfo=UTC),
        ]

    def test_zone_type_2_waves_interleave_across_days(self) -> None:
        spec = periodical.Periodical.from_wire(trigger(start="2026-06-01 00:00:00", end="2026-06-02 23:00:00", zone_type=2))
        fires = periodical.fires_between(spec, UTC, (840, 0, -720), dt.datetime(2026, 5, 31, tzinfo=UTC), dt.datetime(2026, 6, 4, tzinfo=UTC))
        assert [(fire.due_at.strftime("%d %H:%M"), fire.utc_offset_minutes) for fire in fires] == [
            ("31 19:00", 840), ("01 09:00", 0), ("01 19:00", 840), ("01 21:00", -720), ("02 09:00", 0), ("02 21:00", -720)
        ]
        after = periodical.first_fire_after(spec, UTC, (840, 0, -720), dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
        assert after is not None and (after.due_at, after.utc_offset_minutes) == (dt.datetime(2026, 6, 1, 19, 0, tzinfo=UTC), 840)
        last = periodical.last_fire(spec, UTC, (840, 0, -720))
        assert last is not None and last.due_at == dt.datetime(2026, 6, 2, 21, 0, tzinfo=UTC)

    def test_first_fire_after_end_is_none(self) -> None:
        spec = periodical.Periodical.from_wire(trigger(start="2026-06-01 00:00:00", end="2026-06-02 23:00:00"))
        assert periodical.first_fire_after(spec, UTC, (), dt.datetime(2026, 6, 2, 9, 0, tzinfo=UTC)) is None


class TestNoBacklogAfterDowntime:
    def test_only_the_latest_past_occurrence_is_kept(self) -> None:
        daily = {"periodical": trigger(start="2026-06-01 00:00:00", end="2026-06-30 00:00:00")}
        now = dt.datetime(2026, 6, 4, 9, 2, tzinfo=UTC)  # three days down; today's 09:00 is 2 minutes late
        plan = dispatch.plan_due(daily, UTC, (), dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC), now)
        assert [fire.due_at.day for fire in plan.fires if fire not in plan.superseded] == [4]
        assert sorted(fire.due_at.day for fire in plan.superseded) == [1, 2, 3]
        assert plan.next_fire_at == dt.datetime(2026, 6, 5, 9, 0, tzinfo=UTC)

    def test_planning_ahead_sends_the_future_occurrences_and_keeps_the_rule_for_past_ones(self) -> None:
        daily = {"periodical": trigger(start="2026-06-01 00:00:00", end="2026-06-30 00:00:00")}
        now = dt.datetime(2026, 6, 4, 9, 2, tzinfo=UTC)
        until = dt.datetime(2026, 6, 5, 9, 0, tzinfo=UTC)  # a horizon that reaches tomorrow's occurrence
        plan = dispatch.plan_due(daily, UTC, (), dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC), now, until=until)
        assert [fire.due_at.day for fire in plan.fires if fire not in plan.superseded] == [4, 5]
        assert sorted(fire.due_at.day for fire in plan.superseded) == [1, 2, 3]
        assert plan.next_fire_at == dt.datetime(2026, 6, 6, 9, 0, tzinfo=UTC)

    def test_the_latest_is_left_to_the_grace_rule_however_late(self) -> None:
        # Six hours late: the database's fire_is_too_late records it missed (tests/integration/test_rules.py).
        daily = {"periodical": trigger(start="2026-06-01 00:00:00", end="2026-06-30 00:00:00")}
        now = dt.datetime(2026, 6, 4, 15, 0, tzinfo=UTC)
        plan = dispatch.plan_due(daily, UTC, (), dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC), now)
        assert len(plan.fires) == 4 and len(plan.superseded) == 3

    def test_last_occurrence_ends_the_plan(self) -> None:
        daily = {"periodical": trigger(start="2026-06-01 00:00:00", end="2026-06-02 12:00:00")}
        now = dt.datetime(2026, 6, 2, 9, 0, tzinfo=UTC)
        plan = dispatch.plan_due(daily, UTC, (), now, now)
        assert [fire.due_at for fire in plan.fires] == [now] and plan.next_fire_at is None


def parse_trigger(**fields: Any) -> models.Trigger:
    return models.parse(models.Trigger, {"periodical": trigger(**fields)})


class TestValidation:
    @pytest.mark.parametrize(
        "fields,message",
        [
            ({"end": "2026-01-01 00:00:00"}, 'trigger.periodical.end: must be after start ("2026-01-01 00:00:00"), got "2026-01-01 00:00:00"'),
            ({"end": "2027-01-01 00:00:01"}, "trigger.periodical.end: must be at most one year after start"),
            ({"frequency": 0}, "trigger.periodical.frequency: must be 1..100"),
            ({"frequency": 101}, "trigger.periodical.frequency: must be 1..100"),
            ({"frequency": "2"}, "trigger.periodical.frequency: must be an integer"),
            ({"time_unit": "year"}, 'trigger.periodical.time_unit: must be day, week or month (any case), got "year"'),
            ({"point": ["MON"]}, "trigger.periodical.point: must be absent when time_unit is day"),
            ({"time_unit": "week"}, "trigger.periodical.point: must be a non-empty list of MON..SUN"),
            ({"time_unit": "week", "point": ["MONDAY"]}, "trigger.periodical.point: must be a non-empty list of MON..SUN"),
            ({"time_unit": "month", "point": ["1"]}, 'trigger.periodical.point: must be a non-empty list of "01".."31"'),
            ({"time_unit": "month", "point": ["32"]}, 'trigger.periodical.point: must be a non-empty list of "01".."31"'),
            ({"time": "9:00:00"}, 'trigger.periodical.time: must be hh:mm:ss, got "9:00:00"'),
            ({"time": "24:00:00"}, 'trigger.periodical.time: is not a real time of day, got "24:00:00"'),
            ({"start": "2026-1-1 00:00:00"}, "trigger.periodical.start: must be yyyy-mm-dd hh:mm:ss"),
            ({"zone_type": 3}, "trigger.periodical.zone_type: must be 1 (app time zone) or 2"),
            ({"time_unit": None}, "trigger.periodical.time_unit: is required"),
        ],
    )
    def test_messages_name_the_field(self, fields: dict[str, Any], message: str) -> None:
        with pytest.raises(errors.InvalidParameter) as caught:
            models.parse(models.ScheduleCreate, {
                "name": "p", "enabled": True, "trigger": {"periodical": trigger(**fields)},
                "push": {"to": "all", "body": {"platform": "all", "notification": {"alert": "x"}}},
            })
        assert caught.value.message.startswith(message), caught.value.message

    def test_one_year_span_is_accepted_and_echoed_as_given(self) -> None:
        parsed = parse_trigger(end="2027-01-01 00:00:00", time_unit="Week", point=["mon"])
        assert parsed.to_wire() == {"periodical": {**trigger(end="2027-01-01 00:00:00", time_unit="Week", point=["mon"]), "zone_type": 1}}

    def test_both_kinds_at_once_is_refused(self) -> None:
        with pytest.raises(errors.InvalidParameter, match="exactly one of single, periodical"):
            models.parse(models.Trigger, {"single": {"time": "2026-06-01 09:00:00"}, "periodical": trigger()})

    def test_first_fire_after_end_is_refused(self) -> None:
        parsed = parse_trigger(start="2026-06-01 00:00:00", end="2026-06-01 08:00:00")
        with pytest.raises(errors.InvalidParameter, match="no occurrence is left between now and end"):
            schedules.plan_trigger(parsed, UTC, dt.datetime(2026, 5, 1, tzinfo=UTC), ())

    def test_plan_from_now(self) -> None:
        parsed = parse_trigger(start="2026-06-01 00:00:00", end="2026-06-10 23:00:00")
        plan = schedules.plan_trigger(parsed, UTC, dt.datetime(2026, 6, 3, 10, 0, tzinfo=UTC), timing.REAL_UTC_OFFSETS_MINUTES)
        assert plan.next_fire_at == dt.datetime(2026, 6, 4, 9, 0, tzinfo=UTC)
        assert plan.final_fire_at == dt.datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
