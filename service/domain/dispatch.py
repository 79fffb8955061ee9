"""The engine's pure decisions: which fires are due, which are too late, and what a send's outcome means.

Nothing here does I/O or reads the clock; the engine passes `now` and the facts it observed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import random
from collections.abc import Sequence
from typing import Any, Literal

from service.domain import periodical, timing, types

OutcomeKind = Literal["sent", "retry", "failed"]
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True, slots=True)
class DuePlan:
    """What planning one due schedule produces."""

    send: tuple[types.Fire, ...]  # to send: due now (within the grace period) or later, up to the horizon
    missed: tuple[types.Fire, ...]  # due longer ago than the grace period: recorded, never sent
    next_fire_at: dt.datetime | None  # the next fire after the horizon; None once every fire is planned


def zone_type(trigger: dict[str, Any]) -> int:
    """1 (app time zone) or 2 (terminal time zone: one wave per UTC offset) of a stored trigger."""
    kind = next(iter(trigger.values()))
    return int(kind.get("zone_type", 1))


def _due_and_next(
    trigger: dict[str, Any], app_zone: dt.tzinfo, wave_offsets: Sequence[int], lower: dt.datetime, until: dt.datetime
) -> tuple[list[types.Fire], dt.datetime | None]:
    """The fires with lower <= due_at <= until, in order, and the first fire after until (None: no more)."""
    if "single" in trigger:
        single = trigger["single"]
        wall = timing.parse_wall_time(single["time"])
        fires = timing.single_fires(wall, single.get("zone_type", 1), app_zone, wave_offsets)
        upcoming = [fire.due_at for fire in fires if fire.due_at > until]
        return [fire for fire in fires if lower <= fire.due_at <= until], (upcoming[0] if upcoming else None)
    spec = periodical.Periodical.from_wire(trigger["periodical"])
    following = periodical.first_fire_after(spec, app_zone, wave_offsets, until)
    due = periodical.fires_between(spec, app_zone, wave_offsets, lower, until)
    return due, None if following is None else following.due_at


def plan_due(
    trigger: dict[str, Any],
    app_zone: dt.tzinfo,
    wave_offsets: Sequence[int],
    next_fire_at: dt.datetime,
    now: dt.datetime,
    grace: dt.timedelta,
    until: dt.datetime | None = None,
) -> DuePlan:
    """Plan the fires from `next_fire_at` up to `until` (default: now), and find the next one after it.

    Fires already due are split into send-now and missed. Never a burst after downtime: per wave (one wave
    for zone_type 1), only the latest past fire within `grace` is sent; every other past fire is recorded
    as missed. Fires after `now` (planned ahead, up to `until`) are all sent, each at its instant.
    """
    until = now if until is None else max(until, now)
    due, following = _due_and_next(trigger, app_zone, wave_offsets, next_fire_at, until)
    past = [fire for fire in due if fire.due_at <= now]
    ahead = [fire for fire in due if fire.due_at > now]
    latest_per_wave: dict[int, types.Fire] = {}
    for fire in past:  # in order, so the latest fire of each wave wins
        if now - fire.due_at <= grace:
            latest_per_wave[fire.utc_offset_minutes] = fire
    send = sorted(latest_per_wave.values(), key=lambda fire: fire.due_at) + ahead
    return DuePlan(
        send=tuple(send),
        missed=tuple(fire for fire in past if fire not in latest_per_wave.values()),
        next_fire_at=following,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the push backend's answer means for the run."""

    kind: OutcomeKind
    msg_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the backend asked us to wait (429)


def classify_response(status: int, payload: Any, retry_after_header: str | None, now: dt.datetime) -> SendOutcome:
    """2xx with a msg_id: sent. 5xx: retry. 429: retry, honouring Retry-After. Other 4xx: failed, kept."""
    if 200 <= status < 300:
        msg_id = payload.get("msg_id") if isinstance(payload, dict) else None
        if msg_id in (None, ""):
            return SendOutcome("failed", error=f"HTTP {status} without a msg_id: {str(payload)[:500]}")
        return SendOutcome("sent", msg_id=str(msg_id))
    error = f"HTTP {status}: {str(payload)[:1000]}"
    if status == 429:
        return SendOutcome("retry", error=error, retry_after=parse_retry_after(retry_after_header, now))
    if status >= 500:
        return SendOutcome("retry", error=error)
    return SendOutcome("failed", error=error)


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base * 2^(n-1), capped, times a random 50..100%."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    max_attempts: int = 8

    def delay(self, attempts_done: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_seconds, self.base_seconds * 2.0 ** max(0, attempts_done - 1))
        draw = rng.random() if rng is not None else random.random()
        return ceiling * (0.5 + 0.5 * draw)

    def next_attempt(
        self, attempts_done: int, outcome: SendOutcome, now: dt.datetime, rng: random.Random | None = None
    ) -> dt.datetime | None:
        """When to try again, or None when the run has used its attempts (it then fails)."""
        if attempts_done >= self.max_attempts:
            return None
        if outcome.retry_after is not None:
            # The backend's own word wins over our backoff cap, within reason.
            return now + dt.timedelta(seconds=min(outcome.retry_after, MAX_RETRY_AFTER_SECONDS))
        return now + dt.timedelta(seconds=self.delay(attempts_done, rng))
