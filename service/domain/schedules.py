"""The rules that turn a validated create or update body into what is stored (pure: `now` is passed in)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from service.domain import dispatch, errors, models, periodical, timing, types


def plan_trigger(
    trigger: models.Trigger, app_zone: dt.tzinfo, now: dt.datetime, wave_offsets: Sequence[int]
) -> types.FirePlan:
    """The next and the final fire of a trigger seen from `now`; InvalidParameter when none is left."""
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
    zone, which the task keeps."""
    trigger = body.trigger.to_wire()
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
        plan = plan_trigger(models.Trigger.model_validate(current.trigger), zone, now, wave_offsets)
    return types.ScheduleValues(
        name=body.name if body.name is not None else current.name,
        enabled=body.enabled if body.enabled is not None else current.enabled,
        trigger=trigger,
        push=raw["push"] if body.push is not None else current.push,
        plan=plan,
        kind=dispatch.trigger_kind(trigger),
        zone_type=dispatch.zone_type(trigger),
        time_zone=time_zone,
        # Extensions: a PUT without them keeps them; one that sets `enabled` clears the engine's reason for
        # disabling the task, and `enabled: true` also resets its count of consecutive failures (sql/0008).
        description=body.description if body.description is not None else current.description,
        max_failures=body.max_failures if body.max_failures is not None else current.max_failures,
        enabled_set=body.enabled is not None,
    )
