"""Periodical triggers: every `frequency`-th day, week or month from `start`, at `time`, on each point.

The calendar maths is dateutil's rrule (well tested, handles month lengths and leap days); this module only
maps our fields onto it and turns each wall-clock occurrence into fires, exactly as single triggers do:
zone_type 1 through the app's zone (same DST rules), zone_type 2 as one wave per UTC offset.
Pure: every function takes the instants it needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from dateutil import rrule

from service.domain import timing, types

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_RRULE_WEEKDAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
# Typed as the literals rrule() takes (DAILY=3, WEEKLY=2, MONTHLY=1), not as plain ints.
_FREQUENCIES: dict[str, Literal[1, 2, 3]] = {"day": rrule.DAILY, "week": rrule.WEEKLY, "month": rrule.MONTHLY}
# A wave's instant is its wall time minus its offset: between 14 h before and 12 h after the wall time
# read as UTC. Searching occurrences this much either side of an instant finds every wave near it.
_EARLIEST_WAVE = dt.timedelta(hours=14)
_LATEST_WAVE = dt.timedelta(hours=12)


@dataclasses.dataclass(frozen=True)
class Periodical:
    """A validated periodical trigger, in wall-clock terms."""

    start: dt.datetime  # naive wall time
    end: dt.datetime  # naive wall time
    time: dt.time
    unit: str  # day | week | month (lower case)
    frequency: int
    points: tuple[int, ...]  # week: 0=MON..6=SUN; month: 1..31; day: ()
    zone_type: int

    @classmethod
    def from_wire(cls, trigger: dict[str, Any]) -> Periodical:
        unit = trigger["time_unit"].lower()
        raw_points = trigger.get("point") or []
        if unit == "week":
            points = tuple(sorted({WEEKDAYS.index(point.upper()) for point in raw_points}))
        elif unit == "month":
            points = tuple(sorted({int(point) for point in raw_points}))
        else:
            points = ()
        return cls(
            start=timing.parse_wall_time(trigger["start"]),
            end=timing.parse_wall_time(trigger["end"]),
            time=dt.datetime.strptime(trigger["time"], "%H:%M:%S").time(),
            unit=unit,
            frequency=trigger["frequency"],
            points=points,
            zone_type=trigger.get("zone_type", 1),
        )

    def _rule(self) -> rrule.rrule:
        # The grid is anchored on start's day (week, month): "every Nth unit counted from start".
        anchor = dt.datetime.combine(self.start.date(), self.time)
        options: dict[str, Any] = {"dtstart": anchor, "interval": self.frequency, "until": self.end}
        if self.unit == "week":
            options["byweekday"] = [_RRULE_WEEKDAYS[point] for point in self.points]
            options["wkst"] = rrule.MO
        elif self.unit == "month":
            options["bymonthday"] = list(self.points)  # a day a month lacks (31, 30, Feb 29) is skipped
        return rrule.rrule(_FREQUENCIES[self.unit], **options)

    def occurrences(self, after: dt.datetime | None = None) -> Iterator[dt.datetime]:
        """Wall times of every occurrence within [start, end], in order, from `after` (inclusive) on."""
        lower = self.start if after is None else max(self.start, after)
        rule = self._rule()
        first = rule.after(lower, inc=True)
        if first is None:
            return iter(())
        return rule.xafter(first, inc=True)

    def last_occurrence(self) -> dt.datetime | None:
        last = self._rule().before(self.end, inc=True)
        return last if last is not None and last >= self.start else None


def _fires_of(
    occurrence: dt.datetime, spec: Periodical, app_zone: dt.tzinfo, offsets: Sequence[int]
) -> list[types.Fire]:
    return timing.single_fires(occurrence, spec.zone_type, app_zone, offsets)


def fires_between(
    spec: Periodical, app_zone: dt.tzinfo, offsets: Sequence[int], lower: dt.datetime, upper: dt.datetime
) -> list[types.Fire]:
    """Every fire (UTC) with lower <= due_at <= upper, in order."""
    # Occurrences whose fires can land in the window: wall time read as UTC within [lower-12h, upper+14h]
    # for waves; a day either side covers any app zone's offset for zone_type 1 too.
    margin = dt.timedelta(days=1, hours=2)
    wall_lower = lower.astimezone(timing.UTC).replace(tzinfo=None) - margin
    wall_upper = upper.astimezone(timing.UTC).replace(tzinfo=None) + margin
    fires: list[types.Fire] = []
    for occurrence in spec.occurrences(wall_lower):
        if occurrence > wall_upper:
            break
        fires.extend(fire for fire in _fires_of(occurrence, spec, app_zone, offsets) if lower <= fire.due_at <= upper)
    return sorted(fires, key=lambda fire: (fire.due_at, -fire.utc_offset_minutes))


def first_fire_after(
    spec: Periodical, app_zone: dt.tzinfo, offsets: Sequence[int], instant: dt.datetime
) -> types.Fire | None:
    """The earliest fire strictly after `instant`, or None when none is left before `end`."""
    margin = dt.timedelta(days=1, hours=2)
    wall_from = instant.astimezone(timing.UTC).replace(tzinfo=None) - margin
    best: types.Fire | None = None
    for occurrence in spec.occurrences(wall_from):
        # Fires of later occurrences come no earlier than the occurrence's wall time minus 14 h (minus a
        # day for any app zone): once past the best found, nothing later can beat it.
        if best is not None and occurrence - margin > best.due_at.astimezone(timing.UTC).replace(tzinfo=None):
            break
        for fire in _fires_of(occurrence, spec, app_zone, offsets):
            if fire.due_at > instant and (best is None or fire.due_at < best.due_at):
                best = fire
    return best


def last_fire(spec: Periodical, app_zone: dt.tzinfo, offsets: Sequence[int]) -> types.Fire | None:
    """The final fire: the last wave of the last occurrence within [start, end]."""
    last = spec.last_occurrence()
    if last is None:
        return None
    return max(_fires_of(last, spec, app_zone, offsets), key=lambda fire: fire.due_at)


