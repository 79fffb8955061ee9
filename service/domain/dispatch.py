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

from service.domain import cron, interval, periodical, timing, types

OutcomeKind = Literal["sent", "retry", "failed"]
MAX_RETRY_AFTER_SECONDS = 3600.0


# The most fires one task contributes to one plan transaction. After a long outage a task may owe thousands of
# missed fires (a zone_type 2 task: 40 waves an occurrence); planning them in bounded chunks keeps every plan
# statement short, and the task's next_fire_at carries on from the first fire left out.
MAX_FIRES_PER_PLAN = 1000
# The span `upcoming` asks of a trigger at a time; a trigger with no fire in it jumps to its next one.
_UPCOMING_WINDOW = dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True, slots=True)
class DuePlan:
    """What planning one due schedule produces: its fires up to the horizon, which of them a later fire of
    the same wave supersedes, and where planning carries on."""

    fires: tuple[types.Fire, ...]  # every fire from next_fire_at up to the horizon (at most MAX_FIRES_PER_PLAN)
    superseded: frozenset[types.Fire]  # past fires with a later past fire of the same wave: never sent
    next_fire_at: dt.datetime | None  # the first fire not planned here; None once every fire is planned
    stopped_reason: str | None = None  # set when the task cannot be planned: it leaves the valid set at once

    @classmethod
    def stopped(cls, reason: str) -> DuePlan:
        return cls(fires=(), superseded=frozenset(), next_fire_at=None, stopped_reason=reason)


def trigger_kind(trigger: dict[str, Any]) -> str:
    """`single`, `periodical`, `cron` or `interval`: the one key of a stored trigger."""
    return next(iter(trigger))


def zone_type(trigger: dict[str, Any]) -> int:
    """1 (app time zone) or 2 (terminal time zone: one wave per UTC offset) of a stored trigger."""
    return int(trigger[trigger_kind(trigger)].get("zone_type", 1))


def _due_and_next(
    trigger: dict[str, Any],
    app_zone: dt.tzinfo,
    wave_offsets: Sequence[int],
    lower: dt.datetime,
    until: dt.datetime,
    limit: int,
) -> tuple[list[types.Fire], dt.datetime | None]:
    """The fires with lower <= due_at <= until, in order, and the first fire after them (None: no more).

    Cron and interval triggers may have any number of fires in the window (every minute, for a month of
    downtime): they stop after `limit` and carry on from the next. Single and periodical ones have few."""
    if "single" in trigger:
        single = trigger["single"]
        wall = timing.parse_wall_time(single["time"])
        fires = timing.single_fires(wall, single.get("zone_type", 1), app_zone, wave_offsets)
        upcoming = [fire.due_at for fire in fires if fire.due_at > until]
        return [fire for fire in fires if lower <= fire.due_at <= until], (upcoming[0] if upcoming else None)
    if "cron" in trigger:
        return cron.fires_between(cron.Cron.from_wire(trigger["cron"]), app_zone, wave_offsets, lower, until, limit)
    if "interval" in trigger:
        return interval.fires_between(interval.Interval.from_wire(trigger["interval"]), app_zone, lower, until, limit)
    spec = periodical.Periodical.from_wire(trigger["periodical"])
    following = periodical.first_fire_after(spec, app_zone, wave_offsets, until)
    due = periodical.fires_between(spec, app_zone, wave_offsets, lower, until)
    return due, None if following is None else following.due_at


def upcoming(
    trigger: dict[str, Any], app_zone: dt.tzinfo, wave_offsets: Sequence[int], now: dt.datetime, count: int
) -> list[types.Fire]:
    """The next `count` fires strictly after `now` (fewer when the trigger ends first), in order: what the
    engine will plan, by the same maths."""
    fires: list[types.Fire] = []
    lower: dt.datetime | None = now + dt.timedelta(microseconds=1)  # instants are whole seconds or finer
    while lower is not None and len(fires) < count:
        # Each window starts at a fire, so every round adds at least one.
        due, lower = _due_and_next(trigger, app_zone, wave_offsets, lower, lower + _UPCOMING_WINDOW, count - len(fires))
        fires.extend(due[: count - len(fires)])
    return fires


def plan_due(
    trigger: dict[str, Any],
    app_zone: dt.tzinfo,
    wave_offsets: Sequence[int],
    next_fire_at: dt.datetime,
    now: dt.datetime,
    until: dt.datetime | None = None,
    max_fires: int = MAX_FIRES_PER_PLAN,
) -> DuePlan:
    """Plan the fires from `next_fire_at` up to `until` (default: now), and find where planning carries on.

    Never a burst after downtime: per wave (one wave for zone_type 1), a past fire with a later past fire of
    the same wave is superseded, recorded missed and never sent. Whether the latest one is still worth
    sending (the misfire grace) is the database's rule (`fire_is_too_late`, sql/0005), decided by its
    clock when the run is inserted, so planning and late resends cannot disagree on it.

    At most `max_fires` fires are planned at once; the rest follow from the returned next_fire_at. A chunk
    boundary inside the grace window could let one superseded fire per wave through; with the default bound
    that needs over 1,000 fires within the grace: a cron or interval trigger firing every minute under a
    MISFIRE_GRACE of over 16 hours (25 minutes for a zone_type 2 cron, 40 waves a minute), never with the
    default of 5 minutes.
    """
    until = now if until is None else max(until, now)
    due, following = _due_and_next(trigger, app_zone, wave_offsets, next_fire_at, until, max_fires + 1)
    if len(due) > max_fires:
        due, following = due[:max_fires], due[max_fires].due_at
    latest_past_per_wave: dict[int, types.Fire] = {}
    for fire in due:  # in order, so the latest past fire of each wave wins
        if fire.due_at <= now:
            latest_past_per_wave[fire.utc_offset_minutes] = fire
    latest = set(latest_past_per_wave.values())
    superseded = frozenset(fire for fire in due if fire.due_at <= now and fire not in latest)
    return DuePlan(fires=tuple(due), superseded=superseded, next_fire_at=following)


def storable_text(text: str, limit: int = 1000) -> str:
    """Text from outside (a push API's msg_id or error) as PostgreSQL can store it: NUL and lone surrogates
    written out as escapes instead of failing the whole batch of results they arrive in."""
    text = text[:limit].replace("\x00", "\\u0000")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the push backend's answer means for the run."""

    kind: OutcomeKind
    msg_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the backend asked us to wait (429)


def classify_response(status: int, payload: Any, retry_after_header: str | None, now: dt.datetime) -> SendOutcome:
    """2xx with a msg_id: sent. 3xx (never followed), 5xx: retry. 429: retry, honouring Retry-After. Other 4xx:
    failed, kept."""
    if 200 <= status < 300:
        msg_id = payload.get("msg_id") if isinstance(payload, dict) else None
        if msg_id in (None, ""):
            return SendOutcome("failed", error=storable_text(f"HTTP {status} without a msg_id: {payload}", 500))
        return SendOutcome("sent", msg_id=storable_text(str(msg_id), 200))
    error = storable_text(f"HTTP {status}: {payload}")
    if 300 <= status < 400:
        # Not followed (service.engine.backends): a failed attempt, retried with backoff like a 5xx, so that a
        # push API URL fixed within the retries still delivers; the status is kept in the error.
        return SendOutcome("retry", error=storable_text(f"HTTP {status} (redirect, not followed): {payload}"))
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


def result_for(
    run: types.RunToSend,
    outcome: SendOutcome,
    payload: dict[str, Any] | None,
    now: dt.datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> types.RunResult:
    """What one attempt's outcome writes back to its run: sent; pending with the next attempt's instant; or
    failed, with the push API's error (or the attempts used up) kept. Text from outside is made storable."""
    error = None if outcome.error is None else storable_text(outcome.error)
    if outcome.kind == "sent":
        msg_id = None if outcome.msg_id is None else storable_text(outcome.msg_id, 200)
        return types.RunResult(run.run_id, run.attempts, "sent", now, msg_id=msg_id, payload=payload)
    if outcome.kind == "retry":
        next_attempt = policy.next_attempt(run.attempts, outcome, now, rng)
        if next_attempt is not None:
            return types.RunResult(run.run_id, run.attempts, "pending", now, error=error, next_attempt_at=next_attempt)
        error = storable_text(f"gave up after {run.attempts} attempts: {outcome.error}")
    return types.RunResult(run.run_id, run.attempts, "failed", now, error=error)


def cancelled(run: types.RunToSend, now: dt.datetime) -> types.RunResult:
    """A run whose task was deleted or disabled after it was leased: never sent."""
    return types.RunResult(run.run_id, run.attempts, "cancelled", now, error="task deleted or disabled")
