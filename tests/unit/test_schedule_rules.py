"""Update rules on explicit datetimes: what a PUT keeps, replaces and replans."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from service.domain import errors, models, schedules, timing, types

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
PUSH = {"to": "all", "body": {"platform": "all", "notification": {"alert": "hi"}}}


def current(trigger: dict, enabled: bool = True) -> types.Schedule:
    return types.Schedule(
        schedule_id=types.ScheduleId(uuid.uuid4()),
        app_key=types.AppKey("app"),
        name="task",
        enabled=enabled,
        trigger=trigger,
        push=PUSH,
        created_at=NOW - dt.timedelta(days=1),
        final_fire_at=NOW + dt.timedelta(hours=10),
        time_zone="UTC",
    )


def update(stored: types.Schedule, raw: dict) -> types.ScheduleValues:
    body = models.parse(models.ScheduleUpdate, raw)
    return schedules.values_for_update(stored, body, raw, "UTC", NOW, timing.REAL_UTC_OFFSETS_MINUTES)


def test_name_only_keeps_plan_and_fields() -> None:
    stored = current({"single": {"time": "2026-06-01 18:00:00", "zone_type": 1}})
    values = update(stored, {"name": "renamed"})
    assert (values.name, values.enabled, values.trigger, values.push, values.plan) == ("renamed", True, stored.trigger, PUSH, None)


def test_re_enabling_replans_so_waves_passed_while_disabled_are_skipped() -> None:
    # 08:00 wall time: at NOW (12:00 UTC) the waves from UTC+14 to UTC-04:00 have come (UTC-04:00 exactly
    # now); UTC-05:00 is the first wave still ahead.
    stored = current({"single": {"time": "2026-06-01 08:00:00", "zone_type": 2}}, enabled=False)
    values = update(stored, {"enabled": True})
    assert values.plan is not None
    assert values.plan.next_fire_at == dt.datetime(2026, 6, 1, 13, 0, tzinfo=UTC)  # 08:00 at UTC-05:00
    assert {fire.utc_offset_minutes for fire in values.plan.skipped} >= {840, 0, -240}


def test_disabling_keeps_the_plan() -> None:
    stored = current({"single": {"time": "2026-06-01 18:00:00", "zone_type": 1}})
    values = update(stored, {"enabled": False})
    assert values.enabled is False and values.plan is None


def test_zone_type_cannot_change() -> None:
    stored = current({"single": {"time": "2026-06-01 18:00:00", "zone_type": 1}})
    with pytest.raises(errors.InvalidParameter, match="cannot change from 1 to 2"):
        update(stored, {"trigger": {"single": {"time": "2026-06-01 19:00:00", "zone_type": 2}}})
