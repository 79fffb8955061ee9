"""Trigger maths on explicit datetimes: formats, calendar validity, horizon edges, DST, zone_type 2 waves."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from service.domain import errors, timing

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def wall(instant: dt.datetime, zone: dt.tzinfo = UTC) -> str:
    return instant.astimezone(zone).strftime(timing.WALL_TIME_FORMAT)


@pytest.mark.parametrize(
    "text",
    ["2014-2-15 13:16:59", "2014-12-15 13:16", "2014-02-15T13:16:59", " 2014-02-15 13:16:59", "2014-02-15 13:16:59 ", "", "２０１４-02-15 13:16:59"],  # noqa: RUF001 -- full-width digits on purpose
)
def test_wall_time_shape_is_exact(text: str) -> None:
    with pytest.raises(ValueError, match="must be yyyy-mm-dd hh:mm:ss"):
        timing.parse_wall_time(text)


@pytest.mark.parametrize("text", ["2027-02-29 10:00:00", "2026-04-31 10:00:00", "2026-13-01 10:00:00", "2026-01-01 24:00:00", "2026-01-01 10:60:00"])
def test_wall_time_must_be_a_real_calendar_time(text: str) -> None:
    with pytest.raises(ValueError, match="not a real calendar time"):
        timing.parse_wall_time(text)


@pytest.mark.parametrize("text", ["0001-01-01 00:00:00", "0001-01-01 23:59:59", "9999-12-31 00:00:00", "9999-12-31 23:59:59"])
def test_wall_time_within_a_day_of_the_calendar_ends_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=f'must be between 0001-01-02 00:00:00 and 9999-12-30 23:59:59, got "{text}"'):
        timing.parse_wall_time(text)


@pytest.mark.parametrize("text", ["0001-01-02 00:00:00", "9999-12-30 23:59:59"])
def test_every_fire_of_the_extreme_wall_times_exists(text: str) -> None:
    """No wave and no zone's offset takes an accepted wall time out of the calendar."""
    wall = timing.parse_wall_time(text)
    for zone in (UTC, zoneinfo.ZoneInfo("Pacific/Kiritimati"), zoneinfo.ZoneInfo("Etc/GMT+12"), BERLIN):
        for zone_type in (1, 2):
            assert timing.single_fires(wall, zone_type, zone)


def test_leap_day_is_a_real_time() -> None:
    assert timing.parse_wall_time("2028-02-29 23:59:59") == dt.datetime(2028, 2, 29, 23, 59, 59)


def test_horizon_is_one_calendar_year() -> None:
    assert timing.horizon(NOW) == dt.datetime(2027, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    leap = dt.datetime(2028, 2, 29, 8, 0, tzinfo=UTC)
    assert timing.horizon(leap) == dt.datetime(2029, 2, 28, 8, 0, tzinfo=UTC)


class TestSingleZoneType1:
    def test_now_is_rejected_as_past(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r"trigger\.single\.time: must be in the future"):
            timing.plan_single(wall(NOW), 1, UTC, NOW)

    def test_one_second_ahead_is_accepted(self) -> None:
        plan = timing.plan_single(wall(NOW + dt.timedelta(seconds=1)), 1, UTC, NOW)
        assert plan.next_fire_at == plan.final_fire_at == (NOW + dt.timedelta(seconds=1)).replace(microsecond=0)

    def test_one_year_minus_one_second_is_accepted(self) -> None:
        text = wall(timing.horizon(NOW) - dt.timedelta(seconds=1))
        plan = timing.plan_single(text, 1, UTC, NOW)
        assert plan.final_fire_at == dt.datetime(2027, 3, 1, 11, 59, 59, tzinfo=UTC)

    def test_one_year_plus_one_second_is_rejected(self) -> None:
        text = wall(timing.horizon(NOW) + dt.timedelta(seconds=1))
        with pytest.raises(errors.InvalidParameter, match="at most one year ahead"):
            timing.plan_single(text, 1, UTC, NOW)

    def test_time_is_read_in_the_app_zone(self) -> None:
        plan = timing.plan_single("2026-07-01 09:00:00", 1, BERLIN, NOW)
        assert plan.next_fire_at == plan.final_fire_at == dt.datetime(2026, 7, 1, 7, 0, tzinfo=UTC)

    def test_bad_shape_names_the_field(self) -> None:
        with pytest.raises(errors.InvalidParameter, match=r'^trigger\.single\.time: must be yyyy-mm-dd hh:mm:ss, got "2014-2-15 13:16:59"$'):
            timing.plan_single("2014-2-15 13:16:59", 1, UTC, NOW)


class TestDaylightSaving:
    def test_nonexistent_time_moves_to_the_end_of_the_gap(self) -> None:
        # 2026-03-08 02:30 does not exist in New York: clocks jump from 02:00 EST to 03:00 EDT (07:00 UTC).
        due = timing.wall_to_utc(dt.datetime(2026, 3, 8, 2, 30), NEW_YORK)
        assert due == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
        assert wall(due, NEW_YORK) == "2026-03-08 03:00:00"

    def test_nonexistent_time_in_europe(self) -> None:
        # 2026-03-29 02:15 does not exist in Berlin: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
        assert timing.wall_to_utc(dt.datetime(2026, 3, 29, 2, 15), BERLIN) == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)

    def test_ambiguous_time_takes_the_first_occurrence(self) -> None:
        # 2026-11-01 01:30 happens twice in New York: first in EDT (05:30 UTC), then in EST (06:30 UTC).
        assert timing.wall_to_utc(dt.datetime(2026, 11, 1, 1, 30), NEW_YORK) == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)

    def test_ordinary_times_either_side_of_a_transition(self) -> None:
        assert timing.wall_to_utc(dt.datetime(2026, 3, 8, 1, 59, 59), NEW_YORK) == dt.datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC)
        assert timing.wall_to_utc(dt.datetime(2026, 3, 8, 3, 0), NEW_YORK) == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    def test_plan_in_a_dst_app_zone(self) -> None:
        plan = timing.plan_single("2026-03-08 02:30:00", 1, NEW_YORK, NOW)
        assert plan.next_fire_at == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


class TestZoneType2Waves:
    def test_one_wave_per_offset_earliest_first(self) -> None:
        waves = timing.single_fires(dt.datetime(2026, 6, 1, 9, 0), 2, UTC)
        assert [fire.utc_offset_minutes for fire in waves] == sorted(timing.REAL_UTC_OFFSETS_MINUTES, reverse=True)
        assert waves[0] == timing.types.Fire(dt.datetime(2026, 5, 31, 19, 0, tzinfo=UTC), 840)
        assert waves[-1] == timing.types.Fire(dt.datetime(2026, 6, 1, 21, 0, tzinfo=UTC), -720)
        plan = timing.plan_single("2026-06-01 09:00:00", 2, UTC, NOW)
        assert (plan.next_fire_at, plan.final_fire_at, plan.skipped) == (waves[0].due_at, waves[-1].due_at, ())

    def test_waves_already_past_are_skipped(self) -> None:
        # At NOW (12:00:00.25 UTC), 12:00 local has come in every zone from UTC+14 down to UTC+00:00;
        # the UTC-01:00 wave (13:00 UTC) and those after it are still ahead.
        plan = timing.plan_single("2026-03-01 12:00:00", 2, UTC, NOW)
        assert min(fire.utc_offset_minutes for fire in plan.skipped) == 0
        assert plan.next_fire_at == dt.datetime(2026, 3, 1, 13, 0, tzinfo=UTC)  # the UTC-01:00 wave
        assert len(plan.skipped) == len([o for o in timing.REAL_UTC_OFFSETS_MINUTES if o >= 0])

    def test_no_wave_left_is_no_push_target(self) -> None:
        with pytest.raises(errors.NoPushTarget, match="no push target remains"):
            timing.plan_single("2026-02-28 23:00:00", 2, UTC, NOW)

    def test_deployment_may_narrow_the_offsets(self) -> None:
        plan = timing.plan_single("2026-06-01 09:00:00", 2, UTC, NOW, wave_offsets=(480, 0))
        assert (plan.next_fire_at.hour, plan.final_fire_at.hour) == (1, 9)

    def test_horizon_counts_from_the_first_wave(self) -> None:
        last_ok = wall(timing.horizon(NOW) + dt.timedelta(hours=14))
        assert timing.plan_single(last_ok, 2, UTC, NOW).next_fire_at == timing.horizon(NOW).replace(microsecond=0)
        too_far = wall(timing.horizon(NOW) + dt.timedelta(hours=14, seconds=1))
        with pytest.raises(errors.InvalidParameter, match="at most one year ahead"):
            timing.plan_single(too_far, 2, UTC, NOW)


@pytest.mark.parametrize("minutes,text", [(480, "+08:00"), (-570, "-09:30"), (0, "+00:00"), (345, "+05:45")])
def test_offset_round_trip(minutes: int, text: str) -> None:
    assert timing.format_offset(minutes) == text
    assert timing.parse_offset(text) == minutes
