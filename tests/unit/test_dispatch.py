"""The engine's pure decisions on explicit datetimes: due splitting, grace, response outcomes, backoff."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from service.domain import dispatch, timing

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
GRACE = dt.timedelta(minutes=5)


def single(time: str, zone_type: int = 1) -> dict:
    return {"single": {"time": time, "zone_type": zone_type}}


def test_single_due_fire_is_sent_and_nothing_follows() -> None:
    plan = dispatch.plan_due(single("2026-06-01 12:00:00"), UTC, timing.REAL_UTC_OFFSETS_MINUTES, NOW, NOW, GRACE)
    assert [fire.due_at for fire in plan.send] == [NOW]
    assert plan.missed == () and plan.next_fire_at is None


def test_fire_later_than_grace_is_missed_not_sent() -> None:
    due = NOW - dt.timedelta(minutes=5, seconds=1)
    plan = dispatch.plan_due(single("2026-06-01 11:54:59"), UTC, (), due, NOW, GRACE)
    assert plan.send == () and [fire.due_at for fire in plan.missed] == [due]


def test_fire_exactly_at_grace_is_still_sent() -> None:
    due = NOW - GRACE
    plan = dispatch.plan_due(single("2026-06-01 11:55:00"), UTC, (), due, NOW, GRACE)
    assert [fire.due_at for fire in plan.send] == [due]


def test_zone_type_2_plans_the_due_waves_and_points_at_the_next() -> None:
    # 12:00 wall time: the +14:00 wave fell due at 22:00 the day before; at NOW (12:00 UTC) every wave from
    # +14:00 to +00:00 is due. Planning from the +01:00 wave on: only +01:00 (11:00) and +00:00 (12:00).
    offsets = (840, 60, 0, -60)
    plan = dispatch.plan_due(single("2026-06-01 12:00:00", 2), UTC, offsets, NOW - dt.timedelta(hours=1), NOW, GRACE)
    assert [fire.utc_offset_minutes for fire in plan.missed] == [60]  # an hour late: beyond the grace period
    assert [fire.utc_offset_minutes for fire in plan.send] == [0]
    assert plan.next_fire_at == NOW + dt.timedelta(hours=1)


def test_planning_ahead_sends_every_fire_up_to_the_horizon_and_points_past_it() -> None:
    # Waves 15 min apart; the horizon reaches two future waves. Past fires still obey the grace rule.
    offsets = (60, 45, 30, 15, 0)
    until = NOW + dt.timedelta(minutes=30)
    start = NOW - dt.timedelta(hours=1)
    plan = dispatch.plan_due(single("2026-06-01 13:00:00", 2), UTC, offsets, start, NOW, GRACE, until=until)
    assert plan.missed == ()
    assert [fire.utc_offset_minutes for fire in plan.send] == [60, 45, 30]
    assert [fire.due_at for fire in plan.send] == [NOW, NOW + dt.timedelta(minutes=15), until]
    assert plan.next_fire_at == NOW + dt.timedelta(minutes=45)


def test_zone_type_is_read_from_either_trigger_kind() -> None:
    assert dispatch.zone_type(single("2026-06-01 12:00:00", 2)) == 2
    assert dispatch.zone_type({"single": {"time": "2026-06-01 12:00:00"}}) == 1


@pytest.mark.parametrize(
    "status,payload,kind",
    [
        (200, {"msg_id": "123", "request_id": "r"}, "sent"),
        (200, {"msg_id": 123}, "sent"),
        (200, {"request_id": "r"}, "failed"),
        (500, {"error": "x"}, "retry"),
        (502, "bad gateway", "retry"),
        (429, {}, "retry"),
        (400, {"error": {"code": 21003}}, "failed"),
        (401, {}, "failed"),
        (404, {}, "failed"),
    ],
)
def test_classify_response(status: int, payload: object, kind: str) -> None:
    outcome = dispatch.classify_response(status, payload, None, NOW)
    assert outcome.kind == kind
    if kind == "sent":
        assert outcome.msg_id == str(payload["msg_id"])  # type: ignore[index]
    else:
        assert outcome.error and str(status) in outcome.error


def test_failed_4xx_keeps_the_upstream_error() -> None:
    outcome = dispatch.classify_response(400, {"error": {"code": 21003, "message": "bad audience"}}, None, NOW)
    assert "bad audience" in (outcome.error or "")


@pytest.mark.parametrize(
    "header,seconds",
    [("7", 7.0), ("0", 0.0), ("Mon, 01 Jun 2026 12:00:30 GMT", 30.0), ("Mon, 01 Jun 2026 11:00:00 GMT", 0.0), ("soon", None), (None, None)],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert dispatch.parse_retry_after(header, NOW) == seconds


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    policy = dispatch.RetryPolicy(base_seconds=1, max_seconds=60, max_attempts=10)
    rng = random.Random(7)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(60, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(delay, 6) for delay in delays}) == len(delays)  # jittered, not a fixed ladder


def test_retry_honours_retry_after_and_gives_up() -> None:
    policy = dispatch.RetryPolicy(base_seconds=1, max_seconds=2, max_attempts=3)
    limited = dispatch.SendOutcome("retry", retry_after=30)
    assert policy.next_attempt(1, limited, NOW) == NOW + dt.timedelta(seconds=30)
    assert policy.next_attempt(3, dispatch.SendOutcome("retry"), NOW) is None
