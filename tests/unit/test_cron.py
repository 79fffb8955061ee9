"""Cron trigger maths and validation on explicit datetimes: DST both ways in two hemispheres' zones, leap days,
names, ranges, steps, lists, macros, day-of-month OR day-of-week, expressions with no occurrence, waves, and
the no-backlog rule after downtime."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from typing import Any

import pytest

from service.domain import cron, dispatch, errors, models, schedules, timing, types

UTC = dt.timezone.utc
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")


def trigger(expression: str, **fields: Any) -> dict[str, Any]:
    return {"cron": {"expression": expression, **fields}}


def local(fires: list[Any], zone: dt.tzinfo) -> list[str]:
    return [fire.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for fire in fires]


def upcoming(expression: str, zone: dt.tzinfo, now: dt.datetime, count: int, **fields: Any) -> list[str]:
    return local(dispatch.upcoming(trigger(expression, **fields), zone, (), now, count), zone)


def walls(expression: str, after: dt.datetime, count: int) -> list[str]:
    spec = cron.Cron.from_wire({"expression": expression})
    found = []
    for wall in spec.walls(after):
        found.append(wall.strftime("%a %Y-%m-%d %H:%M"))
        if len(found) == count:
            break
    return found


class TestDaylightSaving:
    """A time skipped by a spring-forward fires at the first valid instant after the gap; a repeated time fires
    once, at its first occurrence (the rules of single and periodical triggers)."""

    @pytest.mark.parametrize(
        "zone,now,expected",
        [
            # New York springs forward 2027-03-14 02:00 EST -> 03:00 EDT.
            (NEW_YORK, dt.datetime(2027, 3, 13, 12, tzinfo=UTC),
             ["2027-03-14 03:00 EDT", "2027-03-15 02:30 EDT", "2027-03-16 02:30 EDT"]),
            # Berlin springs forward 2027-03-28 02:00 CET -> 03:00 CEST.
            (BERLIN, dt.datetime(2027, 3, 27, 12, tzinfo=UTC),
             ["2027-03-28 03:00 CEST", "2027-03-29 02:30 CEST", "2027-03-30 02:30 CEST"]),
            # Sydney (southern hemisphere) springs forward 2027-10-03 02:00 AEST -> 03:00 AEDT.
            (SYDNEY, dt.datetime(2027, 10, 2, 0, tzinfo=UTC),
             ["2027-10-03 03:00 AEDT", "2027-10-04 02:30 AEDT", "2027-10-05 02:30 AEDT"]),
        ],
    )  # fmt: skip
    def test_spring_forward_fires_at_the_end_of_the_gap(self, zone: dt.tzinfo, now: dt.datetime, expected: list[str]) -> None:
        assert upcoming("30 2 * * *", zone, now, 3) == expected

    @pytest.mark.parametrize(
        "zone,expression,now,expected",
        [
            # New York falls back 2027-11-07 02:00 EDT -> 01:00 EST: 01:30 happens twice, fires at the first.
            (NEW_YORK, "30 1 * * *", dt.datetime(2027, 11, 6, 12, tzinfo=UTC),
             ["2027-11-07 01:30 EDT", "2027-11-08 01:30 EST", "2027-11-09 01:30 EST"]),
            # Berlin falls back 2027-10-31 03:00 CEST -> 02:00 CET.
            (BERLIN, "30 2 * * *", dt.datetime(2027, 10, 30, 12, tzinfo=UTC),
             ["2027-10-31 02:30 CEST", "2027-11-01 02:30 CET", "2027-11-02 02:30 CET"]),
            # Sydney falls back 2027-04-04 03:00 AEDT -> 02:00 AEST.
            (SYDNEY, "30 2 * * *", dt.datetime(2027, 4, 3, 0, tzinfo=UTC),
             ["2027-04-04 02:30 AEDT", "2027-04-05 02:30 AEST", "2027-04-06 02:30 AEST"]),
        ],
    )  # fmt: skip
    def test_fall_back_fires_once_at_the_first_occurrence(
        self, zone: dt.tzinfo, expression: str, now: dt.datetime, expected: list[str]
    ) -> None:
        assert upcoming(expression, zone, now, 3) == expected

    def test_every_half_hour_through_the_gap_fires_once_at_its_end(self) -> None:
        # 02:00 and 02:30 do not exist; both move to 03:00 EDT, where 03:00 itself also falls: one fire.
        now = dt.datetime(2027, 3, 14, 6, 0, tzinfo=UTC)  # 01:00 EST
        assert upcoming("*/30 * * * *", NEW_YORK, now, 4) == [
            "2027-03-14 01:30 EST", "2027-03-14 03:00 EDT", "2027-03-14 03:30 EDT", "2027-03-14 04:00 EDT"
        ]

    def test_every_half_hour_through_the_overlap_fires_each_wall_time_once(self) -> None:
        now = dt.datetime(2027, 10, 30, 23, 45, tzinfo=UTC)  # 01:45 CEST
        assert upcoming("*/30 * * * *", BERLIN, now, 5) == [
            "2027-10-31 02:00 CEST", "2027-10-31 02:30 CEST", "2027-10-31 03:00 CET", "2027-10-31 03:30 CET",
            "2027-10-31 04:00 CET",
        ]

    def test_planning_from_inside_the_repeated_hour_does_not_fire_it_again(self) -> None:
        # The engine plans from its next_fire_at: starting in the second 01:xx (EST), 01:30 is not due again.
        second_one_o_clock = dt.datetime(2027, 11, 7, 6, 0, tzinfo=UTC)  # 01:00 EST
        plan = dispatch.plan_due(trigger("30 1 * * *"), NEW_YORK, (), second_one_o_clock, second_one_o_clock)
        assert plan.fires == () and plan.next_fire_at == dt.datetime(2027, 11, 8, 6, 30, tzinfo=UTC)


class TestExpressions:
    AFTER = dt.datetime(2027, 3, 1, 0, 0)  # a Monday

    @pytest.mark.parametrize(
        "expression,expected",
        [
            ("0 9 * * MON-FRI", ["Mon 2027-03-01 09:00", "Tue 2027-03-02 09:00", "Wed 2027-03-03 09:00"]),
            ("0 9 * * mon,wed", ["Mon 2027-03-01 09:00", "Wed 2027-03-03 09:00", "Mon 2027-03-08 09:00"]),
            ("0 9 * * 1-5/2", ["Mon 2027-03-01 09:00", "Wed 2027-03-03 09:00", "Fri 2027-03-05 09:00"]),
            ("0 0 * * 7", ["Sun 2027-03-07 00:00", "Sun 2027-03-14 00:00", "Sun 2027-03-21 00:00"]),  # 7 is Sunday too
            ("*/20 9-10 * * *", ["Mon 2027-03-01 09:00", "Mon 2027-03-01 09:20", "Mon 2027-03-01 09:40"]),
            ("5,35 */12 * * *", ["Mon 2027-03-01 00:05", "Mon 2027-03-01 00:35", "Mon 2027-03-01 12:05"]),
            ("10/25 8 * * *", ["Mon 2027-03-01 08:10", "Mon 2027-03-01 08:35", "Tue 2027-03-02 08:10"]),
            ("0 0 1 JAN,jul *", ["Thu 2027-07-01 00:00", "Sat 2028-01-01 00:00", "Sat 2028-07-01 00:00"]),
            ("0 12 15 */4 *", ["Sat 2027-05-15 12:00", "Wed 2027-09-15 12:00", "Sat 2028-01-15 12:00"]),  # months 1, 5, 9
            ("@hourly", ["Mon 2027-03-01 00:00", "Mon 2027-03-01 01:00", "Mon 2027-03-01 02:00"]),
            ("@daily", ["Mon 2027-03-01 00:00", "Tue 2027-03-02 00:00", "Wed 2027-03-03 00:00"]),
            ("@WEEKLY", ["Sun 2027-03-07 00:00", "Sun 2027-03-14 00:00", "Sun 2027-03-21 00:00"]),
            ("@monthly", ["Mon 2027-03-01 00:00", "Thu 2027-04-01 00:00", "Sat 2027-05-01 00:00"]),
            # Both day fields restricted: either matches (cron's OR); Friday the 13th is not required.
            ("0 0 13 * FRI", ["Fri 2027-03-05 00:00", "Fri 2027-03-12 00:00", "Sat 2027-03-13 00:00"]),
            # A day some months lack fires only in the months that have it.
            ("0 0 31 * *", ["Wed 2027-03-31 00:00", "Mon 2027-05-31 00:00", "Sat 2027-07-31 00:00"]),
        ],
    )  # fmt: skip
    def test_fields(self, expression: str, expected: list[str]) -> None:
        assert walls(expression, self.AFTER, 3) == expected

    def test_leap_day(self) -> None:
        assert walls("0 9 29 2 *", self.AFTER, 3) == ["Tue 2028-02-29 09:00", "Sun 2032-02-29 09:00", "Fri 2036-02-29 09:00"]
        leap_day_fire = upcoming("0 9 29 2 *", BERLIN, dt.datetime(2027, 6, 1, tzinfo=UTC), 1)
        assert leap_day_fire == ["2028-02-29 09:00 CET"]

    def test_start_and_end_bound_the_occurrences(self) -> None:
        spec = cron.Cron.from_wire({"expression": "0 9 * * *", "start": "2027-03-02 09:00:00", "end": "2027-03-04 08:59:59"})
        assert [wall.day for wall in spec.walls(self.AFTER)] == [2, 3]
        assert spec.last_wall() == dt.datetime(2027, 3, 3, 9, 0)

    @pytest.mark.parametrize(
        "expression,message",
        [
            ("0 0 30 2 *", "day of month: 30 never falls in February, so the expression never fires"),
            ("0 0 31 4,6,9,11 *", "day of month: 31 never falls in April, June, September, November, so the expression never fires"),
            ("0 0 30-31 FEB */2", "day of month: 30-31 never falls in February, so the expression never fires"),
            ("60 * * * *", "minute: 60 is out of 0..59"),
            ("0 24 * * *", "hour: 24 is out of 0..23"),
            ("0 0 0 * *", "day of month: 0 is out of 1..31"),
            ("0 0 * 13 *", "month: 13 is out of 1..12"),
            ("0 0 * * 8", "day of week: 8 is out of 0..7"),
            ("0 0 * * MON-XYZ", 'day of week: "XYZ" is not a number nor one of SUN, MON, TUE, WED, THU, FRI, SAT'),
            ("0 0 * * MON", None),
            ("0 0 JAN * *", 'day of month: "JAN" is not a number'),
            ("*/0 * * * *", 'minute: the step in "*/0" must be 1..59'),
            ("30-10 * * * *", 'minute: the range "30-10" runs backwards'),
            ("0 0 L * *", 'day of month: "L" is not *, a value, a range a-b, or one of those with a /step'),
            ("0 0 1W * *", 'day of month: "1W" is not *, a value, a range a-b, or one of those with a /step'),
            ("0 0 ? * *", 'day of month: "?" is not *, a value, a range a-b, or one of those with a /step'),
            ("0 0 * * 5#2", 'day of week: "5#2" is not *, a value, a range a-b, or one of those with a /step'),
            ("0 0 * *", "must have five fields (minute, hour, day of month, month, day of week) or be a macro, got 4"),
            ("0 0 0 * * *", "must have five fields (minute, hour, day of month, month, day of week) or be a macro, got 6"),
            ("@reboot", 'unknown macro "@reboot", expected one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually'),
            ("1,,2 * * * *", 'minute: "" is not *, a value, a range a-b, or one of those with a /step'),
        ],
    )  # fmt: skip
    def test_invalid_expressions_name_the_field(self, expression: str, message: str | None) -> None:
        if message is None:
            assert cron.normalize(expression) == "0 0 * * MON"
            return
        with pytest.raises(ValueError, match=r".") as caught:
            cron.normalize(expression)
        assert str(caught.value) == message

    def test_the_wire_error_names_the_trigger_field(self) -> None:
        body = {"trigger": trigger("0 0 30 2 *")}
        with pytest.raises(errors.InvalidParameter) as caught:
            models.parse(models.TriggerPreview, body)
        assert caught.value.message == (
            "trigger.cron.expression: day of month: 30 never falls in February, so the expression never fires"
        )


class TestWaves:
    OFFSETS = (840, 60, 0, -300, -720)

    def test_each_occurrence_fires_one_wave_per_offset_in_order(self) -> None:
        now = dt.datetime(2027, 3, 1, 0, 0, tzinfo=UTC)
        fires = dispatch.upcoming(trigger("0 9 * * *", zone_type=2), NEW_YORK, self.OFFSETS, now, 6)
        assert [(fire.due_at.strftime("%d %H:%M"), fire.utc_offset_minutes) for fire in fires] == [
            ("01 08:00", 60), ("01 09:00", 0), ("01 14:00", -300), ("01 19:00", 840), ("01 21:00", -720),
            ("02 08:00", 60),
        ]

    def test_waves_are_fixed_offsets_so_dst_moves_nothing(self) -> None:
        now = dt.datetime(2027, 3, 14, 0, 0, tzinfo=UTC)
        fires = dispatch.upcoming(trigger("30 2 * * *", zone_type=2), NEW_YORK, (-300,), now, 2)
        assert [fire.due_at for fire in fires] == [
            dt.datetime(2027, 3, 14, 7, 30, tzinfo=UTC), dt.datetime(2027, 3, 15, 7, 30, tzinfo=UTC)
        ]

    def test_last_fire_is_the_last_wave_of_the_last_occurrence(self) -> None:
        spec = cron.Cron.from_wire({"expression": "0 9 * * *", "end": "2027-03-05 12:00:00", "zone_type": 2})
        last = cron.last_fire(spec, NEW_YORK, self.OFFSETS)
        assert last == dispatch.upcoming(trigger("0 9 * * *", end="2027-03-05 12:00:00", zone_type=2), NEW_YORK, self.OFFSETS, dt.datetime(2027, 3, 5, 20, tzinfo=UTC), 5)[-1]
        assert last is not None and (last.due_at, last.utc_offset_minutes) == (dt.datetime(2027, 3, 5, 21, tzinfo=UTC), -720)


class TestPlan:
    NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

    def plan(self, wire: dict[str, Any], now: dt.datetime | None = None) -> Any:
        return schedules.plan_trigger(models.Trigger.model_validate(wire), NEW_YORK, now or self.NOW, ())

    def test_no_end_is_valid_forever(self) -> None:
        plan = self.plan(trigger("0 9 * * MON-FRI"))
        assert plan.next_fire_at == dt.datetime(2027, 3, 1, 14, 0, tzinfo=UTC)
        assert plan.final_fire_at == timing.NO_END

    def test_end_is_the_last_fire(self) -> None:
        plan = self.plan(trigger("0 9 * * MON-FRI", start="2027-01-01 00:00:00", end="2027-03-06 23:00:00"))
        assert plan.final_fire_at == dt.datetime(2027, 3, 5, 14, 0, tzinfo=UTC)  # Friday; Saturday does not fire

    def test_no_occurrence_left_before_end(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r'^trigger.cron: no occurrence is left between now and end \("2027-03-01 08:00:00"\)$'):
            self.plan(trigger("0 9 * * *", end="2027-03-01 08:00:00"))

    def test_first_fire_more_than_a_year_ahead(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r'^trigger.cron: the first fire must be at most one year ahead, got "2032-02-29 09:00:00"$'):
            self.plan(trigger("0 9 29 2 *"), dt.datetime(2028, 3, 1, tzinfo=UTC))

    def test_kind_change_is_refused_but_cron_to_cron_is_allowed(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r"^trigger: a cron task cannot become interval"):
            schedules.values_for_update(
                _stored(trigger("0 9 * * *", zone_type=1)),
                models.ScheduleUpdate.model_validate({"trigger": {"interval": {"start": "2027-03-02 00:00:00", "every": 1, "unit": "day"}}}),
                {}, "America/New_York", self.NOW, (),
            )  # fmt: skip
        values = schedules.values_for_update(
            _stored(trigger("0 9 * * *", zone_type=1)),
            models.ScheduleUpdate.model_validate({"trigger": trigger("*/5 * * * *")}),
            {}, "America/New_York", self.NOW, (),
        )  # fmt: skip
        assert values.plan is not None and values.plan.next_fire_at == dt.datetime(2027, 3, 1, 12, 5, tzinfo=UTC)
        assert values.trigger == {"cron": {"expression": "*/5 * * * *", "zone_type": 1}}


class TestAfterDowntime:
    def test_only_the_latest_missed_occurrence_may_be_sent(self) -> None:
        # Every minute, the engine back after ten minutes: nine fires superseded, the latest left to the grace rule.
        down_since = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
        now = down_since + dt.timedelta(minutes=10, seconds=30)
        plan = dispatch.plan_due(trigger("* * * * *"), NEW_YORK, (), down_since, now)
        assert len(plan.fires) == 11 and len(plan.superseded) == 10
        assert [fire for fire in plan.fires if fire not in plan.superseded] == [types.Fire(down_since + dt.timedelta(minutes=10))]
        assert plan.next_fire_at == down_since + dt.timedelta(minutes=11)

    def test_a_long_outage_is_planned_in_bounded_chunks(self) -> None:
        down_since = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
        now = down_since + dt.timedelta(days=30)
        plan = dispatch.plan_due(trigger("* * * * *"), NEW_YORK, (), down_since, now)
        assert len(plan.fires) == dispatch.MAX_FIRES_PER_PLAN
        assert plan.next_fire_at == down_since + dt.timedelta(minutes=dispatch.MAX_FIRES_PER_PLAN)


def _stored(wire: dict[str, Any]) -> types.Schedule:
    return types.Schedule(
        schedule_id=types.ScheduleId(uuid.uuid4()), app_key=types.AppKey("k"), name="n", enabled=True,
        trigger=wire, push={}, created_at=TestPlan.NOW, final_fire_at=timing.NO_END, time_zone="America/New_York",
    )  # fmt: skip
