"""Interval triggers (Freshworks' `repeat`): every N minutes, hours or days from `start`, until an optional `end`.

The k-th fire is computed from `start`, never from the previous fire: `start + k·every`. A restart, an
outage or a slow send cannot make later fires drift, and the fires after downtime are the same instants
they would have been.

- `minute` and `hour` count elapsed time: `start` is read once in the task's zone (same DST rules as every
  other wall time), and every fire is that instant plus k·every. Across a DST change the wall-clock time of
  the fires shifts by the change; the spacing never does.
- `day` keeps the wall-clock time of `start`, as Freshworks takes the hour and minute from `schedule_at`:
  the k-th fire is the wall time `start + k·every days`, read in the zone on its own date. A day whose time
  falls in a spring-forward gap fires at the gap's end; a repeated one at its first occurrence.

Interval triggers are zone_type 1 only: fires counted in elapsed time have no wall time to repeat per zone.
Pure: every function takes the instants it needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from service.domain import timing, types

UNITS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
MAX_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A validated interval trigger, in wall-clock terms."""

    start: dt.datetime  # naive wall times
    every: int
    unit: str  # minute | hour | day
    end: dt.datetime | None

    @classmethod
    def from_wire(cls, trigger: dict[str, Any]) -> Interval:
        end = trigger.get("end")
        return cls(
            start=timing.parse_wall_time(trigger["start"]),
            every=trigger["every"],
            unit=trigger["unit"],
            end=None if end is None else timing.parse_wall_time(end),
        )

    @property
    def step(self) -> dt.timedelta:
        return self.every * UNITS[self.unit]


def _fire(spec: Interval, app_zone: dt.tzinfo, k: int) -> dt.datetime:
    """The instant of the k-th fire (k = 0 is `start`)."""
    if spec.unit == "day":
        return timing.wall_to_utc(spec.start + k * spec.step, app_zone)
    return timing.wall_to_utc(spec.start, app_zone) + k * spec.step


def _end_at(spec: Interval, app_zone: dt.tzinfo) -> dt.datetime | None:
    return None if spec.end is None else timing.wall_to_utc(spec.end, app_zone)


def _first_index_at_or_after(spec: Interval, app_zone: dt.tzinfo, lower: dt.datetime) -> int:
    """The smallest k >= 0 whose fire is at or after `lower`."""
    if spec.unit == "day":
        # Count in wall-clock days, one step early for the zone's offset changes, then walk forward.
        days = (lower.astimezone(app_zone).replace(tzinfo=None) - spec.start).days
        k = max(0, days // spec.every - 1)
    else:
        elapsed = lower - timing.wall_to_utc(spec.start, app_zone)
        k = max(0, -(-elapsed // spec.step))  # ceiling division of timedeltas
    while _fire(spec, app_zone, k) < lower:
        k += 1
    return k


def fires_from(spec: Interval, app_zone: dt.tzinfo, lower: dt.datetime) -> Iterator[types.Fire]:
    """Every fire with due_at >= lower, up to `end`, in order, lazily."""
    end_at = _end_at(spec, app_zone)
    k = _first_index_at_or_after(spec, app_zone, lower)
    while True:
        due_at = _fire(spec, app_zone, k)
        if end_at is not None and due_at > end_at:
            return
        yield types.Fire(due_at)
        k += 1


def fires_between(
    spec: Interval, app_zone: dt.tzinfo, lower: dt.datetime, upper: dt.datetime, limit: int
) -> tuple[list[types.Fire], dt.datetime | None]:
    """At most `limit` fires with lower <= due_at <= upper, in order, and the instant of the next fire after
    them (None: there is none)."""
    due: list[types.Fire] = []
    for fire in fires_from(spec, app_zone, lower):
        if fire.due_at > upper or len(due) >= limit:
            return due, fire.due_at
        due.append(fire)
    return due, None


def first_fire_after(spec: Interval, app_zone: dt.tzinfo, instant: dt.datetime) -> types.Fire | None:
    """The earliest fire strictly after `instant`, or None when none is left before `end`."""
    return next((fire for fire in fires_from(spec, app_zone, instant) if fire.due_at > instant), None)


def last_fire(spec: Interval, app_zone: dt.tzinfo) -> types.Fire | None:
    """The final fire at or before `end`; None when the trigger has no end (or `end` comes before `start`)."""
    end_at = _end_at(spec, app_zone)
    if end_at is None:
        return None
    if spec.unit == "day":
        k = max(0, (spec.end - spec.start) // spec.step + 1) if spec.end is not None else 0
    else:
        k = max(0, (end_at - timing.wall_to_utc(spec.start, app_zone)) // spec.step + 1)
    while k >= 0 and _fire(spec, app_zone, k) > end_at:
        k -= 1
    return None if k < 0 else types.Fire(_fire(spec, app_zone, k))
