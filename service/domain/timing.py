"""Trigger maths: wall-clock strings to UTC instants, DST rules, the one-year horizon and zone_type 2 waves.

Everything here is pure: `now` is always an argument, so tests use plain datetimes and never mock a clock.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable

from dateutil.relativedelta import relativedelta

from service.domain import errors, types

UTC = dt.timezone.utc
WALL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_WALL_TIME_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
# The wall times whose instants exist in every time zone: a day inside Python's calendar (years 1..9999), so
# no wave or zone offset (at most a day) takes an instant out of it. Anything nearer the ends is refused
# before any arithmetic overflows; the one-year horizon refuses it later anyway.
EARLIEST_WALL_TIME = dt.datetime.min + dt.timedelta(days=1)
LATEST_WALL_TIME = dt.datetime.max.replace(microsecond=0) - dt.timedelta(days=1)

# Every UTC offset (minutes) in use somewhere on Earth in some season, per the IANA database: a wall-clock
# time T happens first at UTC+14 (Line Islands) and last at UTC-12. zone_type 2 fires one wave per offset.
REAL_UTC_OFFSETS_MINUTES: tuple[int, ...] = (
    -720, -660, -600, -570, -540, -480, -420, -360, -300, -240, -210, -180, -150, -120, -60,
    0, 60, 120, 180, 210, 240, 270, 300, 330, 345, 360, 390, 420, 480, 525, 540, 570, 600, 630,
    660, 720, 765, 780, 825, 840,
)


# The final fire of a trigger that has none (cron and interval triggers without `end`): stored as PostgreSQL's
# 'infinity', which compares after every instant, so such a task stays valid (listed, counted against the cap,
# never swept as expired) until it is deleted. asyncpg writes this value as 'infinity' and reads 'infinity'
# back as its naive twin; the store turns that into this one.
NO_END = dt.datetime.max.replace(tzinfo=UTC)


def parse_wall_time(value: str) -> dt.datetime:
    """Parse `yyyy-mm-dd hh:mm:ss` (zero-padded, a real calendar time) into a naive datetime.

    Raises ValueError with a message naming what is wrong (the caller adds the field name).
    """
    if not _WALL_TIME_SHAPE.fullmatch(value):
        raise ValueError(f'must be yyyy-mm-dd hh:mm:ss, got "{value}"')
    try:
        wall = dt.datetime.strptime(value, WALL_TIME_FORMAT)
    except ValueError:
        raise ValueError(f'is not a real calendar time, got "{value}"') from None
    if not EARLIEST_WALL_TIME <= wall <= LATEST_WALL_TIME:
        raise ValueError(
            f"must be between {EARLIEST_WALL_TIME.isoformat(' ')} and {LATEST_WALL_TIME.isoformat(' ')}, "
            f'got "{value}"'
        )
    return wall


def format_offset(minutes: int) -> str:
    """UTC offset in the `+08:00` form used by the X-Push-Utc-Offset header and messages."""
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def parse_offset(text: str) -> int:
    """`+05:45` -> 345. Raises ValueError for anything else."""
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text.strip(), re.ASCII)
    if not match:
        raise ValueError(f'UTC offset must look like +08:00, got "{text}"')
    sign, hours, mins = match.groups()
    total = int(hours) * 60 + int(mins)
    return -total if sign == "-" else total


def load_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name`; ValueError when there is no such zone."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown IANA time zone "{name}"') from None


def wall_to_utc(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The UTC instant at which clocks in `zone` show `wall`.

    Ambiguous times (the repeated hour when clocks go back) take the first occurrence. Times that do not
    exist (the hour skipped when clocks go forward) move forward to the first valid instant, which is the
    transition itself: 02:30 on a spring-forward night in New York fires at 03:00 EDT.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: the two folds bracket the transition instant; local time is monotonic across it, so a
    # bisection to the second finds the first instant whose local time is not before `wall`.
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def horizon(now: dt.datetime) -> dt.datetime:
    """The latest instant a task may fire: one calendar year after `now` (Feb 29 maps to Feb 28)."""
    return now + relativedelta(years=1)


def single_fires(
    wall: dt.datetime,
    zone_type: int,
    app_zone: dt.tzinfo,
    wave_offsets: Iterable[int] = REAL_UTC_OFFSETS_MINUTES,
) -> list[types.Fire]:
    """Every fire of a single trigger, earliest first: one for zone_type 1, one wave per offset for 2."""
    if zone_type == 1:
        return [types.Fire(wall_to_utc(wall, app_zone))]
    naive_utc = wall.replace(tzinfo=UTC)
    return [
        types.Fire(naive_utc - dt.timedelta(minutes=offset), offset)
        for offset in sorted(set(wave_offsets), reverse=True)
    ]


def plan_single(
    time_text: str,
    zone_type: types.ZoneType,
    app_zone: dt.tzinfo,
    now: dt.datetime,
    wave_offsets: Iterable[int] = REAL_UTC_OFFSETS_MINUTES,
    field: str = "trigger.single.time",
) -> types.FirePlan:
    """Every fire of a single trigger seen from `now`, validated for a create or an update.

    zone_type 1: one fire at `time` in the app's zone; it must be after `now` and within the horizon.
    zone_type 2: one wave per UTC offset, earliest (UTC+14) first; the first wave must be within the
    horizon; waves already past are returned as skipped, and NoPushTarget is raised when none remains.
    """
    try:
        wall = parse_wall_time(time_text)
    except ValueError as exc:
        raise errors.InvalidParameter(f"{field}: {exc}") from None
    latest = horizon(now)
    fires = single_fires(wall, zone_type, app_zone, wave_offsets)
    if zone_type == 1:
        due_at = fires[0].due_at
        if due_at <= now:
            raise errors.InvalidParameter(
                f'{field}: must be in the future, got "{time_text}" ({app_zone} time is '
                f"{now.astimezone(app_zone).strftime(WALL_TIME_FORMAT)})"
            )
        if due_at > latest:
            raise errors.InvalidParameter(f'{field}: must be at most one year ahead, got "{time_text}"')
        return types.FirePlan(next_fire_at=due_at, final_fire_at=due_at)

    if fires[0].due_at > latest:
        raise errors.InvalidParameter(
            f"{field}: must be at most one year ahead (its first wave, at "
            f'UTC{format_offset(fires[0].utc_offset_minutes)}), got "{time_text}"'
        )
    remaining = tuple(wave for wave in fires if wave.due_at > now)
    if not remaining:
        raise errors.NoPushTarget(
            f'{field}: "{time_text}" has already passed in every time zone (last wave at '
            f"UTC{format_offset(fires[-1].utc_offset_minutes)}); no push target remains"
        )
    skipped = tuple(wave for wave in fires if wave.due_at <= now)
    return types.FirePlan(next_fire_at=remaining[0].due_at, final_fire_at=remaining[-1].due_at, skipped=skipped)
