"""Cron triggers: a five-field crontab read as wall-clock time, from an optional `start` to an optional `end`.

Which minutes of the calendar match an expression is cronsim's job (`cronsim.CronSim`, the parser and
evaluator healthchecks.io runs in production; dependency-free and typed). We give it **naive** wall-clock
times only, so it never applies a DST rule of its own: each matching wall time becomes fires through
`timing`, exactly as a single time or a periodical occurrence does. A wall time skipped by a spring-forward
fires at the first valid instant after the gap (and once, should a real occurrence land on that instant
too); a repeated one fires at its first occurrence only; zone_type 2 fires one wave per UTC offset.

Why not APScheduler's CronTrigger, which the card named first: version 3.11 fails both DST rules (a time in
the gap fires half an hour late, 03:30 instead of 03:00; a repeated time fires twice) and reads crontab
weekdays off by one (`1-5` is Tuesday to Saturday) with AND between day of month and day of week
(README, "Cron and interval triggers").

The expression is checked here first, field by field, so a mistake is named in the field's own terms and
only the documented syntax is accepted (cronsim also knows `L`, `W`, `#` and a seconds field; we do not).
Pure: every function takes the instants it needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import re
from collections.abc import Iterator, Sequence
from typing import Any

import cronsim

from service.domain import timing, types

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# The longest each month can be (February in a leap year), for the "never occurs" check.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_FULL_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
# One item of a field's comma-separated list: *, a value (number or name) or a range, each with an optional /step.
_ITEM = re.compile(
    r"(?P<base>\*|(?P<low>[0-9]+|[A-Z]{3})(?:-(?P<high>[0-9]+|[A-Z]{3}))?)(?:/(?P<step>[0-9]+))?", re.ASCII
)
# A zone's UTC offset changes by at most a few hours at once (2 h at Antarctica/Troll): wall times this much
# before an instant's own wall time are the earliest whose fire can still come at or after that instant (a
# time in a spring-forward gap fires at the gap's end).
_DST_MARGIN = dt.timedelta(hours=3)
_SECOND = dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low_name + i
    first_name_value: int = 0

    def value(self, token: str) -> int:
        if token.isdigit():
            number = int(token)
        elif token in self.names:
            number = self.first_name_value + self.names.index(token)
        elif self.names:
            raise ValueError(f'{self.name}: "{token}" is not a number nor one of {", ".join(self.names)}')
        else:
            raise ValueError(f'{self.name}: "{token}" is not a number')
        if not self.low <= number <= self.high:
            raise ValueError(f"{self.name}: {token} is out of {self.low}..{self.high}")
        return number


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day of week", 0, 7, WEEKDAY_NAMES, 0),  # 0 and 7 are both Sunday
)


def _field_values(field: _Field, text: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f'{field.name}: "{item}" is not *, a value, a range a-b, or one of those with a /step'
            )
        if match["base"] == "*":
            low, high = field.low, field.high
        else:
            low = field.value(match["low"])
            # "a/n" without a range runs from a to the field's end, as in Vixie cron.
            high = field.value(match["high"]) if match["high"] else (field.high if match["step"] else low)
            if high < low:
                raise ValueError(f'{field.name}: the range "{item}" runs backwards')
        step = int(match["step"]) if match["step"] else 1
        if not 1 <= step <= field.high:
            raise ValueError(f'{field.name}: the step in "{item}" must be 1..{field.high}')
        values.update(range(low, high + 1, step))
    return values


def normalize(expression: str) -> str:
    """The five fields of a valid expression, macros expanded and names in upper case, ready for cronsim.

    ValueError naming the cron field otherwise, including an expression that matches no day ever (`0 0 30 2 *`).
    """
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ValueError(f'unknown macro "{text}", expected one of {", ".join(MACROS)}')
        text = MACROS[text.lower()]
    fields = text.upper().split()
    if len(fields) != 5:
        raise ValueError(
            f"must have five fields (minute, hour, day of month, month, day of week) or be a macro, got {len(fields)}"
        )
    values = [_field_values(field, part) for field, part in zip(FIELDS, fields, strict=True)]
    days, months = values[2], values[3]
    # As in Vixie and Debian cron (and cronsim): day of month and day of week are ORed when both are restricted,
    # ANDed when either starts with "*". Only the AND case can name days no month has.
    day_and = fields[2].startswith("*") or fields[4].startswith("*")
    if day_and and min(days) > max(_MONTH_DAYS[month - 1] for month in months):
        in_months = ", ".join(_MONTH_FULL_NAMES[month - 1] for month in sorted(months))
        raise ValueError(f"day of month: {fields[2]} never falls in {in_months}, so the expression never fires")
    return " ".join(fields)


@dataclasses.dataclass(frozen=True)
class Cron:
    """A validated cron trigger, in wall-clock terms."""

    expression: str  # normalized: five fields
    start: dt.datetime | None  # naive wall times
    end: dt.datetime | None
    zone_type: int

    @classmethod
    def from_wire(cls, trigger: dict[str, Any]) -> Cron:
        start, end = trigger.get("start"), trigger.get("end")
        return cls(
            expression=normalize(trigger["expression"]),
            start=None if start is None else timing.parse_wall_time(start),
            end=None if end is None else timing.parse_wall_time(end),
            zone_type=trigger.get("zone_type", 1),
        )

    def walls(self, at_or_after: dt.datetime) -> Iterator[dt.datetime]:
        """Matching wall times from `at_or_after` (naive, inclusive) on, within [start, end], in order."""
        lower = at_or_after if self.start is None else max(at_or_after, self.start)
        # cronsim yields matches strictly after the instant it is given.
        for wall in cronsim.CronSim(self.expression, lower - _SECOND):
            if wall < lower:
                continue
            if self.end is not None and wall > self.end:
                return
            yield wall

    def last_wall(self) -> dt.datetime | None:
        """The last matching wall time within [start, end]; None without an end or when none matches."""
        if self.end is None:
            return None
        # Reversed, cronsim yields matches strictly before the instant: just after `end` includes `end`.
        last: dt.datetime = next(cronsim.CronSim(self.expression, self.end + _SECOND, reverse=True))
        return None if self.start is not None and last < self.start else last


def fires_from(spec: Cron, app_zone: dt.tzinfo, offsets: Sequence[int], lower: dt.datetime) -> Iterator[types.Fire]:
    """Every fire with due_at >= lower, in order (a tie between waves: the earlier wave first), lazily."""
    if spec.zone_type == 1:
        wall_lower = lower.astimezone(app_zone).replace(tzinfo=None) - _DST_MARGIN
        previous: dt.datetime | None = None
        for wall in spec.walls(wall_lower):
            due_at = timing.wall_to_utc(wall, app_zone)
            # Several wall times of a spring-forward gap (02:00, 02:30 and the real 03:00) share one instant.
            if due_at >= lower and due_at != previous:
                previous = due_at
                yield types.Fire(due_at)
        return
    # zone_type 2: the wave at offset o fires when local time at o is the wall time, i.e. at wall - o in UTC.
    # One lazy stream per offset, merged in order; each starts at the first wall time that can reach `lower`.
    naive_lower = lower.astimezone(timing.UTC).replace(tzinfo=None)

    def wave(offset: int) -> Iterator[types.Fire]:
        shift = dt.timedelta(minutes=offset)
        for wall in spec.walls(naive_lower + shift):
            due_at = (wall - shift).replace(tzinfo=timing.UTC)
            if due_at >= lower:
                yield types.Fire(due_at, offset)

    streams = [wave(offset) for offset in sorted(set(offsets), reverse=True)]
    yield from heapq.merge(*streams, key=lambda fire: (fire.due_at, -fire.utc_offset_minutes))


def fires_between(
    spec: Cron, app_zone: dt.tzinfo, offsets: Sequence[int], lower: dt.datetime, upper: dt.datetime, limit: int
) -> tuple[list[types.Fire], dt.datetime | None]:
    """At most `limit` fires with lower <= due_at <= upper, in order, and the instant of the next fire after
    them (None: there is none)."""
    due: list[types.Fire] = []
    for fire in fires_from(spec, app_zone, offsets, lower):
        if fire.due_at > upper or len(due) >= limit:
            return due, fire.due_at
        due.append(fire)
    return due, None


def first_fire_after(
    spec: Cron, app_zone: dt.tzinfo, offsets: Sequence[int], instant: dt.datetime
) -> types.Fire | None:
    """The earliest fire strictly after `instant`, or None when none is left before `end`."""
    return next((fire for fire in fires_from(spec, app_zone, offsets, instant) if fire.due_at > instant), None)


def last_fire(spec: Cron, app_zone: dt.tzinfo, offsets: Sequence[int]) -> types.Fire | None:
    """The final fire (the last wave of the last matching wall time), or None when the trigger has no end."""
    last = spec.last_wall()
    if last is None:
        return None
    return max(timing.single_fires(last, spec.zone_type, app_zone, offsets), key=lambda fire: fire.due_at)
