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


def sent(plan: dispatch.DuePlan) -> list[dispatch.types.Fire]:
    """The fires the plan would send: every fire not superseded (the grace is the database's rule)."""
    return [fire for fire in plan.fires if fire not in plan.superseded]


def test_single_due_fire_is_planned_and_nothing_follows() -> None:
    plan = dispatch.plan_due(single("2026-06-01 12:00:00"), UTC, timing.REAL_UTC_OFFSETS_MINUTES, NOW, NOW)
    assert [fire.due_at for fire in sent(plan)] == [NOW]
    assert plan.superseded == frozenset() and plan.next_fire_at is None and plan.stopped_reason is None


def test_a_late_single_fire_is_still_planned_for_the_database_to_judge() -> None:
    # However late, the one fire is not superseded: whether it is too late is fire_is_too_late (sql/0005).
    due = NOW - dt.timedelta(hours=5)
    plan = dispatch.plan_due(single("2026-06-01 07:00:00"), UTC, (), due, NOW)
    assert [fire.due_at for fire in sent(plan)] == [due]


def test_zone_type_2_plans_the_due_waves_and_points_at_the_next() -> None:
    # 12:00 wall time: at NOW (12:00 UTC) every wave from +14:00 to +00:00 is due. Planning from the +01:00
    # wave on: +01:00 (11:00) and +00:00 (12:00), each the latest of its own wave, so neither is superseded.
    offsets = (840, 60, 0, -60)
    plan = dispatch.plan_due(single("2026-06-01 12:00:00", 2), UTC, offsets, NOW - dt.timedelta(hours=1), NOW)
    assert [fire.utc_offset_minutes for fire in sent(plan)] == [60, 0]
    assert plan.next_fire_at == NOW + dt.timedelta(hours=1)


def test_plans_are_chunked_and_carry_on_from_the_first_fire_left_out() -> None:
    offsets = (60, 45, 30, 15, 0)
    start = NOW - dt.timedelta(hours=1)
    plan = dispatch.plan_due(single("2026-06-01 12:00:00", 2), UTC, offsets, start, NOW, max_fires=2)
    assert [fire.utc_offset_minutes for fire in plan.fires] == [60, 45]
    assert plan.next_fire_at == NOW - dt.timedelta(minutes=30)


def test_a_trigger_that_cannot_be_planned_stops_with_its_reason() -> None:
    plan = dispatch.DuePlan.stopped("cannot be planned: ZoneInfoNotFoundError")
    assert plan.fires == () and plan.next_fire_at is None and plan.stopped_reason.startswith("cannot")


def test_text_from_outside_becomes_storable() -> None:
    assert dispatch.storable_text("id\x00-\ud800") == "id\\u0000-\\ud800"
    assert dispatch.storable_text("x" * 2000) == "x" * 1000
    outcome = dispatch.classify_response(200, {"msg_id": "a\x00b"}, None, NOW)
    assert outcome.kind == "sent" and "\x00" not in outcome.msg_id


def test_planning_ahead_sends_every_fire_up_to_the_horizon_and_points_past_it() -> None:
    # Waves 15 min apart; the horizon reaches two future waves. Past fires still obey the grace rule.
    offsets = (60, 45, 30, 15, 0)
    until = NOW + dt.timedelta(minutes=30)
    start = NOW - dt.timedelta(hours=1)
    plan = dispatch.plan_due(single("2026-06-01 13:00:00", 2), UTC, offsets, start, NOW, until=until)
    assert plan.superseded == frozenset()
    assert [fire.utc_offset_minutes for fire in sent(plan)] == [60, 45, 30]
    assert [fire.due_at for fire in sent(plan)] == [NOW, NOW + dt.timedelta(minutes=15), until]
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


def test_a_redirect_is_a_failed_attempt_with_its_status_kept() -> None:
    outcome = dispatch.classify_response(302, "moved", None, NOW)
    assert outcome.kind == "retry" and outcome.error.startswith("HTTP 302 (redirect, not followed)")
