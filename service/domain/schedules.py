"""The rules that turn a validated create or update body into what is stored (pure: `now` is passed in)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from service.domain import cron, dispatch, errors, interval, models, params, periodical, timing, types


def _plan_open_ended(
    kind: str, fields: dict[str, Any], app_zone: dt.tzinfo, now: dt.datetime, wave_offsets: Sequence[int], fresh: bool
) -> types.FirePlan:
    """Cron and interval triggers: the next fire after `now` and the last before `end` (timing.NO_END without one).

    A trigger being set (`fresh`) must have its first fire within the one-year horizon, and an interval its
    `start` in the future (it is the first fire). A task re-enabled later goes on from its next fire. Zone_type 2
    waves already past at creation are not recorded (a cron task may fire every minute: that would be
    thousands of rows); they were never fires of the task.
    """
    first: types.Fire | None
    last: types.Fire | None
    if kind == "cron":
        cron_spec = cron.Cron.from_wire(fields)
        first = cron.first_fire_after(cron_spec, app_zone, wave_offsets, now)
        last = cron.last_fire(cron_spec, app_zone, wave_offsets)
    else:
        interval_spec = interval.Interval.from_wire(fields)
        if fresh and timing.wall_to_utc(interval_spec.start, app_zone) <= now:
            raise errors.InvalidParameter(
                f'trigger.interval.start: must be in the future (it is the first fire), got "{fields["start"]}" '
                f"({app_zone} time is {now.astimezone(app_zone).strftime(timing.WALL_TIME_FORMAT)})"
            )
        first = interval.first_fire_after(interval_spec, app_zone, now)
        last = interval.last_fire(interval_spec, app_zone)
    if first is None:
        end = fields.get("end")
        raise errors.InvalidParameter(f'trigger.{kind}: no occurrence is left between now and end ("{end}")')
    if fresh and first.due_at > timing.horizon(now):
        where = "trigger.interval.start" if kind == "interval" else "trigger.cron"
        first_wall = first.due_at.astimezone(app_zone).strftime(timing.WALL_TIME_FORMAT)
        raise errors.InvalidParameter(f'{where}: the first fire must be at most one year ahead, got "{first_wall}"')
    return types.FirePlan(next_fire_at=first.due_at, final_fire_at=timing.NO_END if last is None else last.due_at)


def plan_trigger(
    trigger: models.Trigger,
    app_zone: dt.tzinfo,
    now: dt.datetime,
    wave_offsets: Sequence[int],
    *,
    fresh: bool = True,
) -> types.FirePlan:
    """The next and the final fire of a trigger seen from `now`; InvalidParameter when none is left.

    `fresh`: the trigger is being set (create, a PUT with a trigger, a preview), so it is validated as new;
    False when a stored task is re-enabled and goes on from where it is."""
    if trigger.cron is not None or trigger.interval is not None:
        kind, fields = next(iter(trigger.to_wire().items()))
        return _plan_open_ended(kind, fields, app_zone, now, wave_offsets, fresh)
    if trigger.single is not None:
        # The model types zone_type as int (its own validator gives the error message); that validator admits 1 and 2.
        zone_type = cast("types.ZoneType", trigger.single.zone_type)
        return timing.plan_single(trigger.single.time, zone_type, app_zone, now, wave_offsets)
    spec = periodical.Periodical.from_wire(trigger.to_wire()["periodical"])
    first = periodical.first_fire_after(spec, app_zone, wave_offsets, now)
    if first is None:
        end = trigger.to_wire()["periodical"]["end"]
        raise errors.InvalidParameter(f'trigger.periodical: no occurrence is left between now and end ("{end}")')
    last = periodical.last_fire(spec, app_zone, wave_offsets)
    assert last is not None
    skipped: tuple[types.Fire, ...] = ()
    if spec.zone_type == 2:
        # Waves already past of an occurrence still under way (its later waves are ahead): recorded skipped.
        latest_wave = dt.timedelta(minutes=-min(wave_offsets))
        recent = periodical.fires_between(spec, app_zone, wave_offsets, now - dt.timedelta(hours=26), now)
        skipped = tuple(
            fire
            for fire in recent
            if fire.due_at + dt.timedelta(minutes=fire.utc_offset_minutes) + latest_wave > now
        )
    return types.FirePlan(next_fire_at=first.due_at, final_fire_at=last.due_at, skipped=skipped)


def values_for_create(
    body: models.ScheduleCreate,
    raw_push: dict[str, Any],
    app_time_zone: str,
    now: dt.datetime,
    wave_offsets: Sequence[int],
) -> types.ScheduleValues:
    """What a create stores: the push exactly as sent, the trigger normalized, the fires planned in the app's
    zone, which the task keeps. The push must pass with its parameters' defaults filled in."""
    trigger = body.trigger.to_wire()
    declared = params.check_declared(body.params) if body.params is not None else {}
    params.check_push(raw_push, declared)
    return types.ScheduleValues(
        name=body.name,
        enabled=body.enabled,
        trigger=trigger,
        push=raw_push,
        plan=plan_trigger(body.trigger, timing.load_zone(app_time_zone), now, wave_offsets),
        kind=dispatch.trigger_kind(trigger),
        zone_type=dispatch.zone_type(trigger),
        time_zone=app_time_zone,
        description=body.description if body.description is not None else "",
        max_failures=body.max_failures if body.max_failures is not None else 0,
        params=declared or None,
    )


def _kind_and_zone(trigger: dict[str, Any]) -> tuple[str, int]:
    return dispatch.trigger_kind(trigger), dispatch.zone_type(trigger)


def values_for_update(
    current: types.Schedule,
    body: models.ScheduleUpdate,
    raw: dict[str, Any],
    app_time_zone: str,
    now: dt.datetime,
    wave_offsets: Sequence[int],
) -> types.ScheduleValues:
    """Replace each field the PUT names, wholly; a new trigger keeps its kind and zone type.

    A new trigger is read in the app's zone now, which the task keeps from then on; a kept trigger stays in
    the zone the task was planned in, so changing the app's zone never moves a stored task's fires."""
    plan = None
    trigger = current.trigger
    time_zone = current.time_zone
    if body.trigger is not None:
        trigger = body.trigger.to_wire()
        old_kind, old_zone = _kind_and_zone(current.trigger)
        new_kind, new_zone = _kind_and_zone(trigger)
        if new_kind != old_kind:
            raise errors.InvalidParameter(
                f"trigger: a {old_kind} task cannot become {new_kind}; delete it and create a new one"
            )
        if new_zone != old_zone:
            raise errors.InvalidParameter(
                f"trigger.{new_kind}.zone_type: cannot change from {old_zone} to {new_zone} on an existing task"
            )
        time_zone = app_time_zone
        plan = plan_trigger(body.trigger, timing.load_zone(time_zone), now, wave_offsets)
    elif body.enabled and not current.enabled:
        # Re-enabled: fires (waves) that passed while it was disabled are skipped, never sent late.
        zone = timing.load_zone(time_zone)
        plan = plan_trigger(models.Trigger.model_validate(current.trigger), zone, now, wave_offsets, fresh=False)
    push = raw["push"] if body.push is not None else current.push
    declared = params.check_declared(body.params) if body.params is not None else current.params
    if body.push is not None or body.params is not None:
        params.check_push(push, declared)
    return types.ScheduleValues(
        name=body.name if body.name is not None else current.name,
        enabled=body.enabled if body.enabled is not None else current.enabled,
        trigger=trigger,
        push=push,
        plan=plan,
        kind=dispatch.trigger_kind(trigger),
        zone_type=dispatch.zone_type(trigger),
        time_zone=time_zone,
        # Extensions: a PUT without them keeps them; one that sets `enabled` clears the engine's reason for
        # disabling the task, and `enabled: true` also resets its count of consecutive failures (sql/0008).
        description=body.description if body.description is not None else current.description,
        max_failures=body.max_failures if body.max_failures is not None else current.max_failures,
        enabled_set=body.enabled is not None,
        params=declared or None,
    )


MAX_UPCOMING = 100


def parse_count(text: str | None, default: int = 10) -> int:
    """The `count` query parameter of upcoming and preview: 1..MAX_UPCOMING, ASCII digits."""
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_UPCOMING:
        raise errors.InvalidParameter(f'count: must be an integer 1..{MAX_UPCOMING}, got "{text}"')
    return int(text)


def upcoming(
    trigger: dict[str, Any], time_zone: str, now: dt.datetime, wave_offsets: Sequence[int], count: int
) -> dict[str, Any]:
    """The answer of upcoming and preview: the next `count` fires of a stored trigger (in the zone the task
    keeps) or of one not yet stored (in the app's zone), each as a UTC instant and as wall time in that zone,
    with its wave's offset for zone_type 2."""
    zone = timing.load_zone(time_zone)
    waves = dispatch.zone_type(trigger) == 2
    fires = []
    for fire in dispatch.upcoming(trigger, zone, wave_offsets, now, count):
        item = {
            "utc": fire.due_at.astimezone(timing.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time": fire.due_at.astimezone(zone).strftime(timing.WALL_TIME_FORMAT),
        }
        if waves:
            item["wave"] = timing.format_offset(fire.utc_offset_minutes)
        fires.append(item)
    return {"time_zone": time_zone, "count": len(fires), "fires": fires}


def preview(
    body: models.TriggerPreview, app_time_zone: str, now: dt.datetime, wave_offsets: Sequence[int], count: int
) -> dict[str, Any]:
    """What a trigger not yet stored means: validated exactly as a create would (the same 28100 and 28105
    answers), then its next fires in the app's zone."""
    plan_trigger(body.trigger, timing.load_zone(app_time_zone), now, wave_offsets)
    return upcoming(body.trigger.to_wire(), app_time_zone, now, wave_offsets, count)
